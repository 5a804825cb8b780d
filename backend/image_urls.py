"""Where a task's image may be fetched from: pure URL policy, no I/O.

A task's data is user input. A backend that fetches whatever URL it is handed is an SSRF hole, so
every URL is resolved against Label Studio's own address and an explicit allow-list, and the Label
Studio token is only ever sent to Label Studio itself.
"""
from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urljoin, urlsplit


class ImageURLRefused(ValueError):
    """The URL points somewhere the backend must not fetch from; the message says why."""


CLOUD_SCHEMES = ("s3", "gs", "azure-blob", "gcs")


@dataclass(frozen=True)
class ImageSource:
    kind: str            # "label_studio" | "allowed_host" | "data_uri" | "local_file" | "presign"
    url: str             # absolute URL to GET (or the data: URI / local path)
    send_auth: bool      # attach the Label Studio token (only ever to Label Studio itself)


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


def is_link_local_or_metadata(hostname: str) -> bool:
    """Cloud metadata endpoints live on link-local addresses; never fetch from them."""
    try:
        address = ipaddress.ip_address(hostname.strip("[]"))
    except ValueError:
        return hostname.lower() in ("metadata.google.internal", "metadata")
    return address.is_link_local or address.is_multicast or address.is_unspecified


def check_fetch_allowed(url: str, label_studio_url: str, allowed_hosts: tuple[str, ...]) -> bool:
    """Return whether the Label Studio token may be sent; raise ImageURLRefused if not fetchable.

    Used for the first URL and again for every redirect hop.
    """
    parts = urlsplit(url)
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
    raise ImageURLRefused(
        f"host {key} is neither Label Studio's nor in ALLOWED_IMAGE_HOSTS")


def resolve_image_source(raw: str, *, task_id: int | None, label_studio_url: str,
                         allowed_hosts: tuple[str, ...] = (),
                         local_files_root: Path | None = None) -> ImageSource:
    """Map a task's image reference to how to get it, or refuse it with a reason."""
    raw = raw.strip()
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
