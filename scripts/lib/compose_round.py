"""The Label Studio side of scripts/compose_check.py: drive the compose stack's own Label Studio.

Every call goes to the stack through the ports it publishes on the host (Label Studio's, and the
backend's /status on 127.0.0.1). Label Studio itself reaches the backend as http://backend:9090 on
the compose network, exactly as a user connects it. State shared between the steps (project id,
ML backend id, model versions, image labels) is kept in a JSON file, so the check's stages can run
in separate invocations. Each step returns the line the check records, or raises ``CheckFailed``.

  create_pat      log in as the stack's admin: a new personal access token
  first_round     project, images (local files + uploads), connect http://backend:9090, a URL
                  import of a loopback or another compose address refused, annotate, Start
                  Training, wait: every task holds exactly one prediction of the new version
  wait_for_workers  until N RQ workers are registered (after --scale worker=N)
  start_round     annotate more, Start Training, return once a worker is running the round
  finish_round    wait for the round started by start_round; the same checks as first_round
  survived        after down + up: the published model, Redis' training state and the
                  predictions are still there, and the backend serves the model it had
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import requests

from scripts import demo_data
from scripts.lib import lslocal  # the Label Studio harness

DIGITS_CONFIG = demo_data.DIGITS_LABEL_CONFIG
BACKEND_URL_IN_STACK = "http://backend:9090"  # the URL a user types in Label Studio's Model tab
LOCAL_FILES_ROOT_IN_STACK = "/label-studio/files"
LOCAL_SUBDIR = "compose-check-digits"
N_LOCAL, N_UPLOADED = 50, 10  # tasks from local files / from uploads
FIRST_ANNOTATIONS, MORE_ANNOTATIONS = 20, 10
POLL_S = 2.0


class CheckFailed(AssertionError):
    pass


@dataclass(frozen=True)
class Stack:
    """Where the running stack answers, and the check's files on the host."""

    ls_url: str
    backend_url: str
    pat: str
    state: Path  # the JSON file shared by the steps
    work: Path  # scratch folder (the uploaded images)
    local_files: Path  # host folder the stack mounts at /label-studio/files
    round_timeout_s: float = 900.0


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _save(path: Path, state: dict) -> None:
    path.write_text(json.dumps(state, indent=1, sort_keys=True))


def _wait_for(check, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except requests.RequestException as exc:  # a container being (re)started
            value, last = None, exc
        if value:
            return value
        time.sleep(POLL_S)
    raise CheckFailed(
        f"timed out after {timeout_s:.0f} s waiting for {what}" + (f" (last error: {last})" if last else "")
    )


def backend_status(backend_url: str) -> dict:
    response = requests.get(f"{backend_url}/status", timeout=10)
    response.raise_for_status()
    return response.json()


def project_status(backend_url: str, project_id: int) -> dict:
    return backend_status(backend_url).get("projects", {}).get(str(project_id), {})


def wait_for_new_version(
    backend_url: str, project_id: int, not_version: str | None, timeout_s: float
) -> dict:
    def done():
        status = project_status(backend_url, project_id)
        if status.get("state") == "failed":
            raise CheckFailed(f"the round failed: {status.get('error')}")
        if (
            status.get("state") == "done"
            and status.get("model_version") not in (None, not_version)
            and not status.get("running_job_id")
        ):
            return status
        return None

    return _wait_for(done, timeout_s, f"a model version newer than {not_version}")


def check_every_task_holds(admin: lslocal.LabelStudioAdmin, project_id: int, version: str) -> int:
    """Every task holds exactly one prediction of ``version``; the project uses it. Returns the count."""
    tasks = admin.list_tasks(project_id)
    per_task = Counter(
        p["task"] for p in admin.list_predictions(project_id=project_id) if p.get("model_version") == version
    )
    wrong = {t["id"]: per_task.get(t["id"], 0) for t in tasks if per_task.get(t["id"], 0) != 1}
    if wrong:
        raise CheckFailed(
            f"{len(wrong)} of {len(tasks)} tasks do not hold exactly one prediction of "
            f"{version}: {dict(list(wrong.items())[:10])}"
        )
    project = admin.get_project(project_id)
    if project.get("model_version") != version:
        raise CheckFailed(f"the project uses {project.get('model_version')!r}, not {version!r}")
    return len(tasks)


def _annotate(admin, state: dict, count: int) -> int:
    """Annotate ``count`` not yet annotated tasks, classes round-robin (like an annotator would)."""
    labels = state["labels"]
    done = set(state.setdefault("annotated", []))
    by_label: dict[str, list[int]] = {}
    for task in admin.list_tasks(state["project_id"]):
        if task["id"] not in done:
            by_label.setdefault(labels[_image_key(task)], []).append(task["id"])
    picked: list[tuple[int, str]] = []
    while len(picked) < count and any(by_label.values()):
        for label in sorted(by_label):
            if by_label[label] and len(picked) < count:
                picked.append((by_label[label].pop(0), label))
    for task_id, label in picked:
        admin.create_annotation(task_id, lslocal.choice_annotation("digit", "image", label))
        state["annotated"].append(task_id)
    return len(picked)


def _image_key(task: dict) -> str:
    """The file name a task's image came from (uploads are renamed <8 hex>-<name>)."""
    ref = task["data"]["image"]
    name = ref.rsplit("/", 1)[-1].rsplit("=", 1)[-1]
    return name.split("-", 1)[1] if "/data/upload/" in ref else name


# ------------------------------------------------------------------------------------------------
# sub-commands


def create_pat(ls_url: str, email: str, password: str) -> str:
    return lslocal.create_personal_access_token(ls_url, email, password)


def first_round(args: Stack) -> str:
    admin = lslocal.LabelStudioAdmin(args.ls_url, args.pat)
    state: dict = {}
    project = admin.create_project("Compose check", DIGITS_CONFIG)
    pid = state["project_id"] = project["id"]

    # images Label Studio serves as local files: written into the folder the stack mounts
    local_dir = Path(args.local_files) / LOCAL_SUBDIR
    rendered = demo_data.render_digits("digits", local_dir, N_LOCAL, seed=0)
    uploaded = demo_data.render_digits("digits", Path(args.work) / "uploads", N_UPLOADED, seed=1)
    state["labels"] = {Path(p).name: label for p, label in rendered}
    state["labels"].update({Path(p).name: label for p, label in uploaded})
    storage = admin.request(
        "POST",
        "/api/storages/localfiles",
        json={
            "project": pid,
            "title": "compose check",
            "path": f"{LOCAL_FILES_ROOT_IN_STACK}/{LOCAL_SUBDIR}",
            "regex_filter": r".*\.png",
            "use_blob_urls": True,
        },
    ).json()
    admin.request("POST", f"/api/storages/localfiles/{storage['id']}/sync")
    _wait_for(lambda: len(admin.list_tasks(pid)) >= N_LOCAL, 120, "the local-files sync")
    admin.import_images(pid, [p for p, _ in uploaded])
    tasks = admin.list_tasks(pid)
    kinds = Counter("local" if "/data/local-files/" in t["data"]["image"] else "upload" for t in tasks)
    if kinds != Counter(local=N_LOCAL, upload=N_UPLOADED):
        raise CheckFailed(f"expected {N_LOCAL} local-file and {N_UPLOADED} uploaded tasks, got {kinds}")

    # connect as a user does: Label Studio calls http://backend:9090/health and /setup itself
    ml = admin.add_ml_backend(pid, BACKEND_URL_IN_STACK, title="Active learning")
    state["ml_id"] = ml["id"]
    ml = admin.get_ml_backend(ml["id"])
    if ml.get("state") not in ("CO", "Connected"):
        raise CheckFailed(f"Label Studio could not connect {BACKEND_URL_IN_STACK}: {ml}")
    check_url_imports_refused(admin, pid)

    state["annotated"] = []
    _annotate(admin, state, FIRST_ANNOTATIONS)
    _save(Path(args.state), state)
    return _round(admin, args, state, previous=None)


# Addresses a Label Studio user must not make Label Studio fetch: its own loopback and the other
# services on the compose network (Redis answers no HTTP, but must not be reachable at all).
REFUSED_IMPORT_URLS = ("http://127.0.0.1:8080/api/version", "http://redis:6379/")


def check_url_imports_refused(admin: lslocal.LabelStudioAdmin, project_id: int) -> None:
    """With SSRF protection on and only the backend let through, a URL import of a loopback or
    another compose address is refused before Label Studio connects anywhere."""
    for url in REFUSED_IMPORT_URLS:
        answer = admin.request(
            "POST", f"/api/projects/{project_id}/import", data={"url": url}, expected=tuple(range(200, 600))
        )
        if answer.status_code < 400 or "reserved network address" not in answer.text:
            raise CheckFailed(
                f"Label Studio imported from {url} (SSRF protection): "
                f"{answer.status_code} {answer.text[:300]}"
            )


def _round(admin, args: Stack, state: dict, previous: str | None, started_at: float | None = None) -> str:
    pid = state["project_id"]
    if started_at is None:
        started_at = time.monotonic()
        admin.start_training(state["ml_id"])  # the UI's Start Training (LS -> /webhook)
    status = wait_for_new_version(args.backend_url, pid, previous, args.round_timeout_s)
    seconds = time.monotonic() - started_at
    version = status["model_version"]
    if status.get("annotations_used") != len(state["annotated"]):
        raise CheckFailed(
            f"the round used {status.get('annotations_used')} annotations, "
            f"{len(state['annotated'])} were made"
        )
    count = check_every_task_holds(admin, pid, version)
    ml = admin.get_ml_backend(state["ml_id"])
    if ml.get("state") not in ("CO", "Connected"):
        raise CheckFailed(
            f"the ML backend's state in Label Studio is {ml.get('state')}: {ml.get('error_message')}"
        )
    state.setdefault("versions", []).append(version)
    _save(Path(args.state), state)
    return (
        f"round: {version} on {count} tasks in {seconds:.0f} s (Start Training to the last "
        f"prediction); summary {status.get('last_summary')}"
    )


def wait_for_workers(backend_url: str, count: int, timeout_s: float = 300.0) -> str:
    def enough():
        body = backend_status(backend_url)
        return body if body.get("workers") == count else None

    _wait_for(enough, timeout_s, f"{count} registered RQ workers")
    return f"workers: {count} registered"


def start_round(args: Stack) -> str:
    admin = lslocal.LabelStudioAdmin(args.ls_url, args.pat)
    state = _load(Path(args.state))
    _annotate(admin, state, MORE_ANNOTATIONS)
    state["round_started_at"] = time.time()
    _save(Path(args.state), state)
    admin.start_training(state["ml_id"])

    def running():
        status = project_status(args.backend_url, state["project_id"])
        return status if status.get("state") == "running" and status.get("running_job_id") else None

    status = _wait_for(running, args.round_timeout_s, "a worker to start the round")
    state["interrupted_job_id"] = status["running_job_id"]
    _save(Path(args.state), state)
    return f"round running: job {status['running_job_id']}, phase {status.get('phase')}"


def finish_round(args: Stack) -> str:
    """After `compose restart worker` mid-round: the round ends with a new version, either because
    it finished within the workers' stop grace period, or, as docs/deployment.md says of a longer one,
    because it was cut off, recorded as failed, and Start Training pressed again trains anew."""
    admin = lslocal.LabelStudioAdmin(args.ls_url, args.pat)
    state = _load(Path(args.state))
    previous = state["versions"][-1]
    interrupted = state.get("interrupted_job_id")
    started = time.monotonic()

    def outcome():
        status = project_status(args.backend_url, state["project_id"])
        if (
            status.get("state") == "done"
            and status.get("model_version") not in (None, previous)
            and not status.get("running_job_id")
        ):
            return "finished", status
        if status.get("state") == "failed":
            return "failed", status
        return None

    what, status = _wait_for(
        outcome, args.round_timeout_s, "the interrupted round to finish or be recorded as failed"
    )
    waited = time.monotonic() - started
    if what == "finished":
        note = f"the interrupted round finished within the stop grace period ({waited:.0f} s)"
        round_started = time.monotonic() - (time.time() - state["round_started_at"])
        line = _round(admin, args, state, previous=previous, started_at=round_started)
    else:
        note = (
            f"job {interrupted} was cut off and recorded as failed {waited:.0f} s after the "
            f"restart ({status.get('error')}); Start Training pressed again"
        )
        line = _round(admin, args, state, previous=previous)
    return f"{line}; {note}"


def survived(args: Stack) -> str:
    admin = lslocal.LabelStudioAdmin(args.ls_url, args.pat)
    state = _load(Path(args.state))
    pid, version = state["project_id"], state["versions"][-1]
    status = _wait_for(
        lambda: project_status(args.backend_url, pid),
        120,
        "the backend's status of the project (Redis state)",
    )
    problems = []
    if status.get("model_version") != version:
        problems.append(f"Redis' training state says {status.get('model_version')!r}, not {version!r}")
    if status.get("published_version") != version:
        problems.append(f"the models volume publishes {status.get('published_version')!r}, not {version!r}")
    if status.get("annotations_used") != len(state["annotated"]):
        problems.append(f"Redis' state lost the round's annotation count: {status}")
    if problems:
        raise CheckFailed("; ".join(problems))
    check_every_task_holds(admin, pid, version)
    # the backend answers /predict with the model it loads from the volume
    task = admin.list_tasks(pid)[0]
    response = requests.post(
        f"{args.backend_url}/predict",
        json={"tasks": [task], "project": f"{pid}.0", "label_config": DIGITS_CONFIG},
        timeout=120,
    )
    response.raise_for_status()
    served = response.json()["results"][0]["model_version"]
    if served != version:
        raise CheckFailed(f"after down + up /predict serves {served!r}, not {version!r}")
    return f"survived: {version} published, Redis state and {len(state['annotated'])} annotations kept"
