"""The HTTP backend Label Studio talks to: /health, /setup, /predict, /webhook, plus /status.

Handlers only validate, read or enqueue: Label Studio gives /webhook 1 s and never retries, so all
training and scoring happen in the RQ worker. Flask 1.1.2 / Werkzeug 2.0.2 (pinned by
label-studio-ml 1.0.9) are old: the app is served by gunicorn, never the Werkzeug dev server or
debugger, and request bodies are capped (MAX_REQUEST_BYTES).

As in label-studio-ml's own api.py, the routes are module-level functions (of one Blueprint,
``api``); what they work with (settings, model store, Redis connection) is the app's
``AppDependencies`` in ``app.extensions`` (set by ``create_app``) rather than module globals, so
one process can hold several apps (the tests do).
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import time

from flask import Blueprint, Flask, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from backend import event_answers, queueing, task_index, training_state, webhooks
from backend.constants import EventAnswer, PlaceholderVersion, WebhookDecision
from backend.converters import parse_project_id
from backend.dashboard import dashboard
from backend.model_store import ModelStore
from backend.serving import Serving
from backend.settings import Settings
from backend.task_types import UnsupportedConfig, task_type_for

log = logging.getLogger(__name__)
MODEL_CLASS = "ActiveLearningModel"
EXTENSION = "active_learning"  # the key of the app's AppDependencies in app.extensions
api = Blueprint("api", __name__)


def _error(status: int, message: str):
    response = jsonify({"status": "error", "error": message})
    response.status_code = status
    return response


REASON_PHRASE_CHARS = 300  # HTTP reason phrases have no set limit; keep status lines short


def reason_phrase(message: str) -> str:
    """``message`` as an HTTP reason phrase: printable ASCII on one line."""
    text = "".join(c if " " <= c <= "~" else " " for c in str(message)).strip()
    return text[:REASON_PHRASE_CHARS] or "Bad Request"


class _BadRequest(Exception):
    pass


class _TooLarge(Exception):
    pass


def _json_body() -> dict:
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    # read at most limit + 1 bytes: also bounds bodies sent without a Content-Length
    raw = request.stream.read(limit + 1)
    if len(raw) > limit:
        raise _TooLarge()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _BadRequest("request body is not valid JSON") from None
    except RecursionError:  # e.g. [[[[...]]]] nested deeper than the interpreter's stack
        raise _BadRequest("request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise _BadRequest("request body must be a JSON object")
    return body


class AppDependencies:
    """What the routes work with: the settings, the model store, what /predict keeps per
    process (backend.serving) and the Redis connection (made on first use: an app without
    REDIS_URL still starts and answers /health)."""

    def __init__(self, settings: Settings, store: ModelStore, redis_conn=None):
        self.settings, self.store, self._redis = settings, store, redis_conn
        self.serving = Serving(settings, store)

    def redis(self):
        if self._redis is None:
            self._redis = queueing.redis_connection(self.settings)
        return self._redis


def create_app(settings: Settings, store: ModelStore | None = None, redis_conn=None) -> Flask:
    app = Flask("backend")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.config["JSON_SORT_KEYS"] = False
    app.extensions[EXTENSION] = AppDependencies(
        settings, store or ModelStore(settings.model_dir, settings.keep_model_versions), redis_conn
    )
    app.register_blueprint(api)
    app.register_blueprint(dashboard)  # the page for people (/dashboard)
    return app


def _deps() -> AppDependencies:
    """The dependencies of the app serving this request."""
    return current_app.extensions[EXTENSION]


def _basic_auth_ok(settings: Settings) -> bool:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return False
    try:
        user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return False
    # compare both parts in constant time, always both, so timing tells nothing
    ok_user = hmac.compare_digest(user.encode(), settings.basic_auth_user.encode())
    ok_pass = hmac.compare_digest(password.encode(), settings.basic_auth_pass.encode())
    return ok_user and ok_pass


# ----------------------------------------------------------------------------- every request


@api.before_app_request
def limit_size():
    if (request.content_length or 0) > _deps().settings.max_request_bytes:
        return too_large(None)
    return None


@api.before_app_request
def require_auth():
    settings = _deps().settings
    if not settings.basic_auth_enabled or request.path == "/health":
        return None
    if _basic_auth_ok(settings):
        return None
    response = _error(401, "authentication required")
    response.headers["WWW-Authenticate"] = 'Basic realm="active-learning-backend"'
    return response


@api.app_errorhandler(_BadRequest)
def bad_request(exc):
    return _error(400, str(exc))


@api.app_errorhandler(UnsupportedConfig)
def unsupported(exc):
    log.warning("unsupported labeling config: %s", exc)
    message = f"unsupported labeling config: {exc}"
    response = _error(400, message)
    # Label Studio drops the body of a failed /setup and shows only the status line
    # ("400 Client Error: <reason phrase> for url ..."): the reason goes there too
    response.status = f"400 {reason_phrase(message)}"
    return response


@api.app_errorhandler(_TooLarge)
def too_large(_exc):
    return _error(
        413, f"request body larger than MAX_REQUEST_BYTES ({_deps().settings.max_request_bytes} bytes)"
    )


@api.app_errorhandler(HTTPException)
def http_error(exc):
    if exc.code == 413:
        return too_large(exc)
    return _error(exc.code or 500, exc.description or exc.name)


@api.app_errorhandler(Exception)
def unexpected(exc):
    log.exception("unhandled error on %s %s", request.method, request.path)
    return _error(500, f"internal error: {type(exc).__name__}")


# ----------------------------------------------------------------------------- routes


@api.route("/health", methods=["GET"])
@api.route("/", methods=["GET"])
def health():
    # Label Studio gives /health 1 s: answer from memory only.
    return jsonify({"status": "UP", "model_class": MODEL_CLASS, "v2": True, "status_url": "/status"})


@api.route("/status", methods=["GET"])
def status():
    """Queue and per-project training state (docs/operations.md)."""
    deps = _deps()
    settings = deps.settings
    out: dict = {
        "status": "UP",
        "model_class": MODEL_CLASS,
        "strategy": settings.strategy,
        # the network and the weights it starts from (found in the torch hub cache
        # when DISCOVER_WEIGHTS chose them)
        "backbone": settings.backbone,
        "backbone_weights": settings.backbone_weights or None,
        "pretrained_weights": (str(settings.pretrained_weights) if settings.pretrained_weights else None),
        "retrain_after_annotations": settings.retrain_after_annotations,
        "retrain_min_interval_s": settings.retrain_min_interval_s,
        "retrain_duration_factor": settings.retrain_duration_factor,
    }
    try:
        c = deps.redis()
        queue = queueing.training_queue(settings, c)
        out["queue"] = {
            "name": queue.name,
            "queued_jobs": queue.count,
            "started_jobs": queue.started_job_registry.count,
            "failed_jobs": queue.failed_job_registry.count,
        }
        from rq import Worker

        out["workers"] = len(Worker.all(connection=c))
        out["projects"] = {}
        for project_id in training_state.known_projects(c):
            record = training_state.get_status(c, project_id)
            published = deps.store.published(project_id)
            record["published_version"] = published.version if published else None
            out["projects"][str(project_id)] = record
    except Exception as exc:
        out["redis_error"] = f"{type(exc).__name__}: {exc}"
        return jsonify(out), 503
    return jsonify(out)


@api.route("/setup", methods=["POST"])
def setup():
    deps = _deps()
    body = _json_body()
    try:
        project_id = parse_project_id(body.get("project"))
    except ValueError as exc:
        raise _BadRequest(f"/setup needs a project: {exc}") from exc
    schema = task_type_for(body.get("schema"))
    published = deps.store.published(project_id)
    version = published.version if published else PlaceholderVersion.UNTRAINED
    log.info("project %s: setup (labels %s), serving %s", project_id, ",".join(schema.labels), version)
    try:
        deps.redis().sadd(training_state.projects_key(), project_id)
    except Exception as exc:  # setup must not fail because Redis blinked
        log.warning("project %s: could not record setup in Redis: %s", project_id, exc)
    return jsonify({"model_version": version})


@api.route("/predict", methods=["POST"])
def predict():
    deps = _deps()
    started = time.monotonic()
    body = _json_body()
    tasks = body.get("tasks")
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise _BadRequest("/predict needs 'tasks': a list of task objects")
    ids = [t.get("id") for t in tasks]
    # answers are matched to tasks by id: ids must be present, integers and unique
    if not all(type(i) is int for i in ids) or len(set(ids)) != len(ids):
        raise _BadRequest("/predict needs every task to have a unique integer 'id'")
    try:
        project_id = parse_project_id(body.get("project"))
    except ValueError as exc:
        raise _BadRequest(f"/predict needs a project: {exc}") from exc
    # refuse a bad config (UnsupportedConfig -> 400) before LabelStudioMLBase parses it
    task_type_for(body.get("label_config"))
    params = body.get("params")
    from backend.ml_model import ActiveLearningModel  # label_studio_ml: on the first call

    model = ActiveLearningModel(
        label_config=body.get("label_config"),
        project_id=project_id,
        settings=deps.settings,
        store=deps.store,
        serving=deps.serving,
    )
    results = model.predict(tasks, context=params.get("context") if isinstance(params, dict) else None)
    log.info(
        "project %s: /predict %d task(s) with %s in %.2fs",
        project_id,
        len(tasks),
        model.model_version,
        time.monotonic() - started,
    )
    return jsonify({"results": results, "model_version": model.model_version})


@api.route("/webhook", methods=["POST"])
def webhook():
    deps = _deps()
    body = _json_body()
    try:
        decision = webhooks.decide(body)
    except webhooks.BadEvent as exc:
        raise _BadRequest(str(exc)) from exc
    if decision.project_id is not None and decision.action in task_index.EVENTS:
        try:  # the task index follows what the event says; a round re-syncs it anyway
            task_index.apply_webhook(deps.redis(), decision.project_id, body)
        except Exception as exc:  # Redis down: the next round's sync catches up
            log.warning(
                "project %s: %s not applied to the task index: %s", decision.project_id, decision.action, exc
            )
    if decision.action == webhooks.PROJECT_UPDATED and isinstance(body.get("project"), dict):
        change = _retrain_on_config_change(deps, decision, body["project"])
        if change is not None:
            return jsonify(
                {
                    "status": EventAnswer.QUEUED,
                    "reason": "labeling config changed",
                    "labeling_config_change": change,
                }
            )
    if decision.kind == WebhookDecision.IGNORE:
        log.info("webhook %s (project %s) ignored: %s", decision.action, decision.project_id, decision.reason)
        return jsonify({"status": EventAnswer.IGNORED, "action": decision.action, "reason": decision.reason})
    if decision.kind == WebhookDecision.TRAIN:
        refusal = event_answers.unsupported_config(body.get("project"))
        if refusal is not None:
            log.info("webhook %s for project %s ignored: %s", decision.action, decision.project_id, refusal)
            return jsonify({"status": EventAnswer.IGNORED, "reason": f"unsupported config: {refusal}"})
    try:
        return jsonify(event_answers.answer_training_event(deps.settings, deps.redis(), decision))
    except Exception as exc:  # Redis down: answer fast and loud; state is reconciled later
        log.error("webhook %s for project %s not recorded: %s", decision.action, decision.project_id, exc)
        return _error(503, f"event not recorded, queue unavailable: {type(exc).__name__}")


def _retrain_on_config_change(
    deps: AppDependencies, decision: webhooks.Decision, project: dict
) -> dict | None:
    """A changed labeling config retrains at once (the reconciler would catch it later); the
    backend's own model_version PATCH leaves the config alone, so this never loops."""
    if decision.project_id is None:  # events without a project are answered before this
        return None
    try:
        from backend.reconcile import retrain_on_config_change

        return retrain_on_config_change(deps.settings, deps.redis(), decision.project_id, project, "webhook")
    except Exception as exc:  # Redis down: the reconciler catches the change later
        log.warning("project %s: config change check failed: %s", decision.project_id, exc)
        return None


@api.route("/train", methods=["POST"])
def train_legacy():
    """Label Studio < 1.4.1 called /train; treat it like Start Training."""
    deps = _deps()
    body = _json_body()
    body = {"action": webhooks.START_TRAINING, "project": body.get("project")}
    decision = webhooks.decide(body)
    if decision.project_id is None:
        raise _BadRequest("/train needs a project")
    return jsonify(event_answers.answer_training_event(deps.settings, deps.redis(), decision)), 201


@api.route("/versions", methods=["GET", "POST"])
def versions():
    raw = request.args.get("project") or ((request.get_json(silent=True) or {}).get("project"))
    try:
        project_id = parse_project_id(raw)
    except ValueError as exc:
        raise _BadRequest("/versions needs ?project=<id>") from exc
    return jsonify({"versions": _deps().store.versions(project_id)})


@api.route("/metrics", methods=["GET"])
def metrics():
    return jsonify({})
