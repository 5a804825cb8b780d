"""How long the dashboard takes to answer on a large project: one project with ``--versions``
rounds in its history (each with its accuracy estimate over folds, its prospective accuracy and
seconds per phase), the newest ``KEEP_MODEL_VERSIONS`` of them kept on disk, and a live version
whose stored predictions cover ``--tasks`` tasks.

A real Redis (the embedded redis-server) and the backend's app served over HTTP on a loopback
port (werkzeug's threaded server, one process, like one gunicorn worker); the page is asked
``--repeats`` times after a first request, which parses the live version's predictions file
(once per web process). Nothing calls Label Studio: the page never does.

    scripts/python.sh benchmarks/dashboard_render.py --versions 50 --tasks 100000
Writes ``benchmarks/results/dashboard-render.json`` and ``dashboard-render.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

from backend import embedded_redis, round_history, training_state
from backend.app import create_app
from backend.converters import TaskPrediction
from backend.dashboard_data import VERSIONS_SHOWN
from backend.model_store import ModelStore
from backend.rounds.predictions import first_tasks
from backend.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]

RESULTS = REPO_ROOT / "benchmarks" / "results"
PROJECT = 1
KEPT = 5  # KEEP_MODEL_VERSIONS' default: the versions whose files stay on disk


def version_name(n: int) -> str:
    return f"al-20260101-{n // 3600:02d}{n // 60 % 60:02d}{n % 60:02d}-abcdef"


def history_entry(n: int, versions: int) -> dict:
    """A trained round's history entry as a round records it (round_history.entry_from_summary)."""
    folds = [round(0.5 + n / (2 * versions) + d, 4) for d in (-0.03, 0.0, 0.04)]
    return {
        "state": "done",
        "model_version": version_name(n),
        "reason": "annotations",
        "strategy": "margin_diverse",
        "annotations_used": 20 * (n + 1),
        "annotated_tasks": 20 * (n + 1),
        "tasks": 100_000,
        "predictions_pushed": 100_000,
        "metrics": {"mode": "frozen", "train_acc": 0.97, "lpm_spearman": 0.31},
        "accuracy": {
            "mean": round(statistics.fmean(folds), 4),
            "std": round(statistics.stdev(folds), 4),
            "folds": folds,
            "kind": "3-fold cross-validated linear probe",
        },
        "prospective": (
            {
                "version": version_name(n - 1),
                "since_annotation": 20 * n,
                "tasks": 20,
                "correct": 11,
                "preselected": 8,
                "preselected_correct": 7,
            }
            if n
            else None
        ),
        "timings_s": {
            "list_tasks_s": 2.1,
            "download_train_s": 0.4,
            "features_s": 3.0,
            "train_s": 5.2,
            "score_s": 1.1,
            "push_s": 95.0,
            "total_s": 107.0,
        },
        "images": {"skipped_tasks": 3, "reasons": {"HTTPError 404": 3}},
        "job_id": f"train-p1-{n}",
        "duration_s": 107.0,
        "finished_at": training_state.iso(1_767_225_600 + 600 * n),
        "finished_ts": 1_767_225_600 + 600 * n,
    }


def fill(conn, store: ModelStore, versions: int, tasks: int, first_tasks_kept: bool) -> None:
    """The project's history, its kept versions' files and the live version's predictions,
    published as a round publishes it (its first tasks kept with the pointer) or, without
    ``first_tasks_kept``, as a version published before they were kept."""
    conn.sadd(training_state.projects_key(), PROJECT)
    for n in range(versions):
        round_history.record(conn, PROJECT, history_entry(n, versions))
    for n in range(max(0, versions - KEPT), versions):
        version = version_name(n)
        path = store.checkpoint_path(PROJECT, version)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not read by the page")
        predictions = [
            (
                tid,
                TaskPrediction(
                    "cat" if tid % 2 else "dog", 0.5 + (tid % 50) / 100, ((tid * 7919) % tasks) / tasks
                ),
            )
            for tid in range(1, tasks + 1)
        ]
        store.save_predictions(
            PROJECT, version, predictions, strategy="margin_diverse", annotation_watermark=20 * (n + 1)
        )
    store.publish(
        PROJECT,
        version_name(versions - 1),
        info={"first_tasks": first_tasks(predictions)} if first_tasks_kept else {},
    )


def measure(url: str, repeats: int, versions: int) -> dict:
    started = time.perf_counter()
    first = requests.get(url, timeout=120)
    first.raise_for_status()
    shown = first.text.count('<tr data-version="')
    if shown != versions or first.text.count('class="point-accuracy"') != versions:
        raise SystemExit(f"the page shows {shown} versions, not {versions}")
    first_s = time.perf_counter() - started
    took = []
    for _ in range(repeats):
        started = time.perf_counter()
        answer = requests.get(url, timeout=60)
        answer.raise_for_status()
        took.append(time.perf_counter() - started)
    took.sort()
    return {
        "first_ms": round(first_s * 1000, 1),
        "min_ms": round(took[0] * 1000, 1),
        "median_ms": round(statistics.median(took) * 1000, 1),
        "p95_ms": round(took[min(len(took) - 1, int(0.95 * len(took)))] * 1000, 1),
        "max_ms": round(took[-1] * 1000, 1),
        "page_bytes": len(answer.content),
        "repeats": repeats,
    }


def report(result: dict) -> str:
    r = result
    return "\n".join(
        [
            "# Dashboard render time",
            "",
            f"One project, {r['versions']} versions in its history ({KEPT} kept on disk), a live "
            f"version with {r['tasks']:,} stored predictions; the page over HTTP on loopback, "
            f"asked {r['repeats']} times after a first request. {r['host']}. The live version's "
            + (
                "first tasks kept with the published pointer, as a round publishes it."
                if r["first_tasks_kept"]
                else "pointer without its first tasks (published before "
                "they were kept): the first request parses its predictions file."
            ),
            "",
            "| first request | min | median | p95 | max | page size |",
            "|---|---|---|---|---|---|",
            f"| {r['first_ms']} ms | {r['min_ms']} ms | {r['median_ms']} ms | {r['p95_ms']} ms | "
            f"{r['max_ms']} ms | {r['page_bytes'] / 1024:.0f} KiB |",
            "",
            f"Command: `{r['command']}`",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--versions", type=int, default=50, help="rounds in the history")
    parser.add_argument("--tasks", type=int, default=100_000, help="tasks of the live version")
    parser.add_argument("--repeats", type=int, default=30, help="timed requests")
    parser.add_argument(
        "--host", default="2-core CPU shared with other jobs", help="the machine, in words, for the report"
    )
    parser.add_argument(
        "--without-first-tasks",
        action="store_true",
        help="publish the live version as before its first tasks were kept with "
        "the pointer: the first request parses its predictions",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the reports")
    args = parser.parse_args(argv)
    if args.versions < 1 or args.tasks < 1 or args.repeats < 1:
        parser.error("--versions, --tasks and --repeats must be at least 1")
    import logging
    import threading

    from redis import Redis
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        port = embedded_redis.free_port()
        redis_process = embedded_redis.start(Path(tmp) / "redis", port)
        try:
            conn = Redis(port=port)
            settings = Settings(
                redis_url=f"redis://127.0.0.1:{port}/0",
                model_dir=Path(tmp) / "models",
                keep_model_versions=KEPT,
            )
            store = ModelStore(settings.model_dir, settings.keep_model_versions)
            fill(conn, store, args.versions, args.tasks, not args.without_first_tasks)
            server = make_server("127.0.0.1", 0, create_app(settings, redis_conn=conn), threaded=True)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            try:
                result = measure(
                    f"http://127.0.0.1:{server.server_port}/dashboard",
                    args.repeats,
                    min(args.versions, VERSIONS_SHOWN),
                )
            finally:
                server.shutdown()
        finally:
            redis_process.terminate()
            redis_process.wait(10)
    result.update(
        versions=args.versions,
        tasks=args.tasks,
        host=args.host,
        first_tasks_kept=not args.without_first_tasks,
        command="scripts/python.sh benchmarks/dashboard_render.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    name = "dashboard-render" + ("-without-first-tasks" if args.without_first_tasks else "")
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(report(result))
    print(report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
