"""Where a task's image may be fetched from: pure URL policy, no I/O.

A task's data is user input. A backend that fetches whatever URL it is handed is an SSRF hole, so
every URL is resolved against Label Studio's own address and an explicit allow-list, and the Label
Studio token is only ever sent to Label Studio itself.
"""

from __future__ import annotations

import base64
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urljoin, urlsplit


class ImageURLRefused(ValueError):
    """The URL points somewhere the backend must not fetch from; the message says why."""


CLOUD_SCHEMES = ("s3", "gs", "azure-blob", "gcs")


@dataclass(frozen=True)
class ImageSource:
    kind: str  # "label_studio" | "allowed_host" | "data_uri" | "local_file" | "presign"
    url: str  # absolute URL to GET (or the data: URI / local path)
    send_auth: bool  # attach the Label Studio token (only ever to Label Studio itself)


def host_key(url: str) -> str:
    """host:port with default ports made explicit, lower case, for allow-list comparisons."""
    parts = urlsplit(url)
    if not parts.hostname:
        return ""
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme, 0)
    return f"{parts.hostname.lower()}:{port}"


def _normalise_allowed(allowed_hosts: tuple[str, ...]) -> set[str]:
    out = set()
    for entry in allowed_hosts:
        entry = entry.strip().lower()
        if not entry:
            continue
        if "://" in entry:
            out.add(host_key(entry))
        elif ":" in entry:
            out.add(entry)
        else:
            out.update({f"{entry}:80", f"{entry}:443"})
    return out


METADATA_HOSTS = {"metadata.google.internal", "metadata", "instance-data"}
METADATA_ADDRESSES = {
    ipaddress.ip_address("fd00:ec2::254"),  # AWS IMDS over IPv6
    ipaddress.ip_address("100.100.100.200"),
}  # Alibaba Cloud metadata


def parse_ip(hostname: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a numeric host means to the OS resolver, or None for a name.

    Besides dotted quads, getaddrinfo accepts inet_aton's forms (2852039166, 0xa9fea9fe,
    0251.0376.0251.0376, 169.254.43518), so they are normalised the same way here; an
    IPv4-mapped IPv6 address (::ffff:169.254.169.254) is checked as its IPv4 address.
    """
    host = hostname.strip("[]").rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except (OSError, ValueError):
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def is_link_local_or_metadata(hostname: str) -> bool:
    """Cloud metadata endpoints live on link-local addresses; never fetch from them."""
    address = parse_ip(hostname)
    if address is None:
        return hostname.lower().rstrip(".") in METADATA_HOSTS
    return (
        address.is_link_local
        or address.is_multicast
        or address.is_unspecified
        or address in METADATA_ADDRESSES
    )


def check_fetch_allowed(url: str, label_studio_url: str, allowed_hosts: tuple[str, ...]) -> bool:
    """Return whether the Label Studio token may be sent; raise ImageURLRefused if not fetchable.

    Used for the first URL and again for every redirect hop.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number / too big
    except ValueError as exc:  # e.g. "http://[::1" or "http://host:99999"
        raise ImageURLRefused(f"malformed URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ImageURLRefused(f"scheme {parts.scheme or '(none)'!r} is not fetched")
    if not parts.hostname:
        raise ImageURLRefused("URL has no host")
    if is_link_local_or_metadata(parts.hostname):
        raise ImageURLRefused(f"host {parts.hostname} is a link-local/metadata address")
    key = host_key(url)
    if key == host_key(label_studio_url):
        return True
    if key in _normalise_allowed(allowed_hosts):
        return False
    raise ImageURLRefused(f"host {key} is neither Label Studio's nor in ALLOWED_IMAGE_HOSTS")


def resolve_image_source(
    raw: str,
    *,
    task_id: int | None,
    label_studio_url: str,
    allowed_hosts: tuple[str, ...] = (),
    local_files_root: Path | None = None,
) -> ImageSource:
    """Map a task's image reference to how to get it, or refuse it with a reason."""
    try:
        return _resolve(
            _without_tabs_and_newlines(raw.strip()),
            task_id,
            label_studio_url,
            allowed_hosts,
            local_files_root,
        )
    except ImageURLRefused:
        raise
    except ValueError as exc:  # urlsplit/urljoin on e.g. "http://[" or a non-numeric port
        raise ImageURLRefused(f"malformed URL: {exc}") from None


def _without_tabs_and_newlines(raw: str) -> str:
    """``raw`` without ASCII tabs and newlines, which URL parsers drop wherever they are (WHATWG,
    and Python's urlsplit), but which the HTTP client refuses in a host: the URL that is checked
    must be the very one that is fetched."""
    return raw.translate(_TAB_AND_NEWLINES)


_TAB_AND_NEWLINES = {ord("\t"): None, ord("\n"): None, ord("\r"): None}


def _resolve(
    raw: str,
    task_id: int | None,
    label_studio_url: str,
    allowed_hosts: tuple[str, ...],
    local_files_root: Path | None,
) -> ImageSource:
    if raw.startswith("data:"):
        return ImageSource("data_uri", raw, False)
    scheme = urlsplit(raw).scheme.lower()
    if scheme in CLOUD_SCHEMES:
        if task_id is None:
            raise ImageURLRefused(f"{scheme}:// images need a task id to be presigned")
        encoded = base64.urlsafe_b64encode(raw.encode()).decode()
        url = urljoin(label_studio_url + "/", f"tasks/{int(task_id)}/presign/?fileuri={encoded}")
        return ImageSource("presign", url, True)
    if scheme in ("file", "ftp", "gopher", "dict", "ldap"):
        raise ImageURLRefused(f"scheme {scheme!r} is not fetched")
    if raw.startswith("/"):
        if raw.startswith("/data/local-files") and local_files_root is not None:
            path = local_file_path(raw, local_files_root)
            if path is not None:
                return ImageSource("local_file", str(path), False)
        url = urljoin(label_studio_url + "/", raw.lstrip("/"))
    elif scheme in ("http", "https"):
        url = raw
    else:
        raise ImageURLRefused(f"unsupported image reference {raw[:60]!r}")
    send_auth = check_fetch_allowed(url, label_studio_url, allowed_hosts)
    return ImageSource("label_studio" if send_auth else "allowed_host", url, send_auth)


def local_file_path(raw: str, root: Path) -> Path | None:
    """/data/local-files/?d=<relative path> -> a path inside root, or None if it escapes root."""
    query = parse_qs(urlsplit(raw).query)
    values = query.get("d")
    if not values:
        return None
    root = root.resolve()
    candidate = (root / unquote(values[0]).lstrip("/")).resolve()
    if candidate != root and root not in candidate.parents:
        raise ImageURLRefused("local file path escapes LOCAL_FILES_DOCUMENT_ROOT")
    return candidate


def decode_data_uri(uri: str, max_bytes: int) -> bytes:
    header, _, payload = uri.partition(",")
    if not header.startswith("data:") or not _:
        raise ValueError("malformed data: URI")
    if len(payload) > max_bytes * 4 // 3 + 8:
        raise ValueError(f"data: URI larger than IMAGE_MAX_BYTES ({max_bytes} bytes)")
    if header.endswith(";base64"):
        return base64.b64decode(payload, validate=False)
    return unquote(payload).encode("latin-1")
