"""Label Studio credentials: the token users paste, turned into the header each request carries.

Both kinds of token work: a legacy token (``Authorization: Token <t>``) and a personal access
token, which is a JWT *refresh* token exchanged at /api/token/refresh/ for a short-lived access
token (300 s in Label Studio 1.23) that is refreshed before it expires or on a 401. The token never
appears in logs, exceptions or status output. The API client (backend.ls_client), the image
downloads (backend.image_download) and the test harness (scripts/lib/lslocal) share this one refresh.
"""

from __future__ import annotations

import threading
import time

import requests

from backend.constants import ACCESS_TOKEN_REFRESH_AFTER_S


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


def is_jwt(token: str) -> bool:
    """A personal access token (JWT) has three non-empty dot-separated parts; a legacy token is
    40 hex characters."""
    parts = token.split(".")
    return len(parts) == 3 and all(parts)


def json_or_empty(response: requests.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


class TokenAuth:
    """The Authorization header for one token, with the access token of a personal access token
    kept fresh: exchanged on first use, again after ACCESS_TOKEN_REFRESH_AFTER_S, and once after
    a 401 (``refresh``). Thread-safe: parallel downloads share one exchange."""

    def __init__(self, base_url: str, token: str, session: requests.Session, timeout_s: float):
        self._base_url = base_url.rstrip("/")
        self._token = token.strip()
        self._session = session
        self._timeout_s = timeout_s
        self._access: str | None = None
        self._access_at = 0.0
        self._lock = threading.Lock()
        self.kind = "personal access token" if is_jwt(self._token) else "legacy token"

    @property
    def refreshes(self) -> bool:
        """True for a personal access token: a 401 may mean the access token expired."""
        return is_jwt(self._token)

    def header(self, force_refresh: bool = False) -> dict[str, str]:
        if not self._token:
            return {}
        if not self.refreshes:
            return {"Authorization": f"Token {self._token}"}
        return {"Authorization": f"Bearer {self.access_token(force_refresh)}"}

    def access_token(self, force_refresh: bool = False) -> str:
        """A current access token (personal access tokens only)."""
        if not self.refreshes:
            raise LabelStudioError('a legacy token has no access token: it is sent as "Token <t>"')
        with self._lock:
            stale = time.monotonic() - self._access_at > ACCESS_TOKEN_REFRESH_AFTER_S
            if force_refresh or self._access is None or stale:
                self._access = self._exchange()
                self._access_at = time.monotonic()
            return self._access

    def refresh(self, refused: dict[str, str]) -> None:
        """After a 401 sent with header ``refused``: get a new access token, once.

        Several threads (parallel image downloads) may see the same expired token at once; only
        the first exchanges it, the others find the header already changed and reuse the new one.
        """
        if not self.refreshes:
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
        # Not label-studio-sdk's TokensClientExt: [sdk-no-401] and [sdk-subpath] (backend.ls_client)
        url = f"{self._base_url}/api/token/refresh/"
        try:
            response = self._session.post(url, json={"refresh": self._token}, timeout=self._timeout_s)
        except requests.RequestException as exc:
            raise LabelStudioError(
                f"cannot reach Label Studio to refresh the access token: {type(exc).__name__}"
            ) from None
        if response.status_code != 200 or "access" not in json_or_empty(response):
            raise LabelStudioError(
                f"Label Studio refused the personal access token (HTTP {response.status_code}); "
                "check LABEL_STUDIO_API_KEY",
                response.status_code,
            )
        return response.json()["access"]
