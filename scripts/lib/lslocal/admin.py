"""An administrator's Label Studio API client for tests, the demo and benchmarks: projects, uploads,
annotations, ML backends, tabs; everything a user does in the UI that the backend never does.

Its transport is the backend's own (backend.ls_client.LabelStudioClient: timeouts, retries of
idempotent calls only, one token refresh on a 401, the token redacted from errors), and so is its
token handling (backend.ls_auth.TokenAuth): the harness tests the refresh the product ships.
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import requests

from backend.ls_auth import LabelStudioError
from backend.ls_client import LabelStudioClient

HTTP_TIMEOUT_S = 60.0
MAX_FILES_PER_IMPORT = 100  # LS DATA_UPLOAD_MAX_NUMBER_FILES default
SAMPLING_VALUES = ("Sequential sampling", "Uniform sampling", "Uncertainty sampling")


class LabelStudioAdmin:
    """A small LS API client that accepts either a legacy token or a personal access token (PAT).

    Legacy: ``Authorization: Token <t>``. PAT: exchanged at ``/api/token/refresh/`` for an access token
    sent as ``Bearer``; renewed before it expires (300 s in LS 1.23.2) and once on a 401.
    """

    def __init__(self, url: str, token: str, timeout_s: float = HTTP_TIMEOUT_S):
        self.url = url.rstrip("/")
        self.token = token.strip()
        self.timeout_s = timeout_s
        # Proxies from the environment are ignored: this traffic is for the local server only.
        self.api = LabelStudioClient(self.url, self.token, timeout_s=timeout_s, trust_env=False)
        self.api.error_body_chars = 1000  # Label Studio's reasons (e.g. a refused /setup) run long
        self.uses_personal_access_token = self.api.auth.refreshes

    # ---- auth ------------------------------------------------------------------------------------

    def access_token(self, force_refresh: bool = False) -> str:
        """A current access token (PAT mode only); usable to download /data/upload/... files."""
        return self.api.auth.access_token(force_refresh)

    def auth_headers(self, force_refresh: bool = False) -> dict:
        return self.api.auth.header(force_refresh)

    # ---- transport -------------------------------------------------------------------------------

    def request(
        self, method: str, path: str, expected: Sequence[int] = (200, 201, 204), **kwargs
    ) -> requests.Response:
        """Send an authenticated request to ``path`` (relative to the LS URL); raise on unexpected status."""
        return self.api.request(method, self._url_on_this_server(path), expected=tuple(expected), **kwargs)

    def _url_on_this_server(self, path: str) -> str:
        if path.startswith("/"):
            return path
        if path.startswith(f"{self.url}/"):
            return path
        # Task data is user input: never send our credentials to a host it names.
        raise ValueError(f"refusing to send Label Studio credentials to {path!r} (not under {self.url})")

    def get_json(self, path: str, **kwargs):
        return self.request("GET", path, **kwargs).json()

    def download(self, url_or_path: str) -> bytes:
        """Bytes of a file LS serves, e.g. a task's ``/data/upload/<pid>/<file>`` (needs auth)."""
        return self.request("GET", url_or_path).content

    # ---- organization / user ---------------------------------------------------------------------

    def whoami(self) -> dict:
        return self.get_json("/api/current-user/whoami")

    def get_legacy_api_token(self) -> str:
        """The current user's legacy token (readable with either token kind)."""
        return self.get_json("/api/current-user/token")["token"]

    def get_jwt_settings(self) -> dict:
        return self.get_json("/api/jwt/settings")

    def set_legacy_api_tokens_enabled(self, enabled: bool) -> dict:
        """Allow or refuse ``Authorization: Token`` for the whole organization (off by default in 1.23)."""
        body = {"api_tokens_enabled": True, "legacy_api_tokens_enabled": bool(enabled)}
        return self.request("POST", "/api/jwt/settings", json=body).json()

    # ---- projects --------------------------------------------------------------------------------

    def create_project(self, title: str, label_config: str, **fields) -> dict:
        if len(title) < 3:
            raise ValueError(f"LS requires a project title of at least 3 characters, got {title!r}")
        body = {"title": title, "label_config": label_config, **fields}
        return self.request("POST", "/api/projects/", json=body).json()

    def get_project(self, project_id: int) -> dict:
        return self.get_json(f"/api/projects/{project_id}/")

    def update_project(self, project_id: int, **fields) -> dict:
        return self.request("PATCH", f"/api/projects/{project_id}/", json=fields).json()

    def set_sampling(self, project_id: int, value: str) -> dict:
        """Set how "Label All Tasks" picks the next task; the UI shows Uncertainty as Enterprise-only,
        but the API accepts it."""
        if value not in SAMPLING_VALUES:
            raise ValueError(f"sampling must be one of {SAMPLING_VALUES}, got {value!r}")
        return self.update_project(project_id, sampling=value)

    def next_task(self, project_id: int) -> dict | None:
        """The task LS would give this user next, or None when there is none left.

        The trailing slash matters: without it LS answers 500. Opening a task locks it for other users.
        """
        response = self.request("GET", f"/api/projects/{project_id}/next/", expected=(200, 404))
        return response.json() if response.status_code == 200 else None

    # ---- tasks -----------------------------------------------------------------------------------

    def import_images(self, project_id: int, paths: Iterable[os.PathLike | str]) -> list[int]:
        """Upload image files as tasks; their ids, in order.

        Tasks get ``data.image = /data/upload/<pid>/<8 hex>-<name>``."""
        task_ids: list[int] = []
        for chunk in _chunks([Path(p) for p in paths], MAX_FILES_PER_IMPORT):
            task_ids.extend(self._import_chunk(project_id, chunk))
        return task_ids

    def _import_chunk(self, project_id: int, paths: list[Path]) -> list[int]:
        # Each file needs its own form field name: LS reads request.FILES as a dict. The bytes,
        # not open files, so a request re-sent after a token refresh carries them again.
        files = {
            f"file{index}": (
                path.name,
                path.read_bytes(),
                mimetypes.guess_type(path.name)[0] or "application/octet-stream",
            )
            for index, path in enumerate(paths)
        }
        response = self.request(
            "POST", f"/api/projects/{project_id}/import", files=files, params={"return_task_ids": "true"}
        )
        task_ids = response.json().get("task_ids", [])
        if len(task_ids) != len(paths):
            raise LabelStudioError(
                f"imported {len(paths)} files but LS reported {len(task_ids)} tasks: {response.text[:500]}"
            )
        return task_ids

    def import_tasks(self, project_id: int, tasks: list[dict]) -> list[int]:
        """Import tasks given as JSON (e.g. ``{"data": {"image": "/data/local-files/?d=..."}}``)."""
        response = self.request(
            "POST", f"/api/projects/{project_id}/import", json=tasks, params={"return_task_ids": "true"}
        )
        return response.json().get("task_ids", [])

    def iter_tasks(self, project_id: int, page_size: int = 100) -> Iterator[dict]:
        """All tasks of a project, one page at a time (LS pages 50 per request by default)."""
        page = 1
        while True:
            response = self.request(
                "GET",
                f"/api/projects/{project_id}/tasks/",
                params={"page": page, "page_size": page_size},
                expected=(200, 404),
            )
            if response.status_code == 404:  # LS answers 404 for a page past the end
                return
            tasks = response.json()
            yield from tasks
            if len(tasks) < page_size:
                return
            page += 1

    def list_tasks(self, project_id: int, page_size: int = 100) -> list[dict]:
        return list(self.iter_tasks(project_id, page_size))

    def get_task(self, task_id: int) -> dict:
        """Note: LS calls the ML backend's /predict for a task that has no prediction yet."""
        return self.get_json(f"/api/tasks/{task_id}/")

    def create_annotation(self, task_id: int, result: list, **fields) -> dict:
        body = {"result": result, **fields}
        return self.request("POST", f"/api/tasks/{task_id}/annotations/", json=body).json()

    def list_annotations(self, task_id: int) -> list[dict]:
        return self.get_json(f"/api/tasks/{task_id}/annotations/")

    # ---- predictions -----------------------------------------------------------------------------

    def list_predictions(self, task_id: int | None = None, project_id: int | None = None) -> list[dict]:
        if (task_id is None) == (project_id is None):
            raise ValueError("give exactly one of task_id, project_id")
        params = {"task": task_id} if task_id is not None else {"project": project_id}
        return self.get_json("/api/predictions/", params=params)

    def import_predictions(self, project_id: int, predictions: list[dict]) -> dict:
        """Bulk-create predictions (``[{task, result, score, model_version}, ...]``) in one request.

        LS neither de-duplicates them nor sets the project's model_version."""
        return self.request("POST", f"/api/projects/{project_id}/import/predictions", json=predictions).json()

    # ---- ML backends -----------------------------------------------------------------------------

    def add_ml_backend(
        self,
        project_id: int,
        url: str,
        title: str,
        basic_auth_user: str | None = None,
        basic_auth_pass: str | None = None,
        is_interactive: bool = False,
        **fields,
    ) -> dict:
        """Connect an ML backend. LS calls its /health and /setup first; adds a webhook to <url>/webhook."""
        body = {"project": project_id, "url": url, "title": title, "is_interactive": is_interactive, **fields}
        if basic_auth_user is not None or basic_auth_pass is not None:
            body.update(
                auth_method="BASIC_AUTH",
                basic_auth_user=basic_auth_user or "",
                basic_auth_pass=basic_auth_pass or "",
            )
        return self.request("POST", "/api/ml", json=body).json()

    def list_ml_backends(self, project_id: int) -> list[dict]:
        return self.get_json("/api/ml", params={"project": project_id})

    def get_ml_backend(self, ml_id: int) -> dict:
        return self.get_json(f"/api/ml/{ml_id}")

    def start_training(self, ml_id: int) -> None:
        """The UI's "Start Training": LS POSTs START_TRAINING to the backend's /webhook and waits for it.

        LS answers 200 whatever the backend did; errors show only in the ML backend's state."""
        self.request("POST", f"/api/ml/{ml_id}/train")

    # ---- Data Manager views ----------------------------------------------------------------------

    def list_views(self, project_id: int) -> list[dict]:
        return self.get_json("/api/dm/views/", params={"project": project_id})

    def create_view(self, project_id: int, data: dict) -> dict:
        return self.request("POST", "/api/dm/views/", json={"project": project_id, "data": data}).json()


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def choice_annotation(from_name: str, to_name: str, label: str) -> list[dict]:
    """The ``result`` of a single-choice annotation (a ``<Choices>`` tag applied to ``to_name``)."""
    return [{"from_name": from_name, "to_name": to_name, "type": "choices", "value": {"choices": [label]}}]
