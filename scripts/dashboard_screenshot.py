"""The dashboard's screenshots, shot by a headless Debian chromium: from real rounds (``--real``:
docs/dashboard.png and docs/dashboard-round.png) or from example data (the default).

``--real`` starts a real Label Studio 1.23.2 (scripts/lib/lslocal) and the backend through
scripts/serve.sh, as the demo does (scripts/demo.py), makes a project from the demo's synthetic
shapes, labels tasks with their true class as an annotator would (the first round's labels in
the order of the task list, each next round's in the order Label Studio serves them, the pushed
ranking), presses Start Training for each round, shoots the page while the last round trains
(``--round-out``) and once it is published (``--out``). Settings are kept small so a round takes
a minute or two on a CPU (``REAL_SETTINGS``; the environment overrides them). Everything lives in
a temporary folder removed at the end.

    scripts/python.sh scripts/dashboard_screenshot.py --real     # about 15 minutes on 2 CPU cores

Without ``--real``: one project with a cold-start ranking and four trained versions (the oldest
pruned), each with its accuracy estimate over 5 folds and the prospective accuracy the next
round measured, and a round in progress; a real (embedded) Redis and the backend's app over HTTP
on loopback. The data is made up for the picture: measured figures are in docs/results.md.

    scripts/python.sh scripts/dashboard_screenshot.py --out docs/dashboard-example.png
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from backend import embedded_redis, round_history, training_state
from backend.app import create_app
from backend.converters import TaskPrediction
from backend.dashboard_data import phase_progress
from backend.model_store import ModelStore
from backend.rounds.predictions import first_tasks
from backend.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]

PROJECT = 3
START = 1_796_670_000  # 2026-12-07T19:00:00Z: the example's first round
LABELS = ("cat", "dog", "bird")
# (labels used, accuracy per fold, train accuracy, Spearman, prospective: tasks, right)
TRAINED = (
    (20, (0.50, 0.75, 0.50, 0.75, 0.50), 0.70, 0.38, (20, 8)),
    (40, (0.62, 0.75, 0.62, 0.75, 0.62), 0.83, 0.43, (20, 10)),
    (60, (0.75, 0.67, 0.83, 0.75, 0.67), 0.89, 0.45, (20, 13)),
    (80, (0.81, 0.75, 0.88, 0.81, 0.75), 0.96, 0.47, None),
)


def version(n: int) -> str:
    return f"al-20261207-{19 + n // 2:02d}{(n % 2) * 30:02d}00-{n:06x}"


def trained_entry(
    n: int, labels: int, folds: tuple, train: float, spearman: float, measured: tuple | None
) -> dict:
    """What round_history records of a trained round (and what the next round measured)."""
    entry = {
        "state": "done",
        "model_version": version(n),
        "annotations_used": labels,
        "metrics": {"mode": "frozen", "train_acc": train, "lpm_spearman": spearman},
        "accuracy": {
            "mean": round(statistics.fmean(folds), 4),
            "std": round(statistics.stdev(folds), 4),
            "folds": list(folds),
            "kind": "5-fold cross-validated linear probe",
        },
        "timings_s": {
            "list_tasks_s": 1.2,
            "download_train_s": 0.8,
            "features_s": 2.5,
            "train_s": 6.1,
            "score_s": 0.9,
            "push_s": 3.4,
            "total_s": 15.2,
        },
        "finished_at": training_state.iso(START + 1800 * n + 900),
        "finished_ts": START + 1800 * n + 900,
    }
    if n > 1:  # the round measured the version before it, live until then
        tasks, right = TRAINED[n - 2][4] or (0, 0)
        entry["prospective"] = {
            "version": version(n - 1),
            "tasks": tasks,
            "correct": right,
            "preselected": tasks // 2,
            "preselected_correct": right // 2 + 2,
        }
    return entry


def fill(conn, store: ModelStore) -> None:
    conn.sadd(training_state.projects_key(), PROJECT)
    round_history.record(
        conn,
        PROJECT,
        {
            "state": "cold_start",
            "model_version": version(0).replace("al-", "coldstart-"),
            "annotations_used": 4,
            "finished_at": training_state.iso(START + 60),
            "timings_s": {"list_tasks_s": 1.0, "total_s": 12.0},
        },
    )
    predictions = []
    for n, (labels, folds, train, spearman, measured) in enumerate(TRAINED, start=1):
        round_history.record(conn, PROJECT, trained_entry(n, labels, folds, train, spearman, measured))
        if n == 1:
            continue  # pruned: beyond KEEP_MODEL_VERSIONS
        path = store.checkpoint_path(PROJECT, version(n))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"example")
        predictions = [
            (tid, TaskPrediction(LABELS[tid % 3], 0.4 + (tid % 7) / 20, round(tid / 400, 4)))
            for tid in range(1, 361)
        ]
        store.save_predictions(PROJECT, version(n), predictions, strategy="margin_diverse")
    store.publish(PROJECT, version(len(TRAINED)), info={"first_tasks": first_tasks(predictions)})
    lock = training_state.RunLock(conn, PROJECT, "train-p3-example")
    lock.acquire()
    training_state.update_status(
        conn,
        PROJECT,
        state="running",
        phase="training",
        running_job_id="train-p3-example",
        started_at=training_state.iso(time.time() - 28.8),
        duration_s=34.0,
        version_in_progress=version(len(TRAINED) + 1),
        training_progress={"step": 220, "steps": 300, "seconds": 7.4},
    )


# small enough that a round takes a minute or two on a CPU; the caption in the README names them
REAL_SETTINGS = {
    "SELF_SUPERVISED_STEPS": "150",
    "TRAIN_STEPS": "150",
    "RETRAIN_AFTER_ANNOTATIONS": "0",
    "RECONCILE_INTERVAL_S": "0",
    "SET_UNCERTAINTY_SAMPLING": "true",
}
REAL_SOURCE = "shapes"


def shoot(browser: str, url: str, out: Path, size: str) -> None:
    """A screenshot of ``url`` at ``size``, the page's empty bottom cut off, stored small."""
    from PIL import Image

    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size={size}",
            f"--screenshot={out.resolve()}",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    with Image.open(out) as shot:
        image = shot.convert("RGB")
    background = image.getpixel((image.width - 1, image.height - 1))
    rows = [
        y
        for y in range(image.height)
        if any(image.getpixel((x, y)) != background for x in range(0, image.width, 4))
    ]
    if rows:
        image = image.crop((0, 0, image.width, min(image.height, rows[-1] + 24)))
    # a 256-colour palette keeps text and thumbnails legible at a fraction of the bytes
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)


def wait_for_round(
    backend_url: str,
    admin,
    project_id: int,
    labeled: int,
    after: str | None,
    timeout_s: float,
    while_running=None,
) -> str:
    """Wait until a version trained on ``labeled`` labels (other than ``after``) is live in Label
    Studio; calls ``while_running(record)`` on each poll meanwhile. The version."""
    import requests

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = (
            requests.get(backend_url + "/status", timeout=10)
            .json()
            .get("projects", {})
            .get(str(project_id), {})
        )
        if record.get("state") == "failed":
            raise SystemExit(f"the round failed: {record.get('error')}")
        live = admin.get_project(project_id).get("model_version")
        if (
            record.get("state") == "done"
            and live
            and live != after
            and live == record.get("published_version")
            and record.get("labels", {}).get("labeled", 0) >= labeled
        ):
            return str(live)
        if while_running is not None and record.get("state") == "running":
            while_running(record)
        time.sleep(0.5)
    raise SystemExit(f"no round on {labeled} labels within {timeout_s:.0f} s")


def real(args, browser: str) -> int:
    """Real rounds in a real Label Studio, then the screenshots (see the module's docstring)."""
    from types import SimpleNamespace

    from scripts import demo
    from scripts.lib import lslocal

    for name, value in REAL_SETTINGS.items():
        os.environ.setdefault(name, value)
    os.environ.pop("REDIS_URL", None)  # the backend's own embedded Redis
    # stopped with SIGTERM, still stop Label Studio and the backend (the finally below)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        email, password = "admin@example.com", f"shot-{secrets.token_urlsafe(9)}"
        venv = lslocal.ensure_ls_venv()
        ls = lslocal.start_label_studio(
            venv, data_dir / "label-studio", lslocal.free_port(), email, password, local_files_root=data_dir
        )
        backend = None
        try:
            token = lslocal.create_personal_access_token(ls.url, email, password)
            options = SimpleNamespace(backend_port=lslocal.free_port(), count=args.count, seed=0)
            backend = demo.start_backend(options, ls.url, token, data_dir)
            backend_url = f"http://127.0.0.1:{options.backend_port}"
            admin = lslocal.LabelStudioAdmin(ls.url, token)
            project, ml = demo.ensure_project(admin, options, REAL_SOURCE, data_dir)
            pid = project["id"]
            manifest = data_dir / "images" / f"{REAL_SOURCE}-labels.csv"
            truth = dict(line.split(",") for line in manifest.read_text().splitlines()[1:])
            choice = demo.CHOICE_NAMES[REAL_SOURCE]

            def label(task: dict) -> None:
                name = task["data"]["image"].rsplit("/", 1)[-1].split("-", 1)[1]
                admin.create_annotation(task["id"], lslocal.choice_annotation(choice, "image", truth[name]))

            tasks = admin.list_tasks(pid)
            live = None
            labeled = 0
            shot_round = False
            for n, count in enumerate(args.labels):
                while labeled < count:
                    # the first round's labels in task order; later ones as Label Studio serves
                    task = admin.next_task(pid) if live else tasks[labeled]
                    if task is None:
                        break
                    label(task)
                    labeled += 1
                last = n == len(args.labels) - 1
                print(f"{labeled} labels; Start Training", flush=True)
                admin.start_training(ml["id"])

                def during(record: dict, last: bool = last) -> None:
                    nonlocal shot_round
                    # the training bar as the page shows it, once it is well under way
                    fraction = phase_progress(record, "training")["fraction"]
                    if (
                        last
                        and not shot_round
                        and record.get("phase") == "training"
                        and fraction is not None
                        and fraction >= 0.4
                    ):
                        shoot(browser, f"{backend_url}/dashboard", args.round_out, args.size)
                        shot_round = True
                        print(f"wrote {args.round_out}", flush=True)

                live = wait_for_round(backend_url, admin, pid, labeled, live, args.wait_s, during)
                print(f"{live} live", flush=True)
            shoot(browser, f"{backend_url}/dashboard", args.out, args.size)
            print(f"wrote {args.out}")
            if not shot_round:
                print("the last round finished before its training could be shot", flush=True)
        finally:
            if backend is not None:
                lslocal.stop_serve(backend)
            ls.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--real", action="store_true", help="real rounds in a real Label Studio instead of example data"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the page (default: docs/dashboard.png with --real, else docs/dashboard-example.png)",
    )
    parser.add_argument(
        "--round-out",
        type=Path,
        default=REPO_ROOT / "docs" / "dashboard-round.png",
        help="--real: the page while the last round trains",
    )
    parser.add_argument(
        "--labels",
        type=int,
        nargs="+",
        default=[20, 40, 60],
        help="--real: labels before each round's Start Training",
    )
    parser.add_argument("--count", type=int, default=300, help="--real: images in the project")
    parser.add_argument("--wait-s", type=float, default=1200, help="--real: seconds per round")
    parser.add_argument(
        "--size",
        default=None,
        help="window width,height in px (default: 1100,1900; 1100,3600 with --real, "
        "the page's empty bottom cut off)",
    )
    args = parser.parse_args(argv)
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        parser.error("no chromium installed (apt-get install chromium)")
    if args.size is None:
        args.size = "1100,3600" if args.real else "1100,1900"
    if args.out is None:
        args.out = REPO_ROOT / "docs" / ("dashboard.png" if args.real else "dashboard-example.png")
    if args.real:
        return real(args, browser)
    from redis import Redis
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        port = embedded_redis.free_port()
        redis_process = embedded_redis.start(Path(tmp) / "redis", port)
        try:
            settings = Settings(
                redis_url=f"redis://127.0.0.1:{port}/0",
                keep_model_versions=3,
                model_dir=Path(tmp) / "models",
                label_studio_url="http://127.0.0.1:8080",
            )
            conn = Redis(port=port)
            fill(conn, ModelStore(settings.model_dir, settings.keep_model_versions))
            server = make_server("127.0.0.1", 0, create_app(settings, redis_conn=conn), threaded=True)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            try:
                subprocess.run(
                    [
                        browser,
                        "--headless",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--hide-scrollbars",
                        f"--window-size={args.size}",
                        f"--screenshot={args.out.resolve()}",
                        f"http://127.0.0.1:{server.server_port}/dashboard",
                    ],
                    check=True,
                    capture_output=True,
                    timeout=120,
                )
            finally:
                server.shutdown()
        finally:
            redis_process.terminate()
            redis_process.wait(10)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
