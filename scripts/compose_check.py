"""The Label Studio side of scripts/compose_check.sh: drive the compose stack's own Label Studio.

Every call goes to the stack through the ports it publishes on the host (Label Studio's, and the
backend's /status on 127.0.0.1). Label Studio itself reaches the backend as http://backend:9090 on
the compose network, exactly as a user connects it. State shared between the sub-commands (project
id, ML backend id, model versions, image labels) is kept in a JSON file.

  pat          log in as the stack's admin and print a new personal access token
  first-round  project, images (local files + uploads), connect http://backend:9090, a URL
               import of a loopback or another compose address refused, annotate, Start
               Training, wait: every task holds exactly one prediction of the new version
  workers N    wait until N RQ workers are registered (after --scale worker=N)
  start-round  annotate more, Start Training, return once a worker is running the round
  finish-round wait for the round started by start-round; the same checks as first-round
  survived     after down + up: the published model, Redis' training state and the predictions
               are still there, and the backend serves the model it had
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import requests

from scripts import demo_data
from scripts.lib import lslocal  # the Label Studio harness

DIGITS_CONFIG = demo_data.DIGITS_LABEL_CONFIG
BACKEND_URL_IN_STACK = "http://backend:9090"   # the URL a user types in Label Studio's Model tab
LOCAL_FILES_ROOT_IN_STACK = "/label-studio/files"
LOCAL_SUBDIR = "compose-check-digits"
N_LOCAL, N_UPLOADED = 50, 10                   # tasks from local files / from uploads
FIRST_ANNOTATIONS, MORE_ANNOTATIONS = 20, 10
POLL_S = 2.0


class CheckFailed(AssertionError):
    pass


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
        except requests.RequestException as exc:   # a container being (re)started
            value, last = None, exc
        if value:
            return value
        time.sleep(POLL_S)
    raise CheckFailed(f"timed out after {timeout_s:.0f} s waiting for {what}" +
                      (f" (last error: {last})" if last else ""))


def backend_status(backend_url: str) -> dict:
    response = requests.get(f"{backend_url}/status", timeout=10)
    response.raise_for_status()
    return response.json()


def project_status(backend_url: str, project_id: int) -> dict:
    return backend_status(backend_url).get("projects", {}).get(str(project_id), {})


def wait_for_new_version(backend_url: str, project_id: int, not_version: str | None,
                         timeout_s: float) -> dict:
    def done():
        status = project_status(backend_url, project_id)
        if status.get("state") == "failed":
            raise CheckFailed(f"the round failed: {status.get('error')}")
        if (status.get("state") == "done" and status.get("model_version") not in (None, not_version)
                and not status.get("running_job_id")):
            return status
        return None
    return _wait_for(done, timeout_s, f"a model version newer than {not_version}")


def check_every_task_holds(admin: lslocal.LabelStudioAdmin, project_id: int, version: str) -> int:
    """Every task holds exactly one prediction of ``version``; the project uses it. Returns the count."""
    tasks = admin.list_tasks(project_id)
    per_task = Counter(p["task"] for p in admin.list_predictions(project_id=project_id)
                       if p.get("model_version") == version)
    wrong = {t["id"]: per_task.get(t["id"], 0) for t in tasks if per_task.get(t["id"], 0) != 1}
    if wrong:
        raise CheckFailed(f"{len(wrong)} of {len(tasks)} tasks do not hold exactly one prediction of "
                          f"{version}: {dict(list(wrong.items())[:10])}")
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

def cmd_pat(args) -> None:
    print(lslocal.create_personal_access_token(args.ls_url, args.email, args.password))


def cmd_first_round(args) -> None:
    admin = lslocal.LabelStudioAdmin(args.ls_url, args.pat)
    state = {}
    project = admin.create_project("Compose check", DIGITS_CONFIG)
    pid = state["project_id"] = project["id"]

    # images Label Studio serves as local files: written into the folder the stack mounts
    local_dir = Path(args.local_files) / LOCAL_SUBDIR
    rendered = demo_data.render_digits("digits", local_dir, N_LOCAL, seed=0)
    uploaded = demo_data.render_digits("digits", Path(args.work) / "uploads", N_UPLOADED, seed=1)
    state["labels"] = {Path(p).name: label for p, label in rendered}
    state["labels"].update({Path(p).name: label for p, label in uploaded})
    storage = admin.request("POST", "/api/storages/localfiles", json={
        "project": pid, "title": "compose check", "path": f"{LOCAL_FILES_ROOT_IN_STACK}/{LOCAL_SUBDIR}",
        "regex_filter": r".*\.png", "use_blob_urls": True}).json()
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
    _round(admin, args, state, previous=None)


# Addresses a Label Studio user must not make Label Studio fetch: its own loopback and the other
# services on the compose network (Redis answers no HTTP, but must not be reachable at all).
REFUSED_IMPORT_URLS = ("http://127.0.0.1:8080/api/version", "http://redis:6379/")


def check_url_imports_refused(admin: lslocal.LabelStudioAdmin, project_id: int) -> None:
    """With SSRF protection on and only the backend let through, a URL import of a loopback or
    another compose address is refused before Label Studio connects anywhere."""
    for url in REFUSED_IMPORT_URLS:
        answer = admin.request("POST", f"/api/projects/{project_id}/import", data={"url": url},
                               expected=tuple(range(200, 600)))
        if answer.status_code < 400 or "reserved network address" not in answer.text:
            raise CheckFailed(f"Label Studio imported from {url} (SSRF protection): "
                              f"{answer.status_code} {answer.text[:300]}")


def _round(admin, args, state: dict, previous: str | None, started_at: float | None = None) -> None:
    pid = state["project_id"]
    if started_at is None:
        started_at = time.monotonic()
        admin.start_training(state["ml_id"])   # the UI's Start Training (LS -> /webhook)
    status = wait_for_new_version(args.backend_url, pid, previous, args.round_timeout_s)
    seconds = time.monotonic() - started_at
    version = status["model_version"]
    if status.get("annotations_used") != len(state["annotated"]):
        raise CheckFailed(f"the round used {status.get('annotations_used')} annotations, "
                          f"{len(state['annotated'])} were made")
    count = check_every_task_holds(admin, pid, version)
    ml = admin.get_ml_backend(state["ml_id"])
    if ml.get("state") not in ("CO", "Connected"):
        raise CheckFailed(f"the ML backend's state in Label Studio is {ml.get('state')}: "
                          f"{ml.get('error_message')}")
    state.setdefault("versions", []).append(version)
    _save(Path(args.state), state)
    print(f"round: {version} on {count} tasks in {seconds:.0f} s (Start Training to the last "
          f"prediction); summary {status.get('last_summary')}")


def cmd_workers(args) -> None:
    def enough():
        body = backend_status(args.backend_url)
        return body if body.get("workers") == args.count else None
    _wait_for(enough, args.timeout_s, f"{args.count} registered RQ workers")
    print(f"workers: {args.count} registered")


def cmd_start_round(args) -> None:
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
    print(f"round running: job {status['running_job_id']}, phase {status.get('phase')}")


def cmd_finish_round(args) -> None:
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
        if (status.get("state") == "done" and status.get("model_version") not in (None, previous)
                and not status.get("running_job_id")):
            return "finished", status
        if status.get("state") == "failed":
            return "failed", status
        return None
    what, status = _wait_for(outcome, args.round_timeout_s,
                             "the interrupted round to finish or be recorded as failed")
    waited = time.monotonic() - started
    if what == "finished":
        note = f"the interrupted round finished within the stop grace period ({waited:.0f} s)"
        round_started = time.monotonic() - (time.time() - state["round_started_at"])
        _round(admin, args, state, previous=previous, started_at=round_started)
    else:
        note = (f"job {interrupted} was cut off and recorded as failed {waited:.0f} s after the "
                f"restart ({status.get('error')}); Start Training pressed again")
        _round(admin, args, state, previous=previous)
    print(note)


def cmd_survived(args) -> None:
    admin = lslocal.LabelStudioAdmin(args.ls_url, args.pat)
    state = _load(Path(args.state))
    pid, version = state["project_id"], state["versions"][-1]
    status = _wait_for(lambda: project_status(args.backend_url, pid), 120,
                       "the backend's status of the project (Redis state)")
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
    response = requests.post(f"{args.backend_url}/predict", json={
        "tasks": [task], "project": f"{pid}.0", "label_config": DIGITS_CONFIG}, timeout=120)
    response.raise_for_status()
    served = response.json()["results"][0]["model_version"]
    if served != version:
        raise CheckFailed(f"after down + up /predict serves {served!r}, not {version!r}")
    print(f"survived: {version} published, Redis state and {len(state['annotated'])} annotations kept")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("command", choices=["pat", "first-round", "workers", "start-round",
                                            "finish-round", "survived"])
    parser.add_argument("--ls-url", required=True)
    parser.add_argument("--backend-url", default="http://127.0.0.1:9090")
    parser.add_argument("--email")
    parser.add_argument("--password", default=os.environ.get("COMPOSE_CHECK_PASSWORD"),
                        help="the admin's password (default: $COMPOSE_CHECK_PASSWORD)")
    parser.add_argument("--pat", default=os.environ.get("COMPOSE_CHECK_PAT"),
                        help="personal access token (default: $COMPOSE_CHECK_PAT)")
    parser.add_argument("--state", help="JSON file shared by the sub-commands")
    parser.add_argument("--work", help="scratch folder")
    parser.add_argument("--local-files", help="host folder the stack mounts at /label-studio/files")
    parser.add_argument("--count", type=int, default=1, help="workers: how many")
    parser.add_argument("--timeout-s", type=float, default=300.0, help="workers: longest wait (s)")
    parser.add_argument("--round-timeout-s", type=float, default=900.0,
                        help="longest wait for a training round (s)")
    args = parser.parse_args(argv)
    commands = {"pat": cmd_pat, "first-round": cmd_first_round, "workers": cmd_workers,
                "start-round": cmd_start_round, "finish-round": cmd_finish_round,
                "survived": cmd_survived}
    try:
        commands[args.command](args)
    except (CheckFailed, lslocal.LabelStudioError) as exc:
        print(f"FAILED ({args.command}): {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
