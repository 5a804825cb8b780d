"""The only module that talks to Label Studio over HTTP.

Both kinds of token users paste work: a legacy token (``Authorization: Token <t>``) and a personal
access token, which is a JWT *refresh* token exchanged at /api/token/refresh/ for a short-lived
access token (300 s in Label Studio 1.23) that is refreshed before it expires or on a 401.
The token never appears in logs, exceptions or status output.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import requests
import urllib3

from backend import image_urls
from backend.image_urls import ImageSource, ImageURLRefused

log = logging.getLogger(__name__)

ACCESS_TOKEN_REFRESH_AFTER_S = 240.0   # Label Studio access tokens live 300 s; refresh early
MAX_REDIRECTS = 3
RETRY_STATUS = {429, 500, 502, 503, 504}


class LabelStudioError(RuntimeError):
    """Label Studio answered with an error or could not be reached (after retries)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class ImageFetchError(ValueError):
    """One image could not be fetched; the message is the per-task reason."""


def is_jwt(token: str) -> bool:
    parts = token.split(".")
    return len(parts) == 3 and all(parts)


class _TokenAuth:
    def __init__(self, base_url: str, token: str, session: requests.Session, timeout_s: float):
        self._base_url = base_url
        self._token = token.strip()
        self._session = session
        self._timeout_s = timeout_s
        self._access: str | None = None
        self._access_at = 0.0
        self._lock = threading.Lock()
        self.kind = "personal access token" if is_jwt(self._token) else "legacy token"

    def header(self, force_refresh: bool = False) -> dict[str, str]:
        if not self._token:
            return {}
        if not is_jwt(self._token):
            return {"Authorization": f"Token {self._token}"}
        with self._lock:
            stale = time.monotonic() - self._access_at > ACCESS_TOKEN_REFRESH_AFTER_S
            if force_refresh or self._access is None or stale:
                self._access = self._exchange()
                self._access_at = time.monotonic()
            return {"Authorization": f"Bearer {self._access}"}

    def refresh(self, refused: dict[str, str]) -> None:
        """After a 401 sent with header ``refused``: get a new access token, once.

        Several threads (parallel image downloads) may see the same expired token at once; only
        the first exchanges it, the others find the header already changed and reuse the new one.
        """
        if not is_jwt(self._token):
            return
        with self._lock:
            if self._access is None or refused.get("Authorization") == f"Bearer {self._access}":
                self._access = self._exchange()
                self._access_at = time.monotonic()

    def redact(self, text: str) -> str:
        """``text`` with the token and the current access token masked (e.g. an echoed header)."""
        for secret in (self._token, self._access):
            if secret and len(secret) >= 6:
                text = text.replace(secret, "***")
        return text

    def _exchange(self) -> str:
        url = f"{self._base_url}/api/token/refresh/"
        try:
            response = self._session.post(url, json={"refresh": self._token}, timeout=self._timeout_s)
        except requests.RequestException as exc:
            raise LabelStudioError(f"cannot reach Label Studio to refresh the access token: "
                                   f"{type(exc).__name__}") from None
        if response.status_code != 200 or "access" not in _json_or_empty(response):
            raise LabelStudioError(
                f"Label Studio refused the personal access token (HTTP {response.status_code}); "
                "check LABEL_STUDIO_API_KEY", response.status_code)
        return response.json()["access"]


def _json_or_empty(response: requests.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


class LabelStudioClient:
    def __init__(self, url: str, api_key: str, *, timeout_s: float = 30.0, retries: int = 4,
                 backoff_s: float = 0.5, allowed_image_hosts: tuple[str, ...] = (),
                 local_files_root: Path | None = None):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.allowed_image_hosts = allowed_image_hosts
        self.local_files_root = local_files_root
        self._session = requests.Session()
        self._auth = _TokenAuth(self.url, api_key, self._session, timeout_s)

    @classmethod
    def from_settings(cls, settings) -> "LabelStudioClient":
        return cls(settings.label_studio_url, settings.label_studio_api_key,
                   timeout_s=settings.label_studio_timeout_s, retries=settings.label_studio_retries,
                   allowed_image_hosts=settings.allowed_image_hosts,
                   local_files_root=settings.local_files_document_root)

    @property
    def token_kind(self) -> str:
        return self._auth.kind

    # --- the HTTP core: retries with backoff, one transparent token refresh ---------------------
    def request(self, method: str, path: str, *, expected=(200, 201, 204), **kwargs) -> requests.Response:
        url = path if path.startswith("http") else f"{self.url}{path}"
        kwargs.setdefault("timeout", self.timeout_s)
        extra_headers = dict(kwargs.pop("headers", None) or {})   # kept for every retry
        refreshed = False
        attempt = 0
        while True:
            try:
                auth = self._auth.header()
            except LabelStudioError as exc:   # the token endpoint itself failed
                if (exc.status is None or exc.status in RETRY_STATUS) and attempt < self.retries:
                    self._sleep(attempt)
                    attempt += 1
                    continue
                raise
            try:
                response = self._session.request(method, url, headers={**extra_headers, **auth},
                                                 **kwargs)
            except requests.RequestException as exc:
                if attempt >= self.retries:
                    raise LabelStudioError(
                        f"{method} {path}: Label Studio at {self.url} unreachable after "
                        f"{attempt + 1} attempt(s) ({type(exc).__name__})") from None
                self._sleep(attempt)
                attempt += 1
                continue
            if response.status_code == 401 and is_jwt(self._auth._token) and not refreshed:
                self._auth.refresh(auth)   # the access token expired: one refresh, then retry
                refreshed = True
                continue
            if response.status_code in RETRY_STATUS and attempt < self.retries:
                self._sleep(attempt)
                attempt += 1
                continue
            if response.status_code not in expected:
                raise LabelStudioError(
                    f"{method} {path}: HTTP {response.status_code} after {attempt + 1} "
                    f"attempt(s): {self._auth.redact(response.text[:300])}", response.status_code)
            return response

    def _sleep(self, attempt: int) -> None:
        time.sleep(min(self.backoff_s * (2 ** attempt), 10.0))

    def get_json(self, path: str, **kwargs) -> Any:
        return self.request("GET", path, **kwargs).json()

    # --- projects, tasks, predictions, views ----------------------------------------------------
    def whoami(self) -> dict:
        return self.get_json("/api/current-user/whoami")

    def get_project(self, project_id: int) -> dict:
        return self.get_json(f"/api/projects/{int(project_id)}/")

    def patch_project(self, project_id: int, data: dict) -> dict:
        return self.request("PATCH", f"/api/projects/{int(project_id)}/", json=data).json()

    def iter_tasks(self, project_id: int, page_size: int = 100) -> Iterator[dict]:
        """Every task of the project with its annotations, page by page."""
        page = 1
        while True:
            response = self.request(
                "GET", "/api/tasks/", expected=(200, 404),
                params={"project": int(project_id), "page": page, "page_size": page_size,
                        "fields": "all"})
            if response.status_code == 404:   # past the last page
                return
            body = response.json()
            tasks = body.get("tasks", []) if isinstance(body, dict) else body
            yield from tasks
            if len(tasks) < page_size:
                return
            page += 1

    def import_predictions(self, project_id: int, predictions: list[dict]) -> int:
        response = self.request("POST", f"/api/projects/{int(project_id)}/import/predictions",
                                json=predictions)
        body = _json_or_empty(response)
        return int(body.get("created", len(predictions)))

    def list_views(self, project_id: int) -> list[dict]:
        return self.get_json("/api/dm/views/", params={"project": int(project_id)})

    def create_view(self, project_id: int, data: dict) -> dict:
        return self.request("POST", "/api/dm/views/", json={"project": int(project_id),
                                                            "data": data}).json()

    def update_view(self, view_id: int, project_id: int, data: dict) -> dict:
        return self.request("PATCH", f"/api/dm/views/{int(view_id)}/",
                            json={"project": int(project_id), "data": data}).json()

    # --- images ----------------------------------------------------------------------------------
    def fetch_image_bytes(self, raw_url: str, *, task_id: int | None, max_bytes: int,
                          timeout_s: float) -> bytes:
        """Bytes of a task's image, following the URL policy of backend.image_urls."""
        try:
            source = image_urls.resolve_image_source(
                raw_url, task_id=task_id, label_studio_url=self.url,
                allowed_hosts=self.allowed_image_hosts, local_files_root=self.local_files_root)
        except ImageURLRefused as exc:
            raise ImageFetchError(f"image URL refused: {exc}") from None
        if source.kind == "data_uri":
            try:
                return image_urls.decode_data_uri(source.url, max_bytes)
            except ValueError as exc:
                raise ImageFetchError(str(exc)) from None
        if source.kind == "local_file":
            return _read_local(Path(source.url), max_bytes)
        return self._download(source, max_bytes, timeout_s)

    def _download(self, source: ImageSource, max_bytes: int, timeout_s: float) -> bytes:
        url, send_auth = source.url, source.send_auth
        deadline = time.monotonic() + timeout_s   # for the whole download, redirects included
        refreshed = False
        hops = 0
        while hops <= MAX_REDIRECTS:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ImageFetchError(_too_slow(timeout_s))
            headers = self._auth.header() if send_auth else {}
            try:
                response = self._session.get(url, headers=headers, timeout=remaining,
                                             allow_redirects=False, stream=True)
            except requests.RequestException as exc:
                raise ImageFetchError(f"image download failed: {type(exc).__name__}") from None
            with response:
                if (response.status_code == 401 and send_auth and not refreshed
                        and is_jwt(self._auth._token)):
                    self._auth.refresh(headers)   # access token expired mid-job: refresh once
                    refreshed = True
                    continue
                hops += 1
                if response.status_code in (301, 302, 303, 307, 308):
                    location = response.headers.get("Location", "")
                    url = requests.compat.urljoin(url, location)
                    try:
                        send_auth = image_urls.check_fetch_allowed(
                            url, self.url, self.allowed_image_hosts)
                    except ImageURLRefused as exc:
                        if source.kind != "presign":
                            raise ImageFetchError(f"redirect refused: {exc}") from None
                        # A presigned cloud URL is a public https URL by design: allow it, but
                        # never with our token and never to link-local/metadata addresses.
                        send_auth = _check_presigned_target(url)
                    continue
                if response.status_code != 200:
                    raise ImageFetchError(f"image download failed: HTTP {response.status_code}")
                declared = response.headers.get("Content-Length")
                if declared and declared.isdigit() and int(declared) > max_bytes:
                    raise ImageFetchError(f"image larger than IMAGE_MAX_BYTES ({max_bytes} bytes)")
                return _read_body(response, max_bytes, deadline, timeout_s)
        raise ImageFetchError(f"more than {MAX_REDIRECTS} redirects")


def _too_slow(timeout_s: float) -> str:
    return f"image download took longer than IMAGE_FETCH_TIMEOUT_S ({timeout_s:g} s)"


def _read_body(response: requests.Response, max_bytes: int, deadline: float,
               timeout_s: float) -> bytes:
    """The body, at most max_bytes, read before the deadline.

    requests' timeout bounds each socket read, not the download: a server dripping one byte per
    second would hold a fetch thread for hours. read1() does at most one socket read per call, so
    the deadline is checked between reads.
    """
    read1 = getattr(response.raw, "read1", None)          # urllib3 >= 2
    chunks_iter = None if read1 else response.iter_content(16 * 1024)
    chunks, total = [], 0
    try:
        while True:
            if time.monotonic() > deadline:
                raise ImageFetchError(_too_slow(timeout_s))
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
            raise ImageFetchError(f"{_too_slow(timeout_s)}: {name}") from None
        raise ImageFetchError(f"image download broke off: {name}") from None


def _check_presigned_target(url: str) -> bool:
    from urllib.parse import urlsplit
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ImageFetchError("presigned URL must be https")
    if image_urls.is_link_local_or_metadata(parts.hostname):
        raise ImageFetchError("presigned URL points at a link-local/metadata address")
    return False


def _read_local(path: Path, max_bytes: int) -> bytes:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageFetchError(f"local file unreadable: {exc.strerror}") from None
    if size > max_bytes:
        raise ImageFetchError(f"image larger than IMAGE_MAX_BYTES ({max_bytes} bytes)")
    return path.read_bytes()
