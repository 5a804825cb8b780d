"""Label Studio's SSRF ban list with one address let through: what docker/docker-compose.yml gives
Label Studio as USER_ADDITIONAL_BANNED_SUBNETS.

Label Studio 1.23.2 refuses URLs that resolve into reserved ranges (``validate_ip`` in
``label_studio/core/utils/io.py``: loopback, link-local such as cloud metadata at
169.254.169.254, private networks, ...) for URL imports, webhooks, storages and, with
ML_BLOCK_LOCAL_IP, the ML backend connection. The backend runs on the private compose network,
inside one of those ranges. Rather than turning the protection off (SSRF_PROTECTION_ENABLED=false),
the stack sets USE_DEFAULT_BANNED_SUBNETS=false and bans, itself, every default range except the
backend's one address.

    python scripts/ls_banned_subnets.py 172.30.57.10     # the list for another backend address
"""

from __future__ import annotations

import ipaddress
import sys

# Label Studio 1.23.2's default ban list, in its order (label_studio/core/utils/io.py, validate_ip);
# tests/unit/test_docker_files.py compares it with the installed Label Studio's when one is there.
LS_DEFAULT_BANNED_SUBNETS = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "233.252.0.0/24",
    "240.0.0.0/4",
    "255.255.255.255/32",
    "::/128",
    "::1/128",
    "::ffff:0:0/96",
    "::ffff:0:0:0/96",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001:0000::/32",
    "2001:20::/28",
    "2001:db8::/32",
    "2002::/16",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
)


def banned_except(allowed: str) -> list[str]:
    """Every default range, the one holding ``allowed`` (an address or a network) split so that
    exactly ``allowed`` is left out. Label Studio bans an address that falls in any listed range."""
    keep = ipaddress.ip_network(allowed, strict=False)
    out: list[str] = []
    for subnet in LS_DEFAULT_BANNED_SUBNETS:
        network = ipaddress.ip_network(subnet)
        if network.version == keep.version and keep.subnet_of(network):  # type: ignore[arg-type]
            out += [str(part) for part in sorted(network.address_exclude(keep))]  # type: ignore[arg-type]
        else:
            out.append(str(network))
    return out


def is_banned(address: str, banned: list[str]) -> bool:
    """Whether Label Studio with USE_DEFAULT_BANNED_SUBNETS=false and this list refuses ``address``."""
    ip = ipaddress.ip_address(address)
    return any(ip in ipaddress.ip_network(subnet) for subnet in banned)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    print(",".join(banned_except(argv[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
