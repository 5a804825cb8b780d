"""Whether the HTTP backend may listen where it is told to: an address beyond loopback without
authentication is refused (gunicorn's start hook, backend/gunicorn_conf.py, asks)."""

from __future__ import annotations

import ipaddress

from backend.settings import Settings


def listen_refusal(binds, settings: Settings) -> str | None:
    """Why the HTTP backend must not listen on ``binds`` (gunicorn's bind strings: host:port,
    [v6]:port, unix:path), or None. Without basic auth every endpoint (webhooks that change the
    task index, /predict, /status) is open to whoever reaches the address, so an address beyond
    loopback needs BASIC_AUTH_USER/BASIC_AUTH_PASS or ALLOW_UNAUTHENTICATED_NETWORK=true."""
    if settings.basic_auth_enabled or settings.allow_unauthenticated_network:
        return None
    open_to = [bind for bind in binds if not _is_loopback_bind(str(bind))]
    if not open_to:
        return None
    return (
        f"the backend would listen on {', '.join(map(str, open_to))} (beyond loopback) "
        "without authentication: set BASIC_AUTH_USER and BASIC_AUTH_PASS (and the same in "
        "Label Studio's model connection), listen on 127.0.0.1 (HOST), or set "
        "ALLOW_UNAUTHENTICATED_NETWORK=true where only trusted peers reach that address"
    )


def _is_loopback_bind(bind: str) -> bool:
    if bind.startswith(("unix:", "fd://")):
        return True
    host = bind
    if host.startswith("["):  # [::1]:9090
        host = host[1 : host.find("]")]
    elif host.count(":") == 1:  # 127.0.0.1:9090, localhost:9090
        host = host.rsplit(":", 1)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # another host name: it may resolve anywhere
        return False
