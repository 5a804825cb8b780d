"""docs/dashboard.png: the dashboard on example data, shot by a headless Debian chromium.

One project with a cold-start ranking and four trained versions (the oldest pruned), each with
its accuracy estimate over 5 folds and the prospective accuracy the next round measured, and a
round in progress; a real (embedded) Redis and the backend's app over HTTP on loopback. The data
is made up for the picture: measured figures are in docs/results.md.

    scripts/python.sh scripts/dashboard_screenshot.py [--out docs/dashboard.png]
"""
from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

from backend import embedded_redis, round_history, training_state
from backend.app import create_app
from backend.converters import TaskPrediction
from backend.model_store import ModelStore
from backend.rounds.predictions import first_tasks
from backend.settings import Settings

PROJECT = 3
START = 1_796_670_000   # 2026-12-07T19:00:00Z: the example's first round
LABELS = ("cat", "dog", "bird")
# (labels used, accuracy per fold, train accuracy, Spearman, prospective: tasks, right)
TRAINED = ((20, (0.50, 0.75, 0.50, 0.75, 0.50), 0.70, 0.38, (20, 8)),
           (40, (0.62, 0.75, 0.62, 0.75, 0.62), 0.83, 0.43, (20, 10)),
           (60, (0.75, 0.67, 0.83, 0.75, 0.67), 0.89, 0.45, (20, 13)),
           (80, (0.81, 0.75, 0.88, 0.81, 0.75), 0.96, 0.47, None))


def version(n: int) -> str:
    return f"al-20261207-{19 + n // 2:02d}{(n % 2) * 30:02d}00-{n:06x}"


def trained_entry(n: int, labels: int, folds: tuple, train: float, spearman: float,
                  measured: tuple | None) -> dict:
    """What round_history records of a trained round (and what the next round measured)."""
    entry = {"state": "done", "model_version": version(n), "annotations_used": labels,
             "metrics": {"mode": "frozen", "train_acc": train, "lpm_spearman": spearman},
             "accuracy": {"mean": round(statistics.fmean(folds), 4),
                          "std": round(statistics.stdev(folds), 4), "folds": list(folds),
                          "kind": "5-fold cross-validated linear probe"},
             "timings_s": {"list_tasks_s": 1.2, "download_train_s": 0.8, "features_s": 2.5,
                           "train_s": 6.1, "score_s": 0.9, "push_s": 3.4, "total_s": 15.2},
             "finished_at": training_state.iso(START + 1800 * n + 900),
             "finished_ts": START + 1800 * n + 900}
    if n > 1:   # the round measured the version before it, live until then
        tasks, right = TRAINED[n - 2][4] or (0, 0)
        entry["prospective"] = {"version": version(n - 1), "tasks": tasks, "correct": right,
                                "preselected": tasks // 2, "preselected_correct": right // 2 + 2}
    return entry


def fill(conn, store: ModelStore) -> None:
    conn.sadd(training_state.projects_key(), PROJECT)
    round_history.record(conn, PROJECT, {
        "state": "cold_start", "model_version": version(0).replace("al-", "coldstart-"),
        "annotations_used": 4, "finished_at": training_state.iso(START + 60),
        "timings_s": {"list_tasks_s": 1.0, "total_s": 12.0}})
    predictions = []
    for n, (labels, folds, train, spearman, measured) in enumerate(TRAINED, start=1):
        round_history.record(conn, PROJECT, trained_entry(n, labels, folds, train, spearman,
                                                          measured))
        if n == 1:
            continue   # pruned: beyond KEEP_MODEL_VERSIONS
        path = store.checkpoint_path(PROJECT, version(n))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"example")
        predictions = [(tid, TaskPrediction(LABELS[tid % 3], 0.4 + (tid % 7) / 20,
                                            round(tid / 400, 4))) for tid in range(1, 361)]
        store.save_predictions(PROJECT, version(n), predictions, strategy="margin_diverse")
    store.publish(PROJECT, version(len(TRAINED)), info={"first_tasks": first_tasks(predictions)})
    lock = training_state.RunLock(conn, PROJECT, "train-p3-example")
    lock.acquire()
    training_state.update_status(
        conn, PROJECT, state="running", phase="training", running_job_id="train-p3-example",
        started_at=training_state.iso(time.time() - 28.8), duration_s=34.0,
        version_in_progress=version(len(TRAINED) + 1),
        training_progress={"step": 220, "steps": 300, "seconds": 7.4})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "dashboard.png")
    parser.add_argument("--size", default="1100,1900", help="window width,height in px")
    args = parser.parse_args(argv)
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        parser.error("no chromium installed (apt-get install chromium)")
    from redis import Redis
    from werkzeug.serving import make_server
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        port = embedded_redis.free_port()
        redis_process = embedded_redis.start(Path(tmp) / "redis", port)
        try:
            settings = Settings(redis_url=f"redis://127.0.0.1:{port}/0", keep_model_versions=3,
                                model_dir=Path(tmp) / "models",
                                label_studio_url="http://127.0.0.1:8080")
            conn = Redis(port=port)
            fill(conn, ModelStore(settings.model_dir, settings.keep_model_versions))
            server = make_server("127.0.0.1", 0, create_app(settings, redis_conn=conn),
                                 threaded=True)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            try:
                subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                                "--hide-scrollbars", f"--window-size={args.size}",
                                f"--screenshot={args.out.resolve()}",
                                f"http://127.0.0.1:{server.server_port}/dashboard"],
                               check=True, capture_output=True, timeout=120)
            finally:
                server.shutdown()
        finally:
            redis_process.terminate()
            redis_process.wait(10)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
