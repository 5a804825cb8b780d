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
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from backend import image_urls
from backend.defaults import ACCESS_TOKEN_REFRESH_AFTER_S
from backend.image_urls import ImageSource, ImageURLRefused

log = logging.getLogger(__name__)

MAX_REDIRECTS = 3
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
# Methods whose repetition changes nothing more than their first success did, so a lost answer
# (read timeout) or a 5xx may be retried blindly. POST creates (predictions, tabs) and is not here:
# a POST is repeated only when Label Studio surely did not act on it (connection refused, 429).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"})


class LabelStudioError(RuntimeError):
    """Label Studio answered with an error or could not be reached (after retries)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status

    @property
    def outcome_unknown(self) -> bool:
        """True when Label Studio may have acted on the request although it failed: no answer
        (read timeout, connection broken after sending) or a server error. A 4xx was refused."""
        return self.status is None or self.status >= 500


class CappedRetry(Retry):
    """urllib3's Retry (backoff, Retry-After on 429/503) with a ceiling on the Retry-After wait,
    so a server asking for an hour cannot park a worker for an hour."""

    def __init__(self, *args, retry_after_max_s: float = 60.0,
                 retry_after_statuses: frozenset = Retry.RETRY_AFTER_STATUS_CODES, **kwargs):
        super().__init__(*args, **kwargs)
        self.retry_after_max_s = retry_after_max_s
        # urllib3 also retries any method on these statuses when they carry Retry-After
        self.RETRY_AFTER_STATUS_CODES = retry_after_statuses

    def new(self, **kwargs) -> "CappedRetry":
        retry = super().new(**kwargs)
        retry.retry_after_max_s = self.retry_after_max_s
        retry.RETRY_AFTER_STATUS_CODES = self.RETRY_AFTER_STATUS_CODES
        return retry

    def parse_retry_after(self, retry_after: str) -> float:
        return min(super().parse_retry_after(retry_after), self.retry_after_max_s)


def retry_policy(retries: int, backoff_s: float, retry_after_max_s: float, *,
                 idempotent: bool) -> CappedRetry:
    """The retry policy of one kind of call.

    Idempotent calls are retried after connection errors, read errors and RETRY_STATUS. A
    creating call only after a connection error (nothing was sent) or a 429 (refused before any
    work); after a read error or a 5xx the caller must first look at what exists.
    """
    return CappedRetry(
        total=retries, connect=retries, status=retries, other=0,
        read=retries if idempotent else False,
        status_forcelist=RETRY_STATUS if idempotent else frozenset({429}),
        allowed_methods=IDEMPOTENT_METHODS if idempotent else None,   # None: any method
        backoff_factor=backoff_s, backoff_max=10.0, respect_retry_after_header=True,
        raise_on_status=False,   # the last response comes back and becomes a LabelStudioError
        redirect=False, retry_after_max_s=retry_after_max_s,
        # a 503 may come after the work was done, Retry-After or not; a 429 never does
        retry_after_statuses=Retry.RETRY_AFTER_STATUS_CODES if idempotent else frozenset({429}))


def _session_with(retry: Retry) -> requests.Session:
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


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


def _attempts(response: requests.Response) -> int:
    """How many times urllib3 sent the request that ended in ``response``."""
    retries = getattr(response.raw, "retries", None)
    return len(getattr(retries, "history", ())) + 1


def _failure_message(method: str, path: str, base_url: str, exc: requests.RequestException,
                     retries: int) -> str:
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    if isinstance(exc, requests.ConnectTimeout) or isinstance(
            reason, urllib3.exceptions.NewConnectionError):
        # nothing was sent: urllib3 retried the connection `retries` times
        return (f"{method} {path}: Label Studio at {base_url} unreachable after {retries + 1} "
                f"attempt(s) ({type(exc).__name__})")
    return f"{method} {path}: no answer from Label Studio at {base_url} ({type(exc).__name__})"


def _json_or_empty(response: requests.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


class LabelStudioClient:
    def __init__(self, url: str, api_key: str, *, timeout_s: float = 30.0, retries: int = 4,
                 backoff_s: float = 0.5, bulk_timeout_s: float = 600.0,
                 retry_after_max_s: float = 60.0, allowed_image_hosts: tuple[str, ...] = (),
                 local_files_root: Path | None = None):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.bulk_timeout_s = bulk_timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.allowed_image_hosts = allowed_image_hosts
        self.local_files_root = local_files_root
        # Reads, updates and deletes: a repeat changes nothing, so they are retried freely.
        self._session = _session_with(retry_policy(retries, backoff_s, retry_after_max_s,
                                                   idempotent=True))
        # Creating POSTs: retried only where Label Studio surely did nothing (see retry_policy).
        self._create_session = _session_with(retry_policy(retries, backoff_s, retry_after_max_s,
                                                          idempotent=False))
        # Image downloads keep their own deadline (_download) and are never retried.
        self._image_session = requests.Session()
        # Exchanging the token twice creates nothing, so its POST is retried like a read.
        token_session = _session_with(retry_policy(retries, backoff_s, retry_after_max_s,
                                                   idempotent=True).new(allowed_methods=None))
        self._auth = _TokenAuth(self.url, api_key, token_session, timeout_s)

    @classmethod
    def from_settings(cls, settings) -> "LabelStudioClient":
        return cls(settings.label_studio_url, settings.label_studio_api_key,
                   timeout_s=settings.label_studio_timeout_s, retries=settings.label_studio_retries,
                   bulk_timeout_s=settings.label_studio_bulk_timeout_s,
                   retry_after_max_s=settings.label_studio_retry_after_max_s,
                   allowed_image_hosts=settings.allowed_image_hosts,
                   local_files_root=settings.local_files_document_root)

    @property
    def token_kind(self) -> str:
        return self._auth.kind

    # --- the HTTP core: retries by urllib3's Retry, one transparent token refresh -------------
    def request(self, method: str, path: str, *, expected=(200, 201, 204), idempotent=None,
                **kwargs) -> requests.Response:
        """One call; ``idempotent`` defaults to the method's nature (POST creates).

        Raises LabelStudioError; its ``outcome_unknown`` says whether a creating call may have
        taken effect anyway.
        """
        url = path if path.startswith("http") else f"{self.url}{path}"
        kwargs.setdefault("timeout", self.timeout_s)
        if idempotent is None:
            idempotent = method.upper() in IDEMPOTENT_METHODS
        session = self._session if idempotent else self._create_session
        extra_headers = dict(kwargs.pop("headers", None) or {})
        refreshed = False
        while True:
            auth = self._auth.header()
            try:
                response = session.request(method, url, headers={**extra_headers, **auth},
                                           **kwargs)
            except requests.RequestException as exc:
                raise LabelStudioError(_failure_message(method, path, self.url, exc,
                                                        self.retries)) from None
            if response.status_code == 401 and is_jwt(self._auth._token) and not refreshed:
                self._auth.refresh(auth)   # the access token expired: one refresh, then again
                refreshed = True
                continue
            if response.status_code not in expected:
                raise LabelStudioError(
                    f"{method} {path}: HTTP {response.status_code} after {_attempts(response)} "
                    f"attempt(s): {self._auth.redact(response.text[:300])}", response.status_code)
            return response

    def wait_before_retry(self, attempt: int) -> None:
        """The pause before the ``attempt``-th re-post of a creating call that was checked."""
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

    def iter_tasks_after(self, project_id: int, include: tuple[str, ...], *,
                         filters: tuple[dict, ...] = (), with_annotations: bool = False,
                         after_id: int = 0, page_size: int = 1000) -> Iterator[dict]:
        """Tasks with an id above ``after_id`` that match the Data Manager ``filters`` (all of
        them), in id order, carrying only the fields named in ``include``.

        ``include`` is Label Studio's sparse fieldset: it applies to the task and to its embedded
        annotations alike, so ``("id", "annotations", "result")`` gives each annotation's id and
        result and no prediction is ever serialized. ``with_annotations`` asks for the embedded
        annotations (``fields=all``). Pages are keyset pages (the next ids above the last one
        seen): a task created or annotated meanwhile cannot shift a page, as page numbers would.
        """
        import json
        cursor = int(after_id)
        while True:
            query = {"filters": {"conjunction": "and", "items": [*filters, {
                "filter": "filter:tasks:id", "operator": "greater", "type": "Number",
                "value": cursor}]}, "ordering": ["tasks:id"]}
            params = {"project": int(project_id), "page": 1, "page_size": page_size,
                      "include": ",".join(include), "query": json.dumps(query)}
            if with_annotations:
                params["fields"] = "all"
            response = self.request("GET", "/api/tasks/", expected=(200, 404), params=params)
            if response.status_code == 404:   # no such page: nothing above the cursor
                return
            body = response.json()
            tasks = body.get("tasks", []) if isinstance(body, dict) else body
            yield from tasks
            ids = [t["id"] for t in tasks if isinstance(t, dict) and type(t.get("id")) is int]
            if len(tasks) < page_size or not ids or max(ids) <= cursor:
                return
            cursor = max(ids)

    def tasks_by_id(self, project_id: int, task_ids, include: tuple[str, ...]) -> list[dict]:
        """The given tasks that still exist, with only the fields in ``include`` (one Data
        Manager query per 1,000 ids; it never opens a task, which would call /predict)."""
        import json
        ids = sorted({int(t) for t in task_ids})
        out: list[dict] = []
        for start in range(0, len(ids), 1000):
            part = ids[start:start + 1000]
            body = self.get_json("/api/tasks/", params={
                "project": int(project_id), "page": 1, "page_size": len(part),
                "include": ",".join(include),
                "query": json.dumps({"selectedItems": {"all": False, "included": part}})})
            out.extend(body.get("tasks", []) if isinstance(body, dict) else body)
        return out

    def import_predictions(self, project_id: int, predictions: list[dict]) -> int:
        """One bulk import request (not retried after a lost answer: see prediction_push)."""
        response = self.request("POST", f"/api/projects/{int(project_id)}/import/predictions",
                                json=predictions, timeout=self.bulk_timeout_s)
        body = _json_or_empty(response)
        return int(body.get("created", len(predictions)))

    def task_predictions(self, project_id: int, task_ids: list[int]) -> dict[int, list[dict]]:
        """task id -> its predictions (``id``, ``model_version``), for those of ``task_ids`` that
        still exist in the project (a deleted task is absent). One Data Manager query per 1,000
        ids: it selects the given ids, so its cost follows len(task_ids), not the project's
        size, and it never opens a task (``GET /api/tasks/<id>`` calls the backend's /predict)."""
        import json
        out: dict[int, list[dict]] = {}
        ids = [int(t) for t in task_ids]
        for start in range(0, len(ids), 1000):   # keeps the query string a sane length
            part = ids[start:start + 1000]
            query = {"selectedItems": {"all": False, "included": part}}
            body = self.get_json("/api/tasks/", params={
                "project": int(project_id), "page": 1, "page_size": len(part),
                "fields": "all", "query": json.dumps(query)})
            tasks = body.get("tasks", []) if isinstance(body, dict) else body
            for task in tasks:
                out[int(task["id"])] = [{"id": p.get("id"), "model_version": p.get("model_version")}
                                        for p in task.get("predictions") or []]
        return out

    def delete_prediction(self, prediction_id: int) -> None:
        """Delete one prediction; one already gone counts as deleted."""
        self.request("DELETE", f"/api/predictions/{int(prediction_id)}/",
                     expected=(200, 204, 404))

    def delete_model_version(self, project_id: int, version: str) -> None:
        """Delete one version's predictions (Label Studio deletes them one by one: a bulk call)."""
        self.request("DELETE", f"/api/projects/{int(project_id)}/model-versions/",
                     json={"model_version": version}, timeout=self.bulk_timeout_s)

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
                response = self._image_session.get(url, headers=headers, timeout=remaining,
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
    chunks_iter: Iterator[bytes] = iter(()) if read1 else response.iter_content(16 * 1024)
    chunks: list[bytes] = []
    total = 0
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
