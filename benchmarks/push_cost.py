"""What pushing N predictions into a real Label Studio 1.23.2 costs, per chunk size, with and
without the feature flag of its memory-efficient prediction import.

For each flag setting one Label Studio is started on a loopback port (scripts/lib/lslocal); for each
(project size N, chunk size) a fresh project of N tasks gets N predictions through the backend's
own push (``backend.prediction_push.push_predictions``). Recorded: the push's seconds, requests,
and the first and last request's seconds (a stock Label Studio recounts every task of the
project per request, so the requests grow slower as the project fills).

    scripts/python.sh benchmarks/push_cost.py --sizes 2000,5000 --chunks 500,5000
Writes ``benchmarks/results/push-cost.md`` and ``push-cost.json``.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path

from backend.ls_client import LabelStudioClient
from backend.prediction_push import push_predictions
from scripts.lib import lslocal

REPO_ROOT = Path(__file__).resolve().parents[1]

LABEL_CONFIG = """<View><Image name="image" value="$image"/>
<Choices name="label" toName="image" choice="single"><Choice value="a"/><Choice value="b"/>
</Choices></View>"""
EMAIL = "bench@example.com"
TASK_IMPORT_CHUNK = 5000
RESULTS = REPO_ROOT / "benchmarks" / "results"


class TimedClient(LabelStudioClient):
    """The backend's client, remembering how long each import request took."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.import_s: list[float] = []

    def import_predictions(self, project_id, predictions):
        started = time.monotonic()
        try:
            return super().import_predictions(project_id, predictions)
        finally:
            self.import_s.append(time.monotonic() - started)


def payload(task_ids: list[int], version: str) -> list[dict]:
    return [
        {
            "task": t,
            "model_version": version,
            "score": i / len(task_ids),
            "result": [
                {
                    "from_name": "label",
                    "to_name": "image",
                    "type": "choices",
                    "value": {"choices": ["a" if i % 2 else "b"]},
                }
            ],
        }
        for i, t in enumerate(task_ids)
    ]


def make_project(admin, n_tasks: int) -> tuple[int, list[int]]:
    project = admin.create_project(f"push cost {n_tasks} {secrets.token_hex(3)}", LABEL_CONFIG)
    ids: list[int] = []
    for start in range(0, n_tasks, TASK_IMPORT_CHUNK):
        count = min(TASK_IMPORT_CHUNK, n_tasks - start)
        ids += admin.import_tasks(
            project["id"], [{"data": {"image": f"/img/{start + i}.png"}} for i in range(count)]
        )
    return project["id"], ids


def measure(flag: bool, sizes: list[int], chunks: list[int], venv: Path) -> list[dict]:
    rows = []
    password = "bench-" + secrets.token_urlsafe(10)
    with tempfile.TemporaryDirectory() as data_dir:
        server = lslocal.start_label_studio(
            venv,
            Path(data_dir),
            lslocal.free_port(),
            EMAIL,
            password,
            extra_env={lslocal.PREDICTIONS_IMPORT_FLAG: "true" if flag else "false"},
        )
        try:
            token = lslocal.create_personal_access_token(server.url, EMAIL, password)
            admin = lslocal.LabelStudioAdmin(server.url, token, timeout_s=600)
            for n_tasks in sizes:
                for chunk in chunks:
                    project_id, ids = make_project(admin, n_tasks)
                    client = TimedClient(server.url, token, bulk_timeout_s=1800)
                    started = time.monotonic()
                    report = push_predictions(client, project_id, payload(ids, "bench-v1"), "bench-v1", chunk)
                    seconds = time.monotonic() - started
                    assert report.created == n_tasks, report
                    row = {
                        "flag": flag,
                        "tasks": n_tasks,
                        "chunk": chunk,
                        "requests": report.requests,
                        "push_s": round(seconds, 1),
                        "ms_per_prediction": round(1000 * seconds / n_tasks, 2),
                        "first_request_s": round(client.import_s[0], 2),
                        "last_request_s": round(client.import_s[-1], 2),
                    }
                    print(json.dumps(row), flush=True)
                    rows.append(row)
        finally:
            server.stop()
    return rows


def markdown(rows: list[dict], commands: list[str]) -> str:
    measured = " and ".join(f"`{c}`" for c in commands)
    lines = [
        "# Push cost: N predictions into a real Label Studio 1.23.2",
        "",
        f"Measured with {measured} on a shared 2-core machine (one Label Studio per flag "
        "setting, a fresh project per row, no older predictions present).",
        "",
        "| memory-efficient import flag | tasks = predictions | chunk | requests | push s "
        "| ms / prediction | first request s | last request s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {'on' if r['flag'] else 'off (stock)'} | {r['tasks']:,} | {r['chunk']:,} "
            f"| {r['requests']} | {r['push_s']} | {r['ms_per_prediction']} "
            f"| {r['first_request_s']} | {r['last_request_s']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="2000,5000", help="project sizes (tasks), comma-separated")
    parser.add_argument("--chunks", default="500,5000", help="chunk sizes, comma-separated")
    parser.add_argument("--flags", default="off,on", help="flag settings to measure: off,on")
    parser.add_argument("--out", default=str(RESULTS / "push-cost"), help="output path without suffix")
    parser.add_argument(
        "--append",
        action="store_true",
        help="add the rows to those already in OUT.json (the table lists both)",
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    chunks = [int(c) for c in args.chunks.split(",")]
    venv = lslocal.ensure_ls_venv()
    out = Path(args.out)
    rows = json.loads(out.with_suffix(".json").read_text()) if args.append else []
    for flag in args.flags.split(","):
        rows += measure(flag.strip() == "on", sizes, chunks, venv)
    command = "python benchmarks/push_cost.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.append:
        commands = json.loads(out.with_suffix(".commands.json").read_text())
    else:
        commands = []
    commands.append(command.strip())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".commands.json").write_text(json.dumps(commands, indent=1) + "\n")
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    rows.sort(key=lambda r: (r["flag"], r["tasks"], r["chunk"]))
    out.with_suffix(".md").write_text(markdown(rows, commands))
    print(markdown(rows, commands))
    return 0


if __name__ == "__main__":
    sys.exit(main())
