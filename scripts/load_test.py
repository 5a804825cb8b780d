"""Bounded load test on loopback: concurrent /predict calls during a training round plus a
webhook flood, against a real Label Studio and the backend started by scripts/serve.sh.

    scripts/python.sh scripts/load_test.py [--duration-s 30] [--predict-threads 6] [--webhook-threads 2]

Label Studio's own venv is installed on first use (scripts/lib/lslocal), as scripts/test.sh does.

It stops by itself: the load phase lasts --duration-s and every request has a timeout. All
traffic goes to 127.0.0.1. It reports requests, errors (goal 0), p50/p99 latencies, and whether
every webhook event was accounted for (the backend's pending-change counter must equal the number
of events it acknowledged). Results go to benchmarks/results/load/<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

from scripts import demo_data
from scripts.lib import lslocal  # the Label Studio harness

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = demo_data.DIGITS_LABEL_CONFIG
EMAIL, PASSWORD = "load@example.com", "load-test-pw1"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def project_status(url: str, pid: int) -> dict:
    return requests.get(url + "/status", timeout=10).json().get("projects", {}).get(str(pid), {})


def wait_for(check, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration-s", type=float, default=30.0)
    parser.add_argument("--predict-threads", type=int, default=6)
    parser.add_argument("--webhook-threads", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=300, help="tasks scored by the first round")
    parser.add_argument(
        "--new-tasks",
        type=int,
        default=100,
        help="tasks imported after it (so /predict runs the model on them)",
    )
    args = parser.parse_args(argv)
    venv = lslocal.ensure_ls_venv()
    work = Path(tempfile.mkdtemp(prefix="load-test-"))
    ls = lslocal.start_label_studio(venv, work / "ls", lslocal.free_port(), EMAIL, PASSWORD)
    backend = None
    try:
        pat = lslocal.create_personal_access_token(ls.url, EMAIL, PASSWORD)
        port = lslocal.free_port()
        env = {
            **os.environ,
            "LABEL_STUDIO_URL": ls.url,
            "LABEL_STUDIO_API_KEY": pat,
            "MODEL_DIR": str(work / "models"),
            "PORT": str(port),
            "VENV_DIR": sys.prefix,
            "RETRAIN_AFTER_ANNOTATIONS": "0",
            "THREADS": "8",
        }
        env.pop("REDIS_URL", None)
        backend = subprocess.Popen(
            ["bash", str(REPO_ROOT / "scripts/serve.sh")],
            env=env,
            stdout=open(work / "backend.log", "wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _up(url), 120, "the backend")
        admin = lslocal.LabelStudioAdmin(ls.url, pat)
        pid = admin.create_project("Load test", CONFIG)["id"]
        rendered = demo_data.render_digits("digits", work / "img", args.tasks + args.new_tasks, 1)
        admin.import_images(pid, [p for p, _ in rendered[: args.tasks]])
        ml = admin.add_ml_backend(pid, url, title="load test")
        tasks = admin.list_tasks(pid)
        label_of = {p.name: label for p, label in rendered}
        for task in tasks[:60]:
            name = task["data"]["image"].rsplit("/", 1)[-1].split("-", 1)[1]
            admin.create_annotation(task["id"], lslocal.choice_annotation("digit", "image", label_of[name]))
        admin.start_training(ml["id"])
        first = wait_for(
            lambda: (lambda s: s if s.get("state") == "done" else None)(project_status(url, pid)),
            600,
            "the first round",
        )
        print(f"first round: {first['model_version']} in {first.get('duration_s')} s")
        admin.import_images(pid, [p for p, _ in rendered[args.tasks :]])
        all_tasks = admin.list_tasks(pid)
        for task in all_tasks[60:80]:
            name = task["data"]["image"].rsplit("/", 1)[-1].split("-", 1)[1]
            admin.create_annotation(task["id"], lslocal.choice_annotation("digit", "image", label_of[name]))
        admin.start_training(ml["id"])
        wait_for(
            lambda: (
                project_status(url, pid).get("phase") not in (None, "finished", "starting")
                and project_status(url, pid).get("state") == "running"
            ),
            120,
            "round 2 to run",
        )
        baseline = project_status(url, pid).get("pending_annotation_changes", 0)
        report = run_load(url, pid, all_tasks, args)
        second = wait_for(
            lambda: (
                lambda s: (
                    s
                    if s.get("state") in ("done", "failed")
                    and s.get("model_version") != first["model_version"]
                    else None
                )
            )(project_status(url, pid)),
            900,
            "the second round",
        )
        report["second_round"] = {"state": second.get("state"), "duration_s": second.get("duration_s")}
        pending = project_status(url, pid).get("pending_annotation_changes")
        report["webhooks"]["pending_counter_before"] = baseline
        report["webhooks"]["pending_counter_after"] = pending
        report["webhooks"]["all_accounted_for"] = pending - baseline == report["webhooks"]["acknowledged"]
        out = REPO_ROOT / "benchmarks" / "results" / "load"
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
        path.write_text(json.dumps(report, indent=2))
        print(json.dumps(report, indent=2))
        print(f"written to {path}")
        errors = report["predict"]["errors"] + report["webhooks"]["errors"]
        return 0 if errors == 0 and report["webhooks"]["all_accounted_for"] else 1
    finally:
        if backend is not None:
            lslocal.stop_serve(backend)
        ls.stop()


def _up(url: str) -> bool:
    try:
        return requests.get(url + "/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def run_load(url: str, pid: int, tasks: list[dict], args) -> dict:
    stop_at = time.monotonic() + args.duration_s
    lock = threading.Lock()
    predict: dict[str, Any] = {"latencies_s": [], "errors": 0, "status": {}}
    hooks: dict[str, Any] = {"latencies_s": [], "errors": 0, "acknowledged": 0, "status": {}}

    def timed_post(session, path: str, body: dict, timeout_s: float, accept, into: dict) -> None:
        """POST once; record latency, status and whether ``accept(response)`` holds."""
        t0 = time.monotonic()
        try:
            r = session.post(url + path, json=body, timeout=timeout_s)
            code, ok = r.status_code, r.status_code == 200 and accept(r.json())
        except requests.RequestException as exc:
            code, ok = type(exc).__name__, False
        with lock:
            into["latencies_s"].append(time.monotonic() - t0)
            into["status"][str(code)] = into["status"].get(str(code), 0) + 1
            into["errors"] += 0 if ok else 1
            if "acknowledged" in into:
                into["acknowledged"] += 1 if ok else 0

    def predict_loop(seed: int) -> None:
        rng = random.Random(seed)
        with requests.Session() as session:
            while time.monotonic() < stop_at:
                batch = rng.sample(tasks, rng.randint(1, 5))
                expected = len(batch)
                timed_post(
                    session,
                    "/predict",
                    {"tasks": batch, "project": f"{pid}.0", "label_config": CONFIG},
                    60,
                    lambda body, n=expected: len(body["results"]) == n,
                    predict,
                )

    def webhook_loop(seed: int) -> None:
        with requests.Session() as session:
            n = 0
            while time.monotonic() < stop_at:
                n += 1
                timed_post(
                    session,
                    "/webhook",
                    {
                        "action": "ANNOTATION_CREATED",
                        "project": {"id": pid},
                        "annotation": {"id": seed * 10**6 + n},
                    },
                    10,
                    lambda body: body.get("status") == "counted",
                    hooks,
                )

    threads = [threading.Thread(target=predict_loop, args=(i,)) for i in range(args.predict_threads)]
    threads += [threading.Thread(target=webhook_loop, args=(i,)) for i in range(args.webhook_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    summary = {}
    for name, data in (("predict", predict), ("webhooks", hooks)):
        lat = data.pop("latencies_s")
        summary[name] = {
            **data,
            "requests": len(lat),
            "p50_ms": round(1000 * percentile(lat, 0.5), 1),
            "p99_ms": round(1000 * percentile(lat, 0.99), 1),
            "max_ms": round(1000 * max(lat), 1) if lat else None,
            "mean_ms": round(1000 * statistics.fmean(lat), 1) if lat else None,
        }
    summary["config"] = {
        "duration_s": args.duration_s,
        "predict_threads": args.predict_threads,
        "webhook_threads": args.webhook_threads,
        "tasks": len(tasks),
    }
    return summary


if __name__ == "__main__":
    sys.exit(main())
