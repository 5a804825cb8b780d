"""The Label Studio API: the one module that calls it (task images: backend.image_download).

Credentials and their refresh are backend.ls_auth's. Reads, updates and deletes are retried after
connection errors, lost answers and 5xx/429 (backend.ls_retry: urllib3's Retry, capped
Retry-After); creating POSTs only where Label Studio surely did nothing, so a lost answer to a
prediction import surfaces as ``LabelStudioError.outcome_unknown`` and the caller looks before it
re-posts (no duplicates).

Why the calls below are written by hand and not made through label-studio-sdk's client: its
endpoints work with Label Studio 1.23 (PAT exchange, the task pager, sparse ``include``), but its
shared transport breaks the guarantees above; tests/unit/backend/test_sdk_defects.py pins each
defect against a local server, and fails once a release fixes it (then move the calls over):
- [sdk-resend] it re-sends every method, POST included, after a 5xx/408/409/429 or a connection
  closed after sending: a prediction import or a new tab would be created two or three times;
- [sdk-no-401] it never refreshes and retries after a 401: it renews the access token only by its
  ``exp`` claim, so a token that expires in flight (or on a skewed clock) fails the call;
- [sdk-subpath] its token refresh drops a base URL's path (``http://host/ls`` refreshes at
  ``http://host/api/token/refresh/``): Label Studio served under a path cannot be used at all;
- [sdk-read-timeout] a read that timed out is never retried, not even a GET;
- [sdk-fixed-waits] Retry-After is capped at a fixed 60 s and the backoff starts at 1 s, where
  LABEL_STUDIO_RETRY_AFTER_MAX_S and the client's backoff apply here;
- [sdk-missing] it has no call for ``DELETE /api/projects/{id}/model-versions/``.
The defects shared by every call ([sdk-no-401], [sdk-subpath], [sdk-read-timeout],
[sdk-fixed-waits]) are named once here; each call's comment names what else it would lose.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from backend.image_download import ImageDownloader
from backend.ls_auth import LabelStudioError, TokenAuth, json_or_empty
from backend.ls_retry import IDEMPOTENT_METHODS, attempts, failure_message, retry_policy, session_with

__all__ = ["LabelStudioClient", "LabelStudioError"]

log = logging.getLogger(__name__)


class LabelStudioClient:
    # how much of an error answer's body (token redacted) a LabelStudioError quotes
    error_body_chars = 300

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout_s: float = 30.0,
        retries: int = 4,
        backoff_s: float = 0.5,
        bulk_timeout_s: float = 600.0,
        retry_after_max_s: float = 60.0,
        trust_env: bool = True,
    ):
        """``trust_env=False`` ignores *_PROXY variables and .netrc (a Label Studio on loopback)."""
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.bulk_timeout_s = bulk_timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        # Reads, updates and deletes: a repeat changes nothing, so they are retried freely.
        self._session = session_with(
            retry_policy(retries, backoff_s, retry_after_max_s, idempotent=True), trust_env
        )
        # Creating POSTs: retried only where Label Studio surely did nothing (see retry_policy).
        self._create_session = session_with(
            retry_policy(retries, backoff_s, retry_after_max_s, idempotent=False), trust_env
        )
        # Exchanging the token twice creates nothing, so its POST is retried like a read.
        token_session = session_with(
            retry_policy(retries, backoff_s, retry_after_max_s, idempotent=True).new(allowed_methods=None),
            trust_env,
        )
        self.auth = TokenAuth(self.url, api_key, token_session, timeout_s)

    @classmethod
    def from_settings(cls, settings) -> LabelStudioClient:
        return cls(
            settings.label_studio_url,
            settings.label_studio_api_key,
            timeout_s=settings.label_studio_timeout_s,
            retries=settings.label_studio_retries,
            bulk_timeout_s=settings.label_studio_bulk_timeout_s,
            retry_after_max_s=settings.label_studio_retry_after_max_s,
        )

    @property
    def token_kind(self) -> str:
        return self.auth.kind

    # --- the HTTP core: retries by urllib3's Retry, one transparent token refresh -------------
    def request(
        self, method: str, path: str, *, expected=(200, 201, 204), idempotent=None, **kwargs
    ) -> requests.Response:
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
            auth = self.auth.header()
            try:
                response = session.request(method, url, headers={**extra_headers, **auth}, **kwargs)
            except requests.RequestException as exc:
                raise LabelStudioError(failure_message(method, path, self.url, exc, self.retries)) from None
            if response.status_code == 401 and self.auth.refreshes and not refreshed:
                self.auth.refresh(auth)  # the access token expired: one refresh, then again
                refreshed = True
                continue
            if response.status_code not in expected:
                raise LabelStudioError(
                    f"{method} {path}: HTTP {response.status_code} after {attempts(response)} "
                    f"attempt(s): {self.auth.redact(response.text)[: self.error_body_chars]}",
                    response.status_code,
                )
            return response

    def wait_before_retry(self, attempt: int) -> None:
        """The pause before the ``attempt``-th re-post of a creating call that was checked."""
        time.sleep(min(self.backoff_s * (2**attempt), 10.0))

    def get_json(self, path: str, **kwargs) -> Any:
        return self.request("GET", path, **kwargs).json()

    # --- projects, tasks, predictions, views ----------------------------------------------------
    def whoami(self) -> dict:
        # SDK users.whoami(): shared transport defects only (module docstring)
        return self.get_json("/api/current-user/whoami")

    def get_project(self, project_id: int) -> dict:
        # SDK projects.get(): shared transport defects; returns a model, callers read the dict
        return self.get_json(f"/api/projects/{int(project_id)}/")

    def patch_project(self, project_id: int, data: dict) -> dict:
        # SDK projects.update(): shared transport defects only (module docstring)
        return self.request("PATCH", f"/api/projects/{int(project_id)}/", json=data).json()

    def iter_tasks(self, project_id: int, page_size: int = 100) -> Iterator[dict]:
        """Every task of the project with its annotations, page by page."""
        # SDK tasks.list() pager: shared transport defects only (module docstring)
        page = 1
        while True:
            response = self.request(
                "GET",
                "/api/tasks/",
                expected=(200, 404),
                params={"project": int(project_id), "page": page, "page_size": page_size, "fields": "all"},
            )
            if response.status_code == 404:  # past the last page
                return
            body = response.json()
            tasks = body.get("tasks", []) if isinstance(body, dict) else body
            yield from tasks
            if len(tasks) < page_size:
                return
            page += 1

    def iter_tasks_after(
        self,
        project_id: int,
        include: tuple[str, ...],
        *,
        filters: tuple[dict, ...] = (),
        with_annotations: bool = False,
        after_id: int = 0,
        page_size: int = 1000,
    ) -> Iterator[dict]:
        """Tasks with an id above ``after_id`` that match the Data Manager ``filters`` (all of
        them), in id order, carrying only the fields named in ``include``.

        ``include`` is Label Studio's sparse fieldset: it applies to the task and to its embedded
        annotations alike, so ``("id", "annotations", "result")`` gives each annotation's id and
        result and no prediction is ever serialized. ``with_annotations`` asks for the embedded
        annotations (``fields=all``). Pages are keyset pages (the next ids above the last one
        seen): a task created or annotated meanwhile cannot shift a page, as page numbers would.
        """
        # SDK tasks.list(query=...): shared transport defects; keyset pages are built here anyway
        cursor = int(after_id)
        while True:
            query = {
                "filters": {
                    "conjunction": "and",
                    "items": [
                        *filters,
                        {
                            "filter": "filter:tasks:id",
                            "operator": "greater",
                            "type": "Number",
                            "value": cursor,
                        },
                    ],
                },
                "ordering": ["tasks:id"],
            }
            params = {
                "project": int(project_id),
                "page": 1,
                "page_size": page_size,
                "include": ",".join(include),
                "query": json.dumps(query),
            }
            if with_annotations:
                params["fields"] = "all"
            response = self.request("GET", "/api/tasks/", expected=(200, 404), params=params)
            if response.status_code == 404:  # no such page: nothing above the cursor
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
        # SDK tasks.list(query=selectedItems): shared transport defects only (module docstring)
        ids = sorted({int(t) for t in task_ids})
        out: list[dict] = []
        for start in range(0, len(ids), 1000):
            part = ids[start : start + 1000]
            body = self.get_json(
                "/api/tasks/",
                params={
                    "project": int(project_id),
                    "page": 1,
                    "page_size": len(part),
                    "include": ",".join(include),
                    "query": json.dumps({"selectedItems": {"all": False, "included": part}}),
                },
            )
            out.extend(body.get("tasks", []) if isinstance(body, dict) else body)
        return out

    def import_predictions(self, project_id: int, predictions: list[dict]) -> int:
        """One bulk import request (not retried after a lost answer: see prediction_push)."""
        # SDK projects.import_predictions(): [sdk-resend] would duplicate predictions
        response = self.request(
            "POST",
            f"/api/projects/{int(project_id)}/import/predictions",
            json=predictions,
            timeout=self.bulk_timeout_s,
        )
        body = json_or_empty(response)
        return int(body.get("created", len(predictions)))

    def task_predictions(self, project_id: int, task_ids: list[int]) -> dict[int, list[dict]]:
        """task id -> its predictions (``id``, ``model_version``), for those of ``task_ids`` that
        still exist in the project (a deleted task is absent). One Data Manager query per 1,000
        ids: it selects the given ids, so its cost follows len(task_ids), not the project's
        size, and it never opens a task (``GET /api/tasks/<id>`` calls the backend's /predict)."""
        # SDK tasks.list(fields="all"): shared transport defects only (module docstring)
        out: dict[int, list[dict]] = {}
        ids = [int(t) for t in task_ids]
        for start in range(0, len(ids), 1000):  # keeps the query string a sane length
            part = ids[start : start + 1000]
            query = {"selectedItems": {"all": False, "included": part}}
            body = self.get_json(
                "/api/tasks/",
                params={
                    "project": int(project_id),
                    "page": 1,
                    "page_size": len(part),
                    "fields": "all",
                    "query": json.dumps(query),
                },
            )
            tasks = body.get("tasks", []) if isinstance(body, dict) else body
            for task in tasks:
                out[int(task["id"])] = [
                    {"id": p.get("id"), "model_version": p.get("model_version")}
                    for p in task.get("predictions") or []
                ]
        return out

    def delete_prediction(self, prediction_id: int) -> None:
        """Delete one prediction; one already gone counts as deleted."""
        # SDK predictions.delete(): shared transport defects; a 404 (already gone) is success here
        self.request("DELETE", f"/api/predictions/{int(prediction_id)}/", expected=(200, 204, 404))

    def delete_model_version(self, project_id: int, version: str) -> None:
        """Delete one version's predictions (Label Studio deletes them one by one: a bulk call)."""
        # [sdk-missing]: the SDK has no call for this endpoint
        self.request(
            "DELETE",
            f"/api/projects/{int(project_id)}/model-versions/",
            json={"model_version": version},
            timeout=self.bulk_timeout_s,
        )

    def list_views(self, project_id: int) -> list[dict]:
        # SDK views.list(): shared transport defects only (module docstring)
        return self.get_json("/api/dm/views/", params={"project": int(project_id)})

    def create_view(self, project_id: int, data: dict) -> dict:
        # SDK views.create(): [sdk-resend] would create the tab twice
        return self.request("POST", "/api/dm/views/", json={"project": int(project_id), "data": data}).json()

    def update_view(self, view_id: int, project_id: int, data: dict) -> dict:
        # SDK views.update(): shared transport defects only (module docstring)
        return self.request(
            "PATCH", f"/api/dm/views/{int(view_id)}/", json={"project": int(project_id), "data": data}
        ).json()

    def image_downloader(
        self,
        allowed_hosts: tuple[str, ...] = (),
        local_files_root: Path | None = None,
        *,
        retries: int = 0,
        backoff_s: float = 1.0,
    ) -> ImageDownloader:
        """Task images with this client's credentials (sent to Label Studio only); a download
        that failed transiently is tried ``retries`` more times (ImageDownloader)."""
        return ImageDownloader(
            self.url,
            self.auth,
            allowed_hosts=allowed_hosts,
            local_files_root=local_files_root,
            retries=retries,
            backoff_s=backoff_s,
        )
