"""Faults during a round, injected into real processes: does a round ever publish part of a ranking?

Every scenario runs against a real Label Studio 1.23.2 (``scripts/lib/lslocal``), a real Redis
(``backend.embedded_redis``) and a real RQ worker (``python -m backend.worker``, the process
``scripts/serve.sh`` runs), all on loopback; a round is requested as Start Training requests it
(``backend.queueing.request_training``). Task images are small PNG digits Label Studio serves as
local files over HTTP (``/data/local-files/?d=...``), so every image of a round goes through
Label Studio. The scenarios (issue "Partial failures never publish a partial ranking"):

``ls-down``
    A first round on ``--tasks`` tasks (default 10,000) with 40 labels. Once the round has scored
    ``--inject-after-scored`` images, Label Studio is killed (its whole process group) and started
    again ``--outage-s`` seconds later on the same port and database (``--outage stop`` freezes it
    with SIGSTOP / SIGCONT instead). The round and, when it was held back, its automatic retry
    (``HELD_BACK_RETRY_S``) are followed to their end.
``disk-full``
    The worker runs in a mount namespace of its own (``unshare --user --map-root-user --mount``)
    where ``MODEL_DIR`` and the image cache lie on a tmpfs of ``--disk-mb`` MiB. A first round
    publishes a version; ``--new-tasks`` tasks are added; during the second round's scoring a
    file fills the tmpfs until the kernel answers ENOSPC. Then the file is deleted and a third
    round shows the project recovers.
``lock-deleted``
    A cold start (no labels) learns the project's self-supervised weights after pushing its pixel
    ranking; while it pre-trains, the project's run-lock key is deleted from Redis.

Recorded per scenario: what was injected and when (seconds after the round was requested, the
phase and progress the round reported), each round's end state with its reason, the version live
in Label Studio and in the backend's store before and after, how many pool tasks carry a scored
prediction of each version in Label Studio against the pool size, the verdict (previous version
live, complete new version live, or PARTIAL) and the wall time.

    nice -n 19 scripts/python.sh benchmarks/fault_injection.py

Writes ``benchmarks/results/fault-injection.json`` (``--out``). A benchmark, not a test; it exits
with status 1 when a scenario ends with a partial version live.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis

from backend import embedded_redis, queueing, training_state
from backend.model_store import ModelStore
from backend.rounds.score import SCORE_CHUNK_IMAGES
from backend.settings import Settings
from scripts import benchmark_scale
from scripts.lib import lslocal

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "results"
SCENARIOS = ("ls-down", "disk-full", "lock-deleted")
EMAIL = "faults@example.com"
LABELS = 40  # annotated tasks of a trained round
TERMINAL_STATES = ("done", "cold_start", "skipped", "held_back", "failed")
POLL_S = 0.25
ROUND_TIMEOUT_S = 3600
WORKER_STOP_S = 60
# every worker: no reconciler, no automatic round but the held-back retry, small and fast training
WORKER_ENV = {
    "RECONCILE_INTERVAL_S": "0",
    "RETRAIN_AFTER_ANNOTATIONS": "0",
    "RETRAIN_MIN_INTERVAL_S": "0",
    "RETRAIN_DURATION_FACTOR": "0",
    "TRAIN_STEPS": "30",
    "SELF_SUPERVISED_STEPS": "0",
    "HELD_BACK_RETRY_S": "90",
    "LOG_LEVEL": "INFO",
}
COLD_START_ENV = {"SELF_SUPERVISED_STEPS": "20"}  # lock-deleted: a cold start that pre-trains


# ============================================================================ pure parts


def coverage(predictions: list[dict], pool_ids: list[int]) -> dict[str, int]:
    """Per model version: how many of ``pool_ids`` hold a prediction of it with a score."""
    pool = set(pool_ids)
    tasks: dict[str, set[int]] = {}
    for prediction in predictions:
        if prediction.get("task") in pool and prediction.get("score") is not None:
            tasks.setdefault(str(prediction.get("model_version")), set()).add(prediction["task"])
    return {version: len(ids) for version, ids in sorted(tasks.items())}


def verdict(
    live_before: str | None, live_after: str | None, scored_after: dict[str, int], pool_size: int
) -> str:
    """What annotators are left with: the version live before, a new one that scores every pool
    task, or a PARTIAL one."""
    if (live_after or None) == (live_before or None):
        return "previous version live"
    if live_after and scored_after.get(live_after, 0) == pool_size:
        return "complete new version live"
    return "PARTIAL new version live"


def fill_until_full(directory: Path, chunk_bytes: int = 1 << 20) -> dict:
    """Write zeros into ``directory``/filler until the filesystem refuses (ENOSPC expected);
    returns the bytes written and the error's name."""
    path, written, error = directory / "filler", 0, "none"
    block = b"\0" * chunk_bytes
    with open(path, "wb", buffering=0) as handle:
        while True:
            try:
                written += handle.write(block)
            except OSError as exc:
                error = errno.errorcode.get(exc.errno or 0, str(exc.errno))
                # the last partial block: the filesystem may take some bytes of it
                small = b"\0" * 4096
                while True:
                    try:
                        written += handle.write(small)
                    except OSError:
                        break
                break
    return {"file": path.name, "bytes": written, "error": error}


def temp_files(directory: Path) -> list[str]:
    """Temp files of unfinished atomic writes under ``directory`` (dot files ending in .tmp, and
    the image cache's dot files): what a failed write must not leave behind."""
    return sorted(str(path.relative_to(directory)) for path in directory.rglob(".*") if path.is_file())


def count_lines(path: Path, needle: str, after_line: int = 0) -> int:
    """Lines of the log at ``path`` past its first ``after_line`` lines that hold ``needle``."""
    lines = path.read_text(errors="replace").splitlines()[after_line:]
    return sum(1 for line in lines if needle in line)


def markdown(report: dict) -> str:
    """One row per scenario: injection, end states, versions live, coverage, verdict."""
    lines = [
        "| scenario | injected | rounds (state: reason) | live before → after | "
        "pool tasks scored by the live version | verdict | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in report["scenarios"]:
        rounds = "; ".join(
            f"{r['state']}" + (f": {r['reason'][:90]}" if r.get("reason") else "") for r in run["rounds"]
        )
        live = run["live_after"] or "none"
        scored = run["scored_after"].get(live, 0) if run["live_after"] else 0
        lines.append(
            f"| {run['scenario']} | {run['injected']['what']} at "
            f"{run['injected']['at_s']} s ({run['injected']['phase']}) | {rounds} | "
            f"{run['live_before'] or 'none'} → {live} | {scored:,} / "
            f"{run['pool_size']:,} | {run['verdict']} | {run['wall_s']} |"
        )
    return "\n".join(lines) + "\n"


# ============================================================================ processes


@dataclass
class Stack:
    """Label Studio, its admin client and Redis, shared by the scenarios."""

    venv: Path
    work: Path
    ls: lslocal.LabelStudioProcess
    admin: lslocal.LabelStudioAdmin
    token: str
    password: str
    redis: subprocess.Popen
    redis_url: str
    conn: Redis
    images: list[tuple[str, str]] = field(default_factory=list)

    def restart_label_studio(self) -> None:
        self.ls = lslocal.start_label_studio(
            self.venv,
            self.ls.data_dir,
            self.ls.port,
            EMAIL,
            self.password,
            local_files_root=self.work / "local-files",
        )


def start_stack(work: Path, n_images: int) -> Stack:
    venv = lslocal.ensure_ls_venv()
    lslocal.ensure_db_template(venv)
    password = "faults-" + secrets.token_urlsafe(10)
    images = benchmark_scale.digit_images(
        "digits", n_images, work / "local-files" / benchmark_scale.IMAGE_SUBDIR
    )
    ls = lslocal.start_label_studio(
        venv,
        work / "label-studio",
        lslocal.free_port(),
        EMAIL,
        password,
        local_files_root=work / "local-files",
    )
    token = lslocal.create_personal_access_token(ls.url, EMAIL, password)
    admin = lslocal.LabelStudioAdmin(ls.url, token, timeout_s=600)
    port = lslocal.free_port()
    redis = embedded_redis.start(work / "redis", port)
    redis_url = f"redis://127.0.0.1:{port}/0"
    return Stack(venv, work, ls, admin, token, password, redis, redis_url, Redis.from_url(redis_url), images)


def start_worker(
    stack: Stack, name: str, extra_env: dict, tmpfs_mb: int = 0
) -> tuple[subprocess.Popen, Path]:
    """``python -m backend.worker`` for one scenario; with ``tmpfs_mb`` in a mount namespace of
    its own whose MODEL_DIR (and image cache beside it) lie on a tmpfs of that size. Returns the
    process and the MODEL_DIR as the worker sees it."""
    base = stack.work / name
    base.mkdir(parents=True, exist_ok=True)
    model_dir = base / "disk" / "models"
    env = {
        **os.environ,
        **WORKER_ENV,
        **extra_env,
        "LABEL_STUDIO_URL": stack.ls.url,
        "LABEL_STUDIO_API_KEY": stack.token,
        "REDIS_URL": stack.redis_url,
        "MODEL_DIR": str(model_dir),
        "QUEUE_NAME": f"faults-{name}",
        "PYTHONPATH": str(REPO_ROOT),
    }
    command = [sys.executable, "-m", "backend.worker"]
    if tmpfs_mb:
        mount = base / "disk"
        mount.mkdir(parents=True, exist_ok=True)
        command = [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            f'mount -t tmpfs -o size={int(tmpfs_mb)}m faults "$0" && exec "$@"',
            str(mount),
            *command,
        ]
    log = open(base / "worker.log", "ab")
    process = subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, start_new_session=True
    )
    log.close()
    time.sleep(3)
    if process.poll() is not None:
        raise RuntimeError(f"the worker exited:\n{(base / 'worker.log').read_text()[-3000:]}")
    return process, model_dir


def stop_worker(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(WORKER_STOP_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)


def seen_from(worker: subprocess.Popen, path: Path, namespaced: bool) -> Path:
    """``path`` as the worker sees it (through /proc/<pid>/root in its mount namespace)."""
    return Path(f"/proc/{worker.pid}/root{path}") if namespaced else path


# ============================================================================ observing


def live_versions(stack: Stack, project_id: int, model_dir: Path) -> dict:
    """The version Label Studio's project points at, and the one the backend's store serves."""
    published = ModelStore(model_dir, 1000).published(project_id)
    return {
        "label_studio": stack.admin.get_project(project_id).get("model_version") or None,
        "store": published.version if published else None,
    }


def scored(stack: Stack, project_id: int, pool_ids: list[int]) -> dict[str, int]:
    return coverage(stack.admin.list_predictions(project_id=project_id), pool_ids)


def round_record(status: dict, requested: float) -> dict:
    summary = status.get("last_summary") or {}
    reason = status.get("error") if status.get("state") == "failed" else summary.get("reason")
    return {
        "job_id": status.get("job_id"),
        "state": status.get("state"),
        "reason": reason,
        "model_version": status.get("model_version"),
        "ended_at_s": round(time.monotonic() - requested, 1),
        "images": summary.get("images"),
        "timings_s": summary.get("timings_s"),
        "next_automatic_round": status.get("next_automatic_round"),
        "last_lost_lock": status.get("last_lost_lock"),
    }


def follow(
    stack: Stack,
    project_id: int,
    requested: float,
    tick: Callable[[dict], None],
    finished: Callable[[list[dict]], bool],
) -> list[dict]:
    """Poll the project's status until ``finished(rounds)``; ``tick(status)`` at every poll
    injects the fault when its moment has come."""
    rounds: list[dict] = []
    last = training_state.get_status(stack.conn, project_id)
    seen: set = {(last.get("job_id"), last.get("finished_at"))}  # an earlier round's end
    deadline = time.monotonic() + ROUND_TIMEOUT_S
    while time.monotonic() < deadline:
        status = training_state.get_status(stack.conn, project_id)
        tick(status)
        key = (status.get("job_id"), status.get("finished_at"))
        if (
            status.get("state") in TERMINAL_STATES
            and status.get("phase") in ("finished", "failed")
            and status.get("job_id")
            and key not in seen
        ):
            seen.add(key)
            rounds.append(round_record(status, requested))
            print(
                json.dumps(
                    {
                        "round": rounds[-1]["state"],
                        "reason": rounds[-1]["reason"],
                        "at_s": rounds[-1]["ended_at_s"],
                    }
                ),
                flush=True,
            )
            if finished(rounds):
                return rounds
        time.sleep(POLL_S)
    raise RuntimeError(f"no end within {ROUND_TIMEOUT_S} s: {rounds}")


def request_round(stack: Stack, worker_queue: str, project_id: int) -> float:
    settings = Settings.from_env({"REDIS_URL": stack.redis_url, "QUEUE_NAME": worker_queue})
    queueing.request_training(settings, stack.conn, project_id, "fault injection")
    return time.monotonic()


PROGRESS_FIELDS = {
    "scoring": "scoring_progress",
    "cold_start_ranking": "scoring_progress",
    "self_supervised_pretraining": "self_supervised_progress",
    "extracting_features": "feature_progress",
    "training": "training_progress",
}


def progress_of(status: dict) -> dict | None:
    """The progress the round reported for its current phase (None when it has not yet)."""
    name = PROGRESS_FIELDS.get(str(status.get("phase")))
    return status.get(name) if name else None


class Injector:
    """Fires ``action`` once, at the first status for which ``when`` holds; remembers when."""

    def __init__(
        self,
        what: str,
        when: Callable[[dict], bool],
        action: Callable[[], dict],
        pool_size: int | None = None,
    ):
        """``pool_size``: a progress of another total is an earlier round's, not recorded."""
        self.what, self.when, self.action = what, when, action
        self.pool_size = pool_size
        self.record: dict | None = None
        self.requested = time.monotonic()

    def __call__(self, status: dict) -> None:
        if self.record is None and self.when(status):
            at = round(time.monotonic() - self.requested, 1)
            progress = progress_of(status)
            if progress and self.pool_size and progress.get("total") != self.pool_size:
                progress = None
            self.record = {
                "what": self.what,
                "at_s": at,
                "phase": status.get("phase"),
                "progress": progress,
                **self.action(),
            }
            print(json.dumps({"injected": self.record}), flush=True)


def labelled_project(stack: Stack, n_tasks: int, n_labels: int) -> tuple[int, list[int]]:
    images_dir = stack.work / "local-files" / benchmark_scale.IMAGE_SUBDIR
    started = time.monotonic()
    project_id, ids = benchmark_scale.make_project(stack.admin, stack.images[:n_tasks], images_dir)
    print(f"project {project_id}: {n_tasks} tasks imported in {time.monotonic() - started:.1f} s", flush=True)
    label_of = {tid: label for tid, (_, label) in zip(ids, stack.images, strict=False)}
    benchmark_scale.annotate(stack.admin, ids[:n_labels], label_of)
    return project_id, ids


def finish(
    name: str,
    stack: Stack,
    project_id: int,
    pool_ids: list[int],
    before: dict,
    after: dict,
    injected: dict,
    rounds: list[dict],
    started: float,
    **extra,
) -> dict:
    scored_after = scored(stack, project_id, pool_ids)
    result = {
        "scenario": name,
        "project_id": project_id,
        "pool_size": len(pool_ids),
        "injected": injected,
        "rounds": rounds,
        "live_before": before["label_studio"],
        "live_after": after["label_studio"],
        "store_before": before["store"],
        "store_after": after["store"],
        "scored_before": before.get("scored", {}),
        "scored_after": scored_after,
        "verdict": verdict(before["label_studio"], after["label_studio"], scored_after, len(pool_ids)),
        "store_agrees_with_label_studio": after["store"] == after["label_studio"],
        "wall_s": round(time.monotonic() - started, 1),
        **extra,
    }
    print(
        json.dumps(
            {
                k: result[k]
                for k in (
                    "scenario",
                    "verdict",
                    "live_before",
                    "live_after",
                    "scored_after",
                    "pool_size",
                    "wall_s",
                )
            }
        ),
        flush=True,
    )
    return result


# ============================================================================ scenarios


def ls_down(stack: Stack, n_tasks: int, outage: str, outage_s: float, after_scored: int) -> dict:
    started = time.monotonic()
    project_id, ids = labelled_project(stack, n_tasks, LABELS)
    worker, model_dir = start_worker(stack, "ls-down", {})
    try:
        before = {**live_versions(stack, project_id, model_dir), "scored": {}}
        down: dict = {}

        def take_down() -> dict:
            down["since"] = time.monotonic()
            if outage == "stop":
                os.killpg(stack.ls.process.pid, signal.SIGSTOP)
            else:
                stack.ls.stop()
            return {"outage": outage, "planned_s": outage_s}

        injector = Injector(
            f"Label Studio {'frozen (SIGSTOP)' if outage == 'stop' else 'killed'} for {outage_s:g} s",
            lambda st: (
                st.get("phase") == "scoring"
                and (st.get("scoring_progress") or {}).get("done", 0) >= after_scored
            ),
            take_down,
        )

        def tick(status: dict) -> None:
            injector(status)
            if "since" in down and "back" not in down and time.monotonic() - down["since"] >= outage_s:
                if outage == "stop":
                    os.killpg(stack.ls.process.pid, signal.SIGCONT)
                else:
                    stack.restart_label_studio()
                down["back"] = time.monotonic()
                injector.record = {
                    **(injector.record or {}),
                    "down_s": round(down["back"] - down["since"], 1),
                }
                print(json.dumps({"label_studio_back_after_s": injector.record["down_s"]}), flush=True)

        injector.requested = request_round(stack, "faults-ls-down", project_id)
        rounds = follow(
            stack,
            project_id,
            injector.requested,
            tick,
            lambda rs: rs[-1]["state"] != "held_back" or len(rs) >= 4,
        )
        after = live_versions(stack, project_id, model_dir)
        return finish(
            "ls-down",
            stack,
            project_id,
            ids,
            before,
            after,
            injector.record or {},
            rounds,
            started,
            settings={**WORKER_ENV, "labels": LABELS},
        )
    finally:
        stop_worker(worker)


def disk_full(stack: Stack, n_tasks: int, new_tasks: int, disk_mb: int) -> dict:
    if shutil.which("unshare") is None:
        raise RuntimeError("disk-full needs unshare (util-linux) to mount a tmpfs of its own")
    started = time.monotonic()
    project_id, ids = labelled_project(stack, n_tasks, LABELS)
    worker, model_dir = start_worker(stack, "disk-full", {}, tmpfs_mb=disk_mb)
    disk = seen_from(worker, model_dir.parent, namespaced=True)
    try:
        first = request_round(stack, "faults-disk-full", project_id)
        first_rounds = follow(stack, project_id, first, lambda st: None, lambda rs: True)
        images_dir = f"/data/local-files/?d={benchmark_scale.IMAGE_SUBDIR}/"
        ids += stack.admin.import_tasks(
            project_id,
            [
                {"data": {"image": images_dir + name}}
                for name, _ in stack.images[n_tasks : n_tasks + new_tasks]
            ],
        )
        before = {
            **live_versions(stack, project_id, disk / "models"),
            "scored": scored(stack, project_id, ids),
        }
        free_before = shutil.disk_usage(disk).free
        log = stack.work / "disk-full" / "worker.log"
        log_lines = len(log.read_text(errors="replace").splitlines())
        # once this round has scored its first chunk (a progress of the grown pool: the first
        # round's progress stays in the status until then), or as it starts scoring a pool of
        # one chunk (which reports its progress only once scored)
        injector = Injector(
            f"tmpfs of {disk_mb} MiB (MODEL_DIR and image cache) filled",
            lambda st: (
                st.get("phase") == "scoring"
                and (
                    len(ids) <= SCORE_CHUNK_IMAGES
                    or (st.get("scoring_progress") or {}).get("total") == len(ids)
                )
            ),
            lambda: fill_until_full(disk),
            pool_size=len(ids),
        )
        injector.requested = request_round(stack, "faults-disk-full", project_id)
        rounds = follow(stack, project_id, injector.requested, injector, lambda rs: True)
        after = live_versions(stack, project_id, disk / "models")
        result = finish(
            "disk-full",
            stack,
            project_id,
            ids,
            before,
            after,
            {
                **(injector.record or {}),
                "free_bytes_before": free_before,
                "free_bytes_after_round": shutil.disk_usage(disk).free,
            },
            rounds,
            started,
            first_round=first_rounds[0],
            cache_writes_refused=count_lines(log, "image cache: no space left", log_lines),
            temp_files_left=temp_files(disk),
            settings={**WORKER_ENV, "labels": LABELS, "tmpfs_mb": disk_mb},
        )
        # the disk freed again: the next round publishes a complete version
        (disk / "filler").unlink(missing_ok=True)
        recovery = request_round(stack, "faults-disk-full", project_id)
        recovered = follow(stack, project_id, recovery, lambda st: None, lambda rs: True)
        live = live_versions(stack, project_id, disk / "models")
        counts = scored(stack, project_id, ids)
        result["recovery"] = {
            "round": recovered[0],
            "live": live,
            "scored": counts,
            "verdict": verdict(after["label_studio"], live["label_studio"], counts, len(ids)),
        }
        return result
    finally:
        stop_worker(worker)


def lock_deleted(stack: Stack, n_tasks: int) -> dict:
    started = time.monotonic()
    project_id, ids = labelled_project(stack, n_tasks, 0)
    worker, model_dir = start_worker(stack, "lock-deleted", COLD_START_ENV)
    try:
        before = {**live_versions(stack, project_id, model_dir), "scored": {}}
        lock_key = training_state._key(project_id, "lock")

        def delete_lock() -> dict:
            holder = stack.conn.get(lock_key)
            return {
                "key": lock_key,
                "held_by": holder.decode() if holder else None,
                "deleted": int(stack.conn.delete(lock_key)),
                "live_at_injection": live_versions(stack, project_id, model_dir),
            }

        injector = Injector(
            "run-lock key deleted from Redis",
            lambda st: st.get("phase") == "self_supervised_pretraining",
            delete_lock,
        )
        injector.requested = request_round(stack, "faults-lock-deleted", project_id)
        rounds = follow(stack, project_id, injector.requested, injector, lambda rs: True)
        after = live_versions(stack, project_id, model_dir)
        return finish(
            "lock-deleted",
            stack,
            project_id,
            ids,
            before,
            after,
            injector.record or {},
            rounds,
            started,
            settings={**WORKER_ENV, **COLD_START_ENV, "labels": 0},
        )
    finally:
        stop_worker(worker)


# ============================================================================ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, of {', '.join(SCENARIOS)}"
    )
    parser.add_argument("--tasks", type=int, default=10_000, help="pool of ls-down")
    parser.add_argument(
        "--small-tasks",
        type=int,
        default=1000,
        help="pool of disk-full (before --new-tasks) and lock-deleted",
    )
    parser.add_argument(
        "--new-tasks",
        type=int,
        default=500,
        help="disk-full: tasks added before the round that meets the full disk",
    )
    parser.add_argument(
        "--outage",
        choices=("kill", "stop"),
        default="kill",
        help="ls-down: kill Label Studio and start it again, or SIGSTOP/SIGCONT",
    )
    parser.add_argument("--outage-s", type=float, default=60.0)
    parser.add_argument(
        "--inject-after-scored",
        type=int,
        default=2048,
        help="ls-down: images the round has scored when Label Studio goes down",
    )
    parser.add_argument("--disk-mb", type=int, default=64, help="disk-full: the tmpfs's size")
    parser.add_argument("--out", default=str(RESULTS / "fault-injection.json"))
    parser.add_argument("--work-dir", default=None, help="default: a temporary folder")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; choose from {SCENARIOS}")
    given = list(argv if argv is not None else sys.argv[1:])
    if "--work-dir" in given:
        del given[given.index("--work-dir") : given.index("--work-dir") + 2]
    report: dict = {
        "command": shlex.join(["benchmarks/fault_injection.py"] + given),
        "label_studio": lslocal.LABEL_STUDIO_VERSION,
        "machine": f"{os.cpu_count()} CPU cores, no GPU used",
        "started_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "scenarios": [],
    }
    out = Path(args.out)
    n_images = max(args.tasks if "ls-down" in chosen else 0, args.small_tasks + args.new_tasks)
    with tempfile.TemporaryDirectory(prefix="fault-injection-") as scratch:
        work = Path(args.work_dir) if args.work_dir else Path(scratch)
        stack = start_stack(work, n_images)
        try:
            for name in chosen:
                if name == "ls-down":
                    run = ls_down(stack, args.tasks, args.outage, args.outage_s, args.inject_after_scored)
                elif name == "disk-full":
                    run = disk_full(stack, args.small_tasks, args.new_tasks, args.disk_mb)
                else:
                    run = lock_deleted(stack, args.small_tasks)
                report["scenarios"].append(run)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(report, indent=1) + "\n")
        finally:
            stack.ls.stop()
            stack.redis.terminate()
            stack.redis.wait(10)
    print(markdown(report))
    print(f"written to {out}")
    return 1 if any(run["verdict"].startswith("PARTIAL") for run in report["scenarios"]) else 0


if __name__ == "__main__":
    sys.exit(main())
