"""The dashboard: a page for people at /dashboard (``/`` and ``/health`` stay JSON for Label
Studio), its progress endpoint for the page's polling, and the "make this version live" action.

Routes of their own Blueprint; the app's basic auth (``backend.app.require_auth``, every path
but /health) guards them all. The page holds no secret: no token, no password, no setting but
Label Studio's URL (for links to tasks). The action accepts only same-origin requests (a page
elsewhere cannot make a logged-in browser post it) and runs as an RQ job (``backend.rollback``).
"""

from __future__ import annotations

import logging
import secrets
from urllib.parse import urlsplit

from flask import Blueprint, current_app, jsonify, redirect, request, url_for

from backend import dashboard_html, rollback, training_state
from backend.dashboard_data import project_view, round_in_progress, thumbnail
from backend.model_store import is_own_version

log = logging.getLogger(__name__)
dashboard = Blueprint("dashboard", __name__)
MAX_PROJECTS_SHOWN = 50


def _deps():
    from backend.app import EXTENSION  # the app registers this blueprint: imported late

    return current_app.extensions[EXTENSION]


def _queue_info(deps) -> dict:
    from rq import Worker

    conn = deps.redis()
    return {"workers": len(Worker.all(connection=conn))}


def _links(project_id: int):
    ls_url = _deps().settings.label_studio_url.rstrip("/")
    return {
        "make_live": lambda version: url_for("dashboard.make_live", project_id=project_id, version=version),
        "task": lambda task_id: f"{ls_url}/projects/{project_id}/data?task={int(task_id)}",
        "thumbnail": lambda task_id: url_for(
            "dashboard.task_thumbnail", project_id=project_id, task_id=task_id
        ),
    }


def _projects(conn) -> list[int]:
    return training_state.known_projects(conn)[-MAX_PROJECTS_SHOWN:]


def _html_response(body: str, nonce: str, status: int = 200):
    response = current_app.response_class(body, status=status, mimetype="text/html")
    response.headers["Content-Security-Policy"] = (
        f"default-src 'self'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; "
        "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'"
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@dashboard.before_app_request
def browsers_at_the_root_go_to_the_page():
    """A person who opens the backend's URL (the one Label Studio's Model page shows) gets the
    dashboard; Label Studio and other clients asking for JSON still get /'s JSON."""
    if (
        request.method == "GET"
        and request.path == "/"
        and "text/html" in request.headers.get("Accept", "")
        and request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html"
    ):
        return redirect(url_for("dashboard.page"), 302)
    return None


@dashboard.route("/dashboard", methods=["GET"])
def page():
    deps = _deps()
    nonce = secrets.token_urlsafe(16)
    try:
        conn = deps.redis()
        queue_info = _queue_info(deps)
        views = [project_view(deps.settings, deps.store, conn, pid, queue_info) for pid in _projects(conn)]
    except Exception as exc:  # Redis down: say so in words
        log.warning("dashboard: %s", exc)
        body = dashboard_html.page_html(
            [],
            _links,
            "",
            nonce,
            [
                f"The queue (Redis) cannot be reached: {type(exc).__name__}. Rounds neither start "
                "nor report progress until it is back; check REDIS_URL and the Redis service."
            ],
        )
        return _html_response(body, nonce, 503)
    notices = [request.args["message"][:300]] if request.args.get("message") else []
    body = dashboard_html.page_html(views, _links, url_for("dashboard.progress"), nonce, notices)
    return _html_response(body, nonce)


@dashboard.route("/dashboard/progress.json", methods=["GET"])
def progress():
    """Each project's round in progress, as data and as the page's HTML fragment."""
    deps = _deps()
    conn = deps.redis()
    out = {}
    for pid in _projects(conn):
        record = training_state.get_status(conn, pid)
        view = {
            "running": round_in_progress(record),
            "queued_job_id": record.get("queued_job_id"),
            "next_automatic_round": record.get("next_automatic_round"),
        }
        out[str(pid)] = {
            **view,
            "html": dashboard_html.round_html(view),
            "state": record.get("state"),
            "phase": record.get("phase"),
        }
    return jsonify({"projects": out})


@dashboard.route("/dashboard/projects/<int:project_id>/tasks/<int:task_id>/thumbnail", methods=["GET"])
def task_thumbnail(project_id: int, task_id: int):
    """A task's image, small, from the rounds' image cache (404 when it is not cached)."""
    deps = _deps()
    data = thumbnail(deps.settings, deps.redis(), project_id, task_id)
    if data is None:
        return jsonify({"status": "error", "error": "no cached image for this task"}), 404
    response = current_app.response_class(data, mimetype="image/jpeg")
    response.headers["Cache-Control"] = "private, max-age=300"
    return response


def _same_origin() -> bool:
    """A browser names the page a POST comes from (Origin, else Referer); it must be this host.
    A client that sends neither (curl, a script) is no browser led by another site."""
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if not origin:
        return True
    return urlsplit(origin).netloc == request.host


@dashboard.route("/dashboard/projects/<int:project_id>/versions/<version>/make-live", methods=["POST"])
def make_live(project_id: int, version: str):
    """Queue re-publishing a stored version (no retraining); refused with the reason."""
    deps = _deps()
    if not _same_origin():
        return jsonify({"status": "error", "error": "cross-site request refused"}), 403
    if not is_own_version(version):
        return jsonify({"status": "error", "error": f"{version!r} is not a version"}), 404
    try:
        job_id = rollback.request_rollback(deps.settings, deps.redis(), deps.store, project_id, version)
    except rollback.RollbackRefused as exc:
        return _answer(409, {"status": "refused", "error": str(exc)})
    return _answer(
        202,
        {
            "status": "queued",
            "job_id": job_id,
            "message": f"{version} will be live once its predictions are back in "
            f"Label Studio (job {job_id}).",
        },
    )


def _answer(status: int, body: dict):
    """JSON for the page's script and API clients; a plain form post goes back to the page."""
    if request.headers.get("X-Requested-With") or "json" in request.headers.get("Accept", ""):
        return jsonify(body), status
    return redirect(url_for("dashboard.page", message=body.get("message") or body.get("error")), 303)
