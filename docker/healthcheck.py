"""Container health check of the backend image (Dockerfile HEALTHCHECK, compose healthcheck).

  python docker/healthcheck.py web     GET http://127.0.0.1:$PORT/health answers 200 {"status": "UP"}
  python docker/healthcheck.py worker  an RQ worker started in this container (same hostname) is
                                       registered in the Redis at $REDIS_URL; RQ drops a worker's
                                       registration when its heartbeat stops, so this also catches a
                                       hung or killed worker within RQ's worker TTL

Exit code 0 when healthy, 1 when not; the one-line reason goes to stdout (``docker inspect`` shows it).
Only the standard library (web) or redis + rq (worker) are imported: no torch, so a check takes well
under a second. /health is exempt from BASIC_AUTH_USER/BASIC_AUTH_PASS, so no credentials are needed.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import urllib.request

TIMEOUT_S = 4.0


def check_web(port: int | None = None, timeout: float = TIMEOUT_S) -> str:
    port = port or int(os.environ.get("PORT") or 9090)
    url = f"http://127.0.0.1:{port}/health"
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (fixed loopback URL)
        status = response.status
        body = json.loads(response.read().decode("utf-8") or "{}")
    if status != 200 or body.get("status") != "UP":
        raise RuntimeError(f"{url} answered {status} {body!r}")
    return f"web: {url} is UP"


def check_worker(
    redis_url: str | None = None, hostname: str | None = None, timeout: float = TIMEOUT_S
) -> str:
    from redis import Redis
    from rq import Worker

    redis_url = redis_url or os.environ.get("REDIS_URL", "")
    if not redis_url:
        raise RuntimeError("REDIS_URL is not set")
    hostname = hostname or socket.gethostname()
    conn = Redis.from_url(redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        workers = [w for w in Worker.all(connection=conn) if w.hostname == hostname]
    finally:
        conn.close()
    if not workers:
        raise RuntimeError(f"no RQ worker of host {hostname!r} is registered in Redis")
    return f"worker: {', '.join(sorted(w.name for w in workers))} registered from {hostname}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    role = argv[0] if argv else "web"
    checks = {"web": check_web, "worker": check_worker}
    if role not in checks:
        print(f"usage: healthcheck.py [{'|'.join(checks)}]")
        return 2
    try:
        print(checks[role]())
        return 0
    except Exception as exc:  # any failure means unhealthy; say why
        print(f"unhealthy ({role}): {type(exc).__name__}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
