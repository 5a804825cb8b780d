"""RQ worker processes for integration tests: start `python -m backend.worker`, and SIGKILL one
with its work horse (RQ puts the horse in its own process group, so killing the group is not
enough)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO_ROOT


def start_worker(env: dict, log_path: Path, burst: bool = False) -> subprocess.Popen:
    """A real worker on the checkout, its output appended to ``log_path``."""
    args = [sys.executable, "-m", "backend.worker"] + (["--burst"] if burst else [])
    with open(log_path, "ab") as log:
        return subprocess.Popen(args, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)


def descendants(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            out += [child] + descendants(child)
    return out


def kill_tree(process: subprocess.Popen) -> int:
    """SIGKILL the worker and every process below it; returns how many were signalled."""
    victims = descendants(process.pid) + [process.pid]
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(victims)


def wait_for(predicate, timeout: float, what: str, log_path: Path | None = None):
    """``predicate()``'s first truthy value within ``timeout`` seconds; else fail with the tail of
    the worker's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    tail = log_path.read_text()[-3000:] if log_path and log_path.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")
