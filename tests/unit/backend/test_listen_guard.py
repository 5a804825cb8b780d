"""The HTTP backend refuses to listen beyond loopback without authentication, unless
ALLOW_UNAUTHENTICATED_NETWORK says so: the rule, and gunicorn started for real with it (the
refused cases stop before any address is bound)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from backend.listen_guard import listen_refusal
from backend.settings import Settings

REPO = Path(__file__).resolve().parents[3]
OPEN = Settings.from_env({})
AUTH = Settings.from_env({"BASIC_AUTH_USER": "ls", "BASIC_AUTH_PASS": "secret"})
ALLOWED = Settings.from_env({"ALLOW_UNAUTHENTICATED_NETWORK": "true"})


@pytest.mark.parametrize(
    "bind", ["127.0.0.1:9090", "127.0.0.5:1", "localhost:9090", "[::1]:9090", "unix:/tmp/backend.sock"]
)
def test_loopback_needs_nothing(bind):
    assert listen_refusal([bind], OPEN) is None


@pytest.mark.parametrize(
    "bind", ["0.0.0.0:9090", "[::]:9090", "10.1.2.3:9090", "backend.example.org:9090", "0.0.0.0"]
)
def test_beyond_loopback_needs_auth_or_the_explicit_setting(bind):
    problem = listen_refusal([bind], OPEN)
    assert problem is not None and bind in problem and "BASIC_AUTH_USER" in problem
    assert "ALLOW_UNAUTHENTICATED_NETWORK" in problem
    assert listen_refusal([bind], AUTH) is None
    assert listen_refusal([bind], ALLOWED) is None
    assert listen_refusal(["127.0.0.1:9090", bind], OPEN) is not None  # any open bind counts


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _gunicorn(bind: str, tmp_path, **env_extra) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in set(Settings.env_names().values())}
    env.update(MODEL_DIR=str(tmp_path / "models"), PYTHONPATH=str(REPO), **env_extra)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "backend.wsgi:app",
            "--bind",
            bind,
            "--config",
            "python:backend.gunicorn_conf",
            "--workers",
            "1",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_gunicorn_refuses_all_interfaces_without_auth(tmp_path):
    process = _gunicorn(f"0.0.0.0:{_free_port()}", tmp_path)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 1, out
    assert "beyond loopback" in out and "ALLOW_UNAUTHENTICATED_NETWORK" in out
    assert "Listening at" not in out  # refused before binding


def test_gunicorn_serves_on_loopback_without_auth(tmp_path):
    port = _free_port()
    process = _gunicorn(f"127.0.0.1:{port}", tmp_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):
                pass
            assert process.poll() is None and time.monotonic() < deadline, (
                process.stdout.read() if process.stdout else ""
            )
            time.sleep(0.3)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
