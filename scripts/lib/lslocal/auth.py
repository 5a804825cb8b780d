"""Getting tokens the way a user does: a session login through Label Studio's form, then a new
personal access token (PAT) or the legacy token.

Legacy tokens (``Authorization: Token <t>``) are refused unless the organization enables them.
PATs are JWT refresh tokens exchanged at ``/api/token/refresh/`` for access tokens that live 300 s;
a PAT sent directly as ``Bearer`` is refused. Using a token (the exchange and its refresh) is the
backend's own code, backend.ls_auth, through ``LabelStudioAdmin``.
"""

from __future__ import annotations

import base64
import json

import requests

from backend.ls_auth import LabelStudioError, is_jwt
from scripts.lib.lslocal.process import direct_session

HTTP_TIMEOUT_S = 60.0


def looks_like_jwt(token: str) -> bool:
    """A PAT (JWT) has three dot-separated parts; a legacy token is 40 hex characters."""
    return is_jwt(token)


def jwt_claims(token: str) -> dict:
    """The payload of a JWT, without verifying its signature (only to read ``exp``/``token_type``)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def login_session(url: str, email: str, password: str) -> requests.Session:
    """A requests.Session logged in through LS's login form (session cookie + CSRF token)."""
    session = direct_session()
    login_url = f"{url}/user/login/"
    session.get(login_url, timeout=HTTP_TIMEOUT_S).raise_for_status()  # sets the csrftoken cookie
    form = {"email": email, "password": password, "csrfmiddlewaretoken": session.cookies.get("csrftoken", "")}
    response = session.post(
        login_url, data=form, headers={"Referer": login_url}, allow_redirects=False, timeout=HTTP_TIMEOUT_S
    )
    # Success redirects; a failed login re-renders the form with 200.
    if response.status_code != 302:
        raise LabelStudioError(
            f"login to {url} as {email} failed (HTTP {response.status_code}): wrong credentials?"
        )
    session.headers.update({"X-CSRFToken": session.cookies.get("csrftoken") or "", "Referer": f"{url}/"})
    return session


def get_legacy_token(url: str, email: str, password: str) -> str:
    """The user's legacy API token (it authenticates only where legacy tokens are enabled)."""
    session = login_session(url, email, password)
    response = session.get(f"{url}/api/current-user/token", timeout=HTTP_TIMEOUT_S)
    _raise_for_status(response, "read the legacy token")
    return response.json()["token"]


def create_personal_access_token(url: str, email: str, password: str, replace_existing: bool = True) -> str:
    """Create a personal access token (JWT refresh token) for the user, via a session login.

    LS allows one live PAT per user (409 otherwise). With ``replace_existing`` the existing ones are
    revoked (blacklisted) first, because LS only ever shows the full token once, at creation.
    """
    session = login_session(url, email, password)
    response = session.post(f"{url}/api/token/", timeout=HTTP_TIMEOUT_S)
    if response.status_code == 409 and replace_existing:
        _revoke_personal_access_tokens(session, url)
        response = session.post(f"{url}/api/token/", timeout=HTTP_TIMEOUT_S)
    _raise_for_status(response, "create a personal access token")
    return response.json()["token"]


def _revoke_personal_access_tokens(session: requests.Session, url: str) -> None:
    listing = session.get(f"{url}/api/token/", timeout=HTTP_TIMEOUT_S)
    _raise_for_status(listing, "list personal access tokens")
    for item in listing.json():
        # The listing holds truncated tokens (no signature); the blacklist endpoint accepts those.
        revoked = session.post(
            f"{url}/api/token/blacklist/", json={"refresh": item["token"]}, timeout=HTTP_TIMEOUT_S
        )
        if revoked.status_code not in (204, 404):  # 404: already revoked
            _raise_for_status(revoked, "revoke a personal access token")


def _raise_for_status(response: requests.Response, what: str) -> None:
    if response.status_code >= 400:
        raise LabelStudioError(
            f"could not {what}: {response.request.method} {response.url} -> HTTP {response.status_code}: "
            f"{response.text[:1000]}"
        )
