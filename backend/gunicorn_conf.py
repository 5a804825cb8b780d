"""gunicorn's configuration of the HTTP backend (scripts/serve.sh and docker/entrypoint.sh pass
``--config python:backend.gunicorn_conf``): a check before it binds any address."""

from __future__ import annotations

from backend.listen_guard import listen_refusal
from backend.settings import Settings


def on_starting(server) -> None:
    """Refuse to listen beyond loopback without authentication (backend.listen_guard.listen_refusal);
    gunicorn prints the message as "Error: ..." and exits with status 1, before binding."""
    problem = listen_refusal(server.cfg.bind, Settings.from_env())
    if problem is not None:
        raise RuntimeError(problem)
