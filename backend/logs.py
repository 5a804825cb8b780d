"""Logging setup shared by the web process and the worker."""

from __future__ import annotations

import logging


def configure(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s",
    )
    # urllib3 logs full URLs at DEBUG; keep it quiet so nothing sensitive lands in logs
    logging.getLogger("urllib3").setLevel(logging.WARNING)
