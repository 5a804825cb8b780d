"""Getting a task image's bytes: URL policy (backend.image_urls), then a data: URI, a local file
or a bounded download (deadline for the whole transfer, byte cap, at most MAX_REDIRECTS
redirects, each checked against the policy; the Label Studio token only ever goes to Label Studio).
A download that failed in a way a later attempt may not meet (a connection error, a timeout, HTTP
5xx or 429, a failed token refresh) is tried again, ``retries`` times with exponential backoff.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import requests
import urllib3

from backend import image_urls
from backend.image_urls import ImageSource, ImageURLRefused
from backend.ls_auth import LabelStudioError, TokenAuth

MAX_REDIRECTS = 3
# answers after which a GET is tried again: a server (or its proxy) restarting or overloaded
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
RETRY_WAIT_MAX_S = 30.0  # longest pause before another attempt (a Retry-After included)
# Images in a row (over all fetch threads) whose every attempt failed transiently: the server is
# down, not blipping, so later images get one attempt each until one succeeds; a long outage then
# costs what it cost without retries, and the round reports it (PUBLISH_MAX_UNSCORED_SHARE).
OUTAGE_IMAGES = 16


class ImageFetchError(ValueError):
    """One image could not be fetched; the message is the per-task reason. ``transient``: a
    failure another attempt may not meet (connection error, timeout, HTTP 5xx or 429, a failed
    token refresh); ``retry_after_s``: the server's Retry-After, when it sent one."""

    def __init__(self, message: str, *, transient: bool = False, retry_after_s: float | None = None):
        super().__init__(message)
        self.transient = transient
        self.retry_after_s = retry_after_s


class ImageDownloader:
    """Task images from Label Studio (with its token ``auth``), from ``allowed_hosts`` (without),
    from presigned cloud URLs Label Studio hands out, or from ``local_files_root`` on disk."""

    def __init__(
        self,
        label_studio_url: str,
        auth: TokenAuth,
        *,
        allowed_hosts: tuple[str, ...] = (),
        local_files_root: Path | None = None,
        retries: int = 0,
        backoff_s: float = 1.0,
    ):
        """``retries``: further attempts of a download that failed transiently, the first after
        ``backoff_s`` seconds, each next one after twice the pause before (at most
        RETRY_WAIT_MAX_S; a longer Retry-After is cut to it)."""
        self.label_studio_url = label_studio_url.rstrip("/")
        self.allowed_hosts = allowed_hosts
        self.local_files_root = local_files_root
        self.retries = retries
        self.backoff_s = backoff_s
        self._failed_in_a_row = 0  # images whose every attempt failed transiently (OUTAGE_IMAGES)
        self._outage_lock = threading.Lock()
        self._auth = auth
        # Image downloads keep their own deadline per attempt (_download) and their own retries
        # (_download_retried): a GET of an image changes nothing, so it is safe to repeat.
        self._session = requests.Session()

    def fetch_image_bytes(
        self, raw_url: str, *, task_id: int | None, max_bytes: int, timeout_s: float
    ) -> bytes:
        """Bytes of a task's image, following the URL policy of backend.image_urls."""
        try:
            source = image_urls.resolve_image_source(
                raw_url,
                task_id=task_id,
                label_studio_url=self.label_studio_url,
                allowed_hosts=self.allowed_hosts,
                local_files_root=self.local_files_root,
            )
        except ImageURLRefused as exc:
            raise ImageFetchError(f"image URL refused: {exc}") from None
        if source.kind == "data_uri":
            try:
                return image_urls.decode_data_uri(source.url, max_bytes)
            except ValueError as exc:
                raise ImageFetchError(str(exc)) from None
        if source.kind == "local_file":
            return read_local(Path(source.url), max_bytes)
        return self._download_retried(source, max_bytes, timeout_s)

    def _download_retried(self, source: ImageSource, max_bytes: int, timeout_s: float) -> bytes:
        """``_download``, tried again after a transient failure, at most ``retries`` times (no
        retry while OUTAGE_IMAGES images in a row failed every attempt)."""
        retries = 0 if self._failed_in_a_row >= OUTAGE_IMAGES else self.retries
        attempt = 0
        while True:
            try:
                data = self._download(source, max_bytes, timeout_s)
            except ImageFetchError as exc:
                if exc.transient and attempt < retries:
                    pause = max(self.backoff_s * 2**attempt, exc.retry_after_s or 0.0)
                    time.sleep(min(pause, RETRY_WAIT_MAX_S))
                    attempt += 1
                    continue
                with self._outage_lock:  # a permanent failure: the server answers
                    self._failed_in_a_row = self._failed_in_a_row + 1 if exc.transient else 0
                if attempt:
                    raise ImageFetchError(
                        f"{exc} ({attempt + 1} attempts)", transient=exc.transient
                    ) from None
                raise
            with self._outage_lock:
                self._failed_in_a_row = 0
            return data

    def _download(self, source: ImageSource, max_bytes: int, timeout_s: float) -> bytes:
        url, send_auth = source.url, source.send_auth
        deadline = time.monotonic() + timeout_s  # for the whole download, redirects included
        refreshed = False
        hops = 0
        while hops <= MAX_REDIRECTS:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ImageFetchError(_too_slow(timeout_s), transient=True)
            try:
                headers = self._auth.header() if send_auth else {}
                response = self._session.get(
                    url, headers=headers, timeout=remaining, allow_redirects=False, stream=True
                )
            except requests.RequestException as exc:
                raise ImageFetchError(
                    f"image download failed: {type(exc).__name__}",
                    transient=isinstance(exc, (requests.ConnectionError, requests.Timeout)),
                ) from None
            except LabelStudioError as exc:  # the token exchange failed: Label Studio away?
                raise ImageFetchError(f"token refresh failed: {exc}", transient=True) from None
            with response:
                if response.status_code == 401 and send_auth and not refreshed and self._auth.refreshes:
                    try:  # access token expired mid-job: refresh once
                        self._auth.refresh(headers)
                    except LabelStudioError as exc:
                        raise ImageFetchError(f"token refresh failed: {exc}", transient=True) from None
                    refreshed = True
                    continue
                hops += 1
                if response.status_code in (301, 302, 303, 307, 308):
                    location = response.headers.get("Location", "")
                    url = requests.compat.urljoin(url, location)
                    try:
                        send_auth = image_urls.check_fetch_allowed(
                            url, self.label_studio_url, self.allowed_hosts
                        )
                    except ImageURLRefused as exc:
                        if source.kind != "presign":
                            raise ImageFetchError(f"redirect refused: {exc}") from None
                        # A presigned cloud URL is a public https URL by design: allow it, but
                        # never with our token and never to link-local/metadata addresses.
                        send_auth = check_presigned_target(url)
                    continue
                if response.status_code != 200:
                    raise ImageFetchError(
                        f"image download failed: HTTP {response.status_code}",
                        transient=response.status_code in RETRY_STATUS,
                        retry_after_s=_retry_after_s(response.headers.get("Retry-After")),
                    )
                declared = response.headers.get("Content-Length")
                if declared and declared.isdigit() and int(declared) > max_bytes:
                    raise ImageFetchError(f"image larger than IMAGE_MAX_BYTES ({max_bytes} bytes)")
                return read_body(response, max_bytes, deadline, timeout_s)
        raise ImageFetchError(f"more than {MAX_REDIRECTS} redirects")


def _too_slow(timeout_s: float) -> str:
    return f"image download took longer than IMAGE_FETCH_TIMEOUT_S ({timeout_s:g} s)"


def _retry_after_s(value: str | None) -> float | None:
    """A Retry-After header in seconds (its date form is not used by Label Studio: ignored)."""
    try:
        return max(float(value), 0.0) if value else None
    except ValueError:
        return None


def read_body(response: requests.Response, max_bytes: int, deadline: float, timeout_s: float) -> bytes:
    """The body, at most max_bytes, read before the deadline.

    requests' timeout bounds each socket read, not the download: a server dripping one byte per
    second would hold a fetch thread for hours. read1() does at most one socket read per call, so
    the deadline is checked between reads.
    """
    read1 = getattr(response.raw, "read1", None)  # urllib3 >= 2
    chunks_iter: Iterator[bytes] = iter(()) if read1 else response.iter_content(16 * 1024)
    chunks: list[bytes] = []
    total = 0
    try:
        while True:
            if time.monotonic() > deadline:
                raise ImageFetchError(_too_slow(timeout_s), transient=True)
            chunk = read1(64 * 1024, decode_content=True) if read1 else next(chunks_iter, b"")
            if not chunk:
                return b"".join(chunks)
            total += len(chunk)
            if total > max_bytes:
                raise ImageFetchError(f"image larger than IMAGE_MAX_BYTES ({max_bytes} bytes)")
            chunks.append(chunk)
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        name = type(exc).__name__
        if "timeout" in name.lower() or "timeout" in str(exc).lower():
            raise ImageFetchError(f"{_too_slow(timeout_s)}: {name}", transient=True) from None
        raise ImageFetchError(f"image download broke off: {name}", transient=True) from None


def check_presigned_target(url: str) -> bool:
    """Whether to send the token to a presigned URL's redirect target: never (False); raises
    ImageFetchError when the target is not https or is a link-local/metadata address."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ImageFetchError("presigned URL must be https")
    if image_urls.is_link_local_or_metadata(parts.hostname):
        raise ImageFetchError("presigned URL points at a link-local/metadata address")
    return False


def read_local(path: Path, max_bytes: int) -> bytes:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageFetchError(f"local file unreadable: {exc.strerror}") from None
    if size > max_bytes:
        raise ImageFetchError(f"image larger than IMAGE_MAX_BYTES ({max_bytes} bytes)")
    return path.read_bytes()
