"""Rounds at scale: what a training round costs against a real Label Studio 1.23.2, per size.

One run per (project size N, Label Studio's memory-efficient prediction import flag off/on), each
on a fresh Label Studio (``scripts/lib/lslocal``) and a fresh backend (``scripts/serve.sh``: its
embedded Redis, one RQ worker, the HTTP backend under gunicorn), all real processes on loopback:

1. a project of N tasks whose images are real handwritten digits (MNIST, or scikit-learn's
   digits), small PNGs that Label Studio serves as local files (``/data/local-files/?d=...``);
2. 100 tasks annotated with their true digit, Start Training pressed: round 1 (empty caches);
3. 100 more annotated, Start Training again: round 2 (image cache warm, the first version's
   predictions still stored, as ``KEEP_PREDICTION_VERSIONS=2`` keeps them).

Recorded per round: the backend's own phase timings (``/status`` → ``last_summary.timings_s``)
and its task-index sync report, press → published seconds, predictions/s pushed, images/s
scored, the peak RSS of every process (Label Studio, Redis, the RQ worker and its work-horse, the
HTTP backend), ``/api/projects/{id}/next/`` latency, the time of the first page of the "Most
informative first" tab, and how busy the machine was (load average, and the CPU other processes
used meanwhile). Across sizes: each phase's slope (seconds per 1,000 tasks), its growth exponent
(1 linear, 2 quadratic) and the value extrapolated to 100,000 tasks.

    nice -n 10 scripts/python.sh scripts/benchmark_scale.py --sizes 1000,10000

``--read-local-files`` has the backend read the images from Label Studio's local-files folder on
disk (``LOCAL_FILES_DOCUMENT_ROOT``, as the compose stack mounts it) instead of through Label
Studio's HTTP, which bounds a first round on this machine (about 30 images/s).
Writes ``benchmarks/results/scale.json`` and ``scale.md`` (``--out`` to change); a benchmark,
not a test: nothing here passes or fails on the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from scripts import demo_data
from scripts.lib import lslocal  # the Label Studio harness

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "results"
LABEL_CONFIG = demo_data.DIGITS_LABEL_CONFIG
EMAIL = "scale@example.com"
IMAGE_SUBDIR = "scale-images"  # under Label Studio's LOCAL_FILES_DOCUMENT_ROOT
TASK_IMPORT_CHUNK = 5000  # tasks per import request
ANNOTATIONS_PER_ROUND = 100
EXTRAPOLATE_TO_TASKS = 100_000
TAB_TITLE = "Most informative first"  # the backend's INFORMATIVE_VIEW_TITLE default
TAB_PAGE_SIZE = 30  # tasks on the tab's first page, as a browser loads it
LATENCY_REPEATS = 5  # timed calls of /next/ and of the tab's first page
SAMPLE_INTERVAL_S = 0.25  # how often process memory and CPU are sampled
BACKEND_START_TIMEOUT_S = 180
ROUND_TIMEOUT_S = 3 * 3600
HTTP_TIMEOUT_S = 600  # the admin client's timeout: a stock import of 50k is slow
# the backend's settings for every run: Start Training decides when a round runs
BACKEND_ENV = {"RETRAIN_AFTER_ANNOTATIONS": "0", "LOG_LEVEL": "INFO"}
# a round's machine counts as busy when other processes used this many cores on average
BUSY_OTHER_CORES = 0.5


# ============================================================================ pure parts


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of ys over xs; two points give the line through them."""
    if len(xs) != len(ys) or len(set(xs)) < 2:
        raise ValueError("a slope needs values at two different sizes at least")
    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    slope = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
    return float(y.mean() - slope * x.mean()), slope


def growth_exponent(xs: list[float], ys: list[float]) -> float | None:
    """k in y ∝ x^k between the smallest and the largest size (1 linear, 2 quadratic); None when
    a value is not positive."""
    pairs = sorted(zip(xs, ys, strict=False))
    (x0, y0), (x1, y1) = pairs[0], pairs[-1]
    if min(x0, x1, y0, y1) <= 0 or x0 == x1:
        return None
    return float(np.log(y1 / y0) / np.log(x1 / x0))


def scaling(xs: list[float], ys: list[float], to: float = EXTRAPOLATE_TO_TASKS) -> dict:
    """Slope per 1,000 tasks, growth exponent and the value extrapolated linearly to ``to``."""
    intercept, slope = fit_line(xs, ys)
    exponent = growth_exponent(xs, ys)
    return {
        "per_1000_tasks": round(slope * 1000, 4),
        "intercept": round(intercept, 3),
        "exponent": None if exponent is None else round(exponent, 2),
        "extrapolated": round(intercept + slope * to, 1),
        "extrapolated_to": int(to),
    }


def round_metrics(record: dict) -> dict[str, float]:
    """The per-round figures a slope is fitted to: every phase timing, press → published, and
    the push's milliseconds per prediction."""
    out = {f"phase {name}": float(value) for name, value in record["timings_s"].items()}
    out["press → published s"] = float(record["press_to_published_s"])
    if record.get("push_ms_per_prediction") is not None:
        out["push ms / prediction"] = float(record["push_ms_per_prediction"])
    out["peak RSS all processes MB"] = float(record["memory"]["total_peak_mb"])
    if record["memory"].get("total_peak_pss_mb") is not None:
        out["peak PSS all processes MB"] = float(record["memory"]["total_peak_pss_mb"])
    return out


def slopes(runs: list[dict], to: float = EXTRAPOLATE_TO_TASKS) -> list[dict]:
    """For each (flag, round, metric) measured at two sizes or more: its scaling()."""
    series: dict[tuple, dict[int, float]] = {}
    for run in runs:
        for record in run["rounds"]:
            for metric, value in round_metrics(record).items():
                series.setdefault((run["flag"], record["round"], metric), {})[run["tasks"]] = value
    out = []
    for (flag, round_no, metric), by_size in sorted(series.items()):
        if len(by_size) < 2:
            continue
        sizes = sorted(by_size)
        out.append(
            {
                "flag": flag,
                "round": round_no,
                "metric": metric,
                "sizes": sizes,
                **scaling([float(n) for n in sizes], [by_size[n] for n in sizes], to),
            }
        )
    return out


def cpu_busy_jiffies(proc_stat_text: str) -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat's first line (idle and iowait idle)."""
    fields = proc_stat_text.splitlines()[0].split()
    if fields[0] != "cpu":
        raise ValueError("not /proc/stat: its first line starts with 'cpu'")
    values = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    total = sum(values)
    return total - values[3] - values[4], total


def process_role(command: str, parent_command: str = "") -> str:
    """What one of our processes is, from its command line (and its parent's)."""
    if "redis-server" in command:
        return "redis"
    if "backend.embedded_redis" in command:
        return "redis launcher"
    if "backend.worker" in command:
        return "rq work-horse" if "backend.worker" in parent_command else "rq worker"
    if "gunicorn" in command:
        return "http backend"
    if "label-studio" in command or "label_studio" in command or "manage.py" in command:
        return "label studio"
    return "other"


def load_note(other_cores: float | None, cores: int) -> str:
    """The table's word on how busy the machine was with other work during a run."""
    if other_cores is None:
        return "unknown"
    busy = other_cores >= BUSY_OTHER_CORES
    return f"{'**busy**' if busy else 'quiet'}: other work used {other_cores:.2f} of {cores} cores"


def _figure(value) -> str:
    """A number in a table cell: three significant figures or so, "–" for none."""
    if value is None:
        return "–"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


ROLE_COLUMNS = ("label studio", "redis", "rq worker", "rq work-horse", "http backend")


def markdown(report: dict) -> str:
    """The report as tables: per flag setting, each metric by size and round, with its slope
    and its value extrapolated to 100,000 tasks."""
    runs, lines = report["runs"], []
    lines += [
        f"# Rounds at scale: a real Label Studio {report['label_studio']}, "
        f"{ANNOTATIONS_PER_ROUND} annotations per round",
        "",
    ]
    if report.get("note"):
        lines += [f"**{report['note']}**", ""]
    commands = " and ".join(f"`{c}`" for c in report["commands"])
    lines += [
        f"Measured with {commands}, on {report['machine']}. Round 1 starts with empty "
        "caches; round 2 after 100 more annotations (caches warm, round 1's predictions "
        "still stored). Phase timings are the backend's own (`/status` → "
        "`last_summary.timings_s`). Images: "
        + (
            "read by the backend from Label Studio's local-files folder on disk (`LOCAL_FILES_DOCUMENT_ROOT`)"
            if report.get("read_local_files")
            else "downloaded through Label Studio's HTTP"
        )
        + ". Backend settings: the defaults and "
        + ", ".join(f"`{k}={v}`" for k, v in report["backend_env"].items())
        + ".",
        "",
    ]
    sizes = sorted({run["tasks"] for run in runs})
    fitted = {(s["flag"], s["round"], s["metric"]): s for s in report["slopes"]}
    for flag in sorted({run["flag"] for run in runs}):
        by_size = {run["tasks"]: run for run in runs if run["flag"] == flag}
        flag_name = "on" if flag else "off (stock)"
        lines += [f"## Memory-efficient prediction import flag {flag_name}", ""]
        header = "| round 1 / round 2 | " + " | ".join(f"{n:,} tasks" for n in sizes if n in by_size)
        extra = (
            " | per 1,000 tasks | growth exponent | 100k extrapolated |"
            if len([n for n in sizes if n in by_size]) > 1
            else " |"
        )
        lines += [header + extra, "|---" * (header.count("|") + extra.count("|") - 1) + "|"]
        metrics = []
        for run in by_size.values():
            for record in run["rounds"]:
                metrics += [m for m in round_metrics(record) if m not in metrics]
        for metric in metrics:
            cells = []
            for n in sizes:
                if n not in by_size:
                    continue
                values = [round_metrics(r).get(metric) for r in by_size[n]["rounds"]]
                cells.append(" / ".join(_figure(v) for v in values))
            row = f"| {metric} | " + " | ".join(cells)
            if extra != " |":
                parts = [fitted.get((flag, r, metric)) for r in (1, 2)]
                row += " | " + " / ".join(_figure(p and p["per_1000_tasks"]) for p in parts)
                row += " | " + " / ".join(
                    "–" if not p or p["exponent"] is None else f"{p['exponent']:.2f}" for p in parts
                )
                row += " | " + " / ".join(_figure(p and p["extrapolated"]) for p in parts)
            lines.append(row + " |")
        lines += [
            "",
            "| tasks | round | predictions/s pushed | images/s scored | `/next/` s "
            "(first / median) | tab's first page s (first / median) | "
            + " | ".join(f"peak RSS {role} MB" for role in ROLE_COLUMNS)
            + " | peak RSS all MB | peak PSS all MB | machine |",
            "|---" * (9 + len(ROLE_COLUMNS)) + "|",
        ]
        for n in sizes:
            for record in by_size[n]["rounds"] if n in by_size else []:
                memory = record["memory"]["peak_mb_by_role"]
                lines.append(
                    f"| {n:,} | {record['round']} | {_figure(record['predictions_per_s'])} "
                    f"| {_figure(record['images_per_s'])} "
                    f"| {_figure(record['next_s']['first'])} / "
                    f"{_figure(record['next_s']['median'])} "
                    f"| {_figure(record['tab_page_s']['first'])} / "
                    f"{_figure(record['tab_page_s']['median'])} | "
                    + " | ".join(f"{memory[r]:.0f}" if r in memory else "–" for r in ROLE_COLUMNS)
                    + f" | {record['memory']['total_peak_mb']:.0f} | "
                    f"{_figure(record['memory'].get('total_peak_pss_mb'))} | "
                    f"{load_note(record['load']['other_cores'], report['cores'])}, load average "
                    f"{record['load']['loadavg_1m_max']:.1f} |"
                )
        lines.append("")
    lines += [
        "Peak RSS: per role, the largest process's peak (`VmHWM`, reset as the round "
        "starts); all processes: the largest sampled sum of every process's RSS (pages "
        "shared after a fork counted in each) and of their PSS (shared pages split among "
        "the processes sharing them, each counted once). `machine`: CPU other processes "
        f"used during the round (busy from {BUSY_OTHER_CORES} cores on) and the largest "
        "1-minute load average, which includes this run's own processes.",
        "",
    ]
    return "\n".join(lines)


# ============================================================================ images


def digit_images(source: str, count: int, out_dir: Path) -> list[tuple[str, str]]:
    """``count`` real handwritten digits as PNGs under ``out_dir``: (file name, label).

    Past the source's size the digits repeat, each repeat shifted by one more pixel, so every
    file differs (the backend caches by URL, and nothing may be served twice as one image)."""
    images, labels = demo_data.load_source(source)
    out_dir.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(0).permutation(len(images))
    written = []
    for index in range(count):
        pick = int(order[index % len(images)])
        pixels = np.roll(images[pick], index // len(images), axis=1)
        name = f"{index:06d}.png"
        path = out_dir / name
        if not path.exists():
            Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(path, format="PNG")
        written.append((name, demo_data.LABEL_NAMES[int(labels[pick])]))
    return written


# ============================================================================ process sampling


def _read(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ""


def _proc_children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _read(f"/proc/{entry}/stat")
            if stat:
                # the command name (field 2) may hold spaces: fields after its ")" are fixed
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
    return children


def _descendants(roots: Iterable[int]) -> set[int]:
    children, found, todo = _proc_children(), set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def _status_kb(pid: int, key: str) -> int | None:
    for line in _read(f"/proc/{pid}/status").splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def _pss_kb(pid: int) -> int | None:
    """Proportional set size: shared pages split among the processes that share them (so the
    sum over a forked worker and its parent counts each page once)."""
    for line in _read(f"/proc/{pid}/smaps_rollup").splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return None


def _command(pid: int) -> str:
    return _read(f"/proc/{pid}/cmdline").replace("\0", " ").strip()


def _cpu_jiffies(pid: int) -> int:
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return 0
    after = stat.rsplit(")", 1)[1].split()
    return int(after[11]) + int(after[12])  # utime + stime


@dataclass
class ResourceSampler:
    """Samples the RSS and CPU of every process under ``roots`` (and the machine's CPU) until
    stopped: per-process peaks (VmHWM, reset at start), the peak of their sum, and the CPU the
    rest of the machine used meanwhile."""

    roots: list[int]
    interval_s: float = SAMPLE_INTERVAL_S
    peak_kb: dict = field(default_factory=dict)  # pid -> VmHWM seen
    role_of: dict = field(default_factory=dict)  # pid -> role
    base_jiffies: dict = field(default_factory=dict)  # pid -> utime+stime at start (0 if later)
    last_jiffies: dict = field(default_factory=dict)  # pid -> utime+stime last seen
    total_peak_kb: int = 0
    total_peak_pss_kb: int = 0
    loadavg_max: float = 0.0

    def __post_init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> ResourceSampler:
        for pid in _descendants(self.roots):
            try:
                with open(f"/proc/{pid}/clear_refs", "w") as handle:
                    handle.write("5")  # resets VmHWM to the current RSS
            except OSError:
                pass  # then VmHWM is the peak since it started
        self.base_jiffies = {pid: _cpu_jiffies(pid) for pid in self._ours()}
        self._started = time.monotonic()
        self._machine_start = cpu_busy_jiffies(_read("/proc/stat"))
        self._thread.start()
        return self

    def _ours(self) -> set[int]:
        return _descendants(self.roots) | {os.getpid()}

    def _sample(self) -> None:
        total = total_pss = 0
        for pid in self._ours():
            self.last_jiffies[pid] = max(self.last_jiffies.get(pid, 0), _cpu_jiffies(pid))
            rss, hwm = _status_kb(pid, "VmRSS"), _status_kb(pid, "VmHWM")
            if rss is None or pid == os.getpid():  # gone, or this benchmark itself
                continue
            total += rss
            total_pss += _pss_kb(pid) or 0
            self.peak_kb[pid] = max(self.peak_kb.get(pid, 0), hwm or rss)
            if pid not in self.role_of:
                parent = _read(f"/proc/{pid}/stat").rsplit(")", 1)[-1].split()
                ppid = int(parent[1]) if len(parent) > 1 else 0
                self.role_of[pid] = process_role(_command(pid), _command(ppid))
        self.total_peak_kb = max(self.total_peak_kb, total)
        self.total_peak_pss_kb = max(self.total_peak_pss_kb, total_pss)
        self.loadavg_max = max(self.loadavg_max, os.getloadavg()[0])

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        self._sample()
        wall = time.monotonic() - self._started
        busy0, total0 = self._machine_start
        busy1, total1 = cpu_busy_jiffies(_read("/proc/stat"))
        cores = os.cpu_count() or 1
        # all CPUs' jiffies together; ours: each of our processes' utime+stime since the start
        # (up to its last sample: a process that ended meanwhile loses its last interval)
        ours = sum(last - self.base_jiffies.get(pid, 0) for pid, last in self.last_jiffies.items())
        other = None
        if total1 > total0:
            other = max(0.0, (busy1 - busy0 - ours) / (total1 - total0) * cores)
        by_role: dict[str, float] = {}
        for pid, kb in self.peak_kb.items():
            role = self.role_of.get(pid, "other")
            by_role[role] = max(by_role.get(role, 0.0), kb / 1024)
        return {
            "memory": {
                "total_peak_mb": round(self.total_peak_kb / 1024, 1),
                "total_peak_pss_mb": round(self.total_peak_pss_kb / 1024, 1),
                "peak_mb_by_role": {r: round(v, 1) for r, v in sorted(by_role.items())},
                "processes": [
                    {"pid": pid, "role": self.role_of.get(pid, "other"), "peak_mb": round(kb / 1024, 1)}
                    for pid, kb in sorted(self.peak_kb.items())
                ],
            },
            "load": {
                "other_cores": None if other is None else round(other, 2),
                "loadavg_1m_max": round(self.loadavg_max, 2),
                "loadavg_at_end": [round(v, 2) for v in os.getloadavg()],
                "wall_s": round(wall, 1),
            },
        }


# ============================================================================ one run


def start_backend(run_dir: Path, ls_url: str, token: str, extra_env: dict) -> tuple[subprocess.Popen, str]:
    """scripts/serve.sh in its own session (embedded Redis, one RQ worker, gunicorn) on a free
    port, with fresh caches under ``run_dir``; waits for /health."""
    port = lslocal.free_port()
    env = {
        **os.environ,
        "LABEL_STUDIO_URL": ls_url,
        "LABEL_STUDIO_API_KEY": token,
        "MODEL_DIR": str(run_dir / "backend" / "models"),
        "PORT": str(port),
        "VENV_DIR": sys.prefix,
        **BACKEND_ENV,
        **extra_env,
    }
    env.pop("REDIS_URL", None)  # serve.sh starts its embedded Redis
    log_path = run_dir / "backend.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            ["bash", str(REPO_ROOT / "scripts" / "serve.sh")],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=REPO_ROOT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + BACKEND_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the backend exited:\n{log_path.read_text()[-3000:]}")
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200:
                return process, url
        except requests.RequestException:
            pass
        time.sleep(0.5)
    stop_backend(process)
    raise RuntimeError(f"the backend did not answer /health in {BACKEND_START_TIMEOUT_S} s")


def stop_backend(process: subprocess.Popen) -> None:
    lslocal.stop_serve(process)


def project_status(backend_url: str, project_id: int) -> dict:
    body = requests.get(backend_url + "/status", timeout=30).json()
    return body.get("projects", {}).get(str(project_id), {})


def wait_for_round(backend_url: str, project_id: int, previous: str | None, log_path: Path) -> dict:
    """The project's status once a round published a version other than ``previous``."""
    deadline = time.monotonic() + ROUND_TIMEOUT_S
    while time.monotonic() < deadline:
        status = project_status(backend_url, project_id)
        if status.get("state") == "failed":
            raise RuntimeError(f"the round failed: {status.get('error')}\n{log_path.read_text()[-3000:]}")
        if (
            status.get("state") in ("done", "cold_start")
            and not status.get("running_job_id")
            and status.get("model_version") not in (None, previous)
        ):
            return status
        time.sleep(0.5)
    raise RuntimeError(f"no round published within {ROUND_TIMEOUT_S} s")


def timed(call: Callable[[], object], repeats: int = LATENCY_REPEATS) -> dict:
    """Seconds of the first call and the median of ``repeats`` calls."""
    seconds = []
    for _ in range(repeats):
        started = time.monotonic()
        call()
        seconds.append(time.monotonic() - started)
    return {"first": round(seconds[0], 3), "median": round(statistics.median(seconds), 3)}


def tab_first_page(admin, project_id: int) -> Callable[[], object]:
    """A call that loads the first page of the backend's tab, as the Data Manager does."""
    views = [v for v in admin.list_views(project_id) if (v.get("data") or {}).get("title") == TAB_TITLE]
    if not views:
        raise RuntimeError(f"the backend made no {TAB_TITLE!r} tab")
    params = {"view": views[0]["id"], "project": project_id, "page": 1, "page_size": TAB_PAGE_SIZE}
    return lambda: admin.get_json("/api/tasks/", params=params)


def make_project(admin, images: list[tuple[str, str]], images_dir: Path) -> tuple[int, list[int]]:
    """A project of one task per image, served by Label Studio as local files; its task ids."""
    title = f"Scale {len(images)} {secrets.token_hex(3)}"
    project_id = admin.create_project(title, LABEL_CONFIG)["id"]
    # Label Studio serves a local file only to a project with a local storage over its folder
    # (no sync needed: the tasks are imported with their /data/local-files/ URLs below)
    admin.request(
        "POST",
        "/api/storages/localfiles",
        json={
            "project": project_id,
            "title": "scale images",
            "path": str(images_dir),
            "regex_filter": r".*\.png",
            "use_blob_urls": True,
        },
    )
    ids: list[int] = []
    for start in range(0, len(images), TASK_IMPORT_CHUNK):
        tasks = [
            {"data": {"image": f"/data/local-files/?d={IMAGE_SUBDIR}/{name}"}}
            for name, _ in images[start : start + TASK_IMPORT_CHUNK]
        ]
        ids += admin.import_tasks(project_id, tasks)
    if len(ids) != len(images):
        raise RuntimeError(f"imported {len(images)} tasks, Label Studio reported {len(ids)}")
    return project_id, ids


def annotate(admin, task_ids: list[int], label_of: dict[int, str]) -> float:
    started = time.monotonic()
    for task_id in task_ids:
        admin.create_annotation(task_id, lslocal.choice_annotation("digit", "image", label_of[task_id]))
    return time.monotonic() - started


def one_round(
    admin,
    ls,
    backend,
    backend_url: str,
    project_id: int,
    ml_id: int,
    round_no: int,
    previous: str | None,
    log_path: Path,
) -> dict:
    sampler = ResourceSampler([ls.process.pid, backend.pid]).start()
    pressed = time.monotonic()
    admin.start_training(ml_id)
    status = wait_for_round(backend_url, project_id, previous, log_path)
    press_to_published = time.monotonic() - pressed
    next_s = timed(lambda: admin.next_task(project_id))
    tab_s = timed(tab_first_page(admin, project_id))
    resources = sampler.stop()
    summary = status["last_summary"]
    timings = summary["timings_s"]
    pushed = summary.get("predictions_pushed", 0)
    push_s, score_s = timings.get("push_s"), timings.get("score_s")
    return {
        "round": round_no,
        "model_version": status["model_version"],
        "state": summary["state"],
        "annotations_used": summary.get("annotations_used"),
        "press_to_published_s": round(press_to_published, 2),
        "job_duration_s": status.get("duration_s"),
        "timings_s": timings,
        "task_index": status.get("task_index"),
        "predictions_pushed": pushed,
        "predictions_per_s": round(pushed / push_s, 1) if push_s else None,
        "push_ms_per_prediction": (round(1000 * push_s / pushed, 3) if push_s and pushed else None),
        "images_per_s": round(pushed / score_s, 1) if score_s else None,
        "images": summary.get("images"),
        "next_s": next_s,
        "tab_page_s": tab_s,
        **resources,
    }


def run_size(
    venv: Path,
    work: Path,
    images: list[tuple[str, str]],
    n_tasks: int,
    flag: bool,
    backend_env: dict,
    read_local_files: bool = False,
) -> dict:
    """Both rounds on a fresh Label Studio and backend for one (size, flag)."""
    if read_local_files:  # the same folder Label Studio serves the images from
        backend_env = {**backend_env, "LOCAL_FILES_DOCUMENT_ROOT": str(work / "local-files")}
    run_dir = work / f"{'flag-on' if flag else 'flag-off'}-{n_tasks}"
    password = "scale-" + secrets.token_urlsafe(10)
    ls = lslocal.start_label_studio(
        venv,
        run_dir / "label-studio",
        lslocal.free_port(),
        EMAIL,
        password,
        extra_env={lslocal.PREDICTIONS_IMPORT_FLAG: "true" if flag else "false"},
        local_files_root=work / "local-files",
    )
    backend = None
    try:
        token = lslocal.create_personal_access_token(ls.url, EMAIL, password)
        admin = lslocal.LabelStudioAdmin(ls.url, token, timeout_s=HTTP_TIMEOUT_S)
        backend, backend_url = start_backend(run_dir, ls.url, token, backend_env)
        started = time.monotonic()
        project_id, ids = make_project(admin, images[:n_tasks], work / "local-files" / IMAGE_SUBDIR)
        import_s = time.monotonic() - started
        ml_id = admin.add_ml_backend(project_id, backend_url, title="Active learning")["id"]
        label_of = {task_id: label for task_id, (_, label) in zip(ids, images, strict=False)}
        rounds: list[dict] = []
        run = {"tasks": n_tasks, "flag": flag, "import_s": round(import_s, 1), "rounds": rounds}
        previous = None
        for round_no in (1, 2):
            batch = ids[(round_no - 1) * ANNOTATIONS_PER_ROUND : round_no * ANNOTATIONS_PER_ROUND]
            run[f"annotate_{round_no}_s"] = round(annotate(admin, batch, label_of), 1)
            record = one_round(
                admin,
                ls,
                backend,
                backend_url,
                project_id,
                ml_id,
                round_no,
                previous,
                run_dir / "backend.log",
            )
            previous = record["model_version"]
            shown = (
                "round",
                "press_to_published_s",
                "timings_s",
                "predictions_per_s",
                "images_per_s",
                "next_s",
                "tab_page_s",
                "load",
            )
            print(
                json.dumps(
                    {
                        "tasks": n_tasks,
                        "flag": flag,
                        **{k: record[k] for k in shown},
                        "peak_mb": record["memory"]["peak_mb_by_role"],
                    }
                ),
                flush=True,
            )
            rounds.append(record)
        return run
    finally:
        if backend is not None:
            stop_backend(backend)
        ls.stop()


# ============================================================================ main


def write_report(report: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(report))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000", help="project sizes (tasks), comma-separated")
    parser.add_argument(
        "--flags", default="off,on", help="Label Studio's memory-efficient prediction import flag: off,on"
    )
    parser.add_argument(
        "--source",
        choices=demo_data.SOURCES,
        default="mnist",
        help="the digits the images are made of (mnist: 10,000 distinct)",
    )
    parser.add_argument(
        "--backend-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a backend setting for every run (repeatable), e.g. TRAIN_STEPS=300",
    )
    parser.add_argument(
        "--read-local-files",
        action="store_true",
        help="the backend reads Label Studio's local files from disk "
        "(LOCAL_FILES_DOCUMENT_ROOT, as the compose stack mounts them) "
        "instead of downloading them through Label Studio",
    )
    parser.add_argument("--note", default="", help="a line printed above the tables")
    parser.add_argument("--out", default=str(RESULTS / "scale"), help="output path without suffix")
    parser.add_argument(
        "--append",
        action="store_true",
        help="add these runs to OUT.json's (a (size, flag) measured again replaces "
        "the earlier run); the slopes are fitted over all of them",
    )
    parser.add_argument(
        "--work-dir",
        default=None,
        help="where Label Studio, the backend and the images keep their files "
        "(default: a temporary folder, removed at the end)",
    )
    args = parser.parse_args(argv)
    # a SIGTERM unwinds like Ctrl-C: the finally blocks stop Label Studio and the backend
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    sizes = sorted(int(s) for s in args.sizes.split(","))
    flags = [flag.strip() == "on" for flag in args.flags.split(",")]
    if min(sizes) <= 2 * ANNOTATIONS_PER_ROUND:
        parser.error(f"every size must exceed the {2 * ANNOTATIONS_PER_ROUND} annotated tasks")
    backend_env = dict(item.split("=", 1) for item in args.backend_env)
    venv = lslocal.ensure_ls_venv()
    lslocal.ensure_db_template(venv)
    given = list(argv if argv is not None else sys.argv[1:])
    if "--work-dir" in given:  # where files were kept changes no figure
        del given[given.index("--work-dir") : given.index("--work-dir") + 2]
    command = shlex.join(["scripts/benchmark_scale.py"] + given)
    out = Path(args.out)
    earlier = json.loads(out.with_suffix(".json").read_text()) if args.append else {}
    report = {
        "label_studio": lslocal.LABEL_STUDIO_VERSION,
        "commands": earlier.get("commands", []) + [command.strip()],
        "note": args.note or earlier.get("note", ""),
        "cores": os.cpu_count() or 1,
        "machine": f"{os.cpu_count()} CPU cores, no GPU used",
        "backend_env": {**BACKEND_ENV, **backend_env},
        "read_local_files": args.read_local_files,
        "started_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "runs": [],
        "slopes": [],
    }
    if earlier and earlier.get("backend_env") != report["backend_env"]:
        parser.error(
            f"{out.with_suffix('.json')} was measured with the backend settings "
            f"{earlier.get('backend_env')}: give the same --backend-env to append"
        )
    if earlier and earlier.get("read_local_files", False) != args.read_local_files:
        parser.error(
            f"{out.with_suffix('.json')} was measured "
            f"{'with' if earlier.get('read_local_files') else 'without'} "
            "--read-local-files: give the same to append"
        )
    measured_now = {(flag, n) for flag in flags for n in sizes}
    kept = [run for run in earlier.get("runs", []) if (run["flag"], run["tasks"]) not in measured_now]
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as scratch:
        work = Path(args.work_dir) if args.work_dir else Path(scratch)
        started, fresh = time.monotonic(), []
        images = digit_images(args.source, max(sizes), work / "local-files" / IMAGE_SUBDIR)
        print(f"{len(images)} images written in {time.monotonic() - started:.0f} s", flush=True)
        for flag in flags:
            for n_tasks in sizes:
                fresh.append(run_size(venv, work, images, n_tasks, flag, backend_env, args.read_local_files))
                report["runs"] = sorted(kept + fresh, key=lambda r: (r["flag"], r["tasks"]))
                report["slopes"] = slopes(report["runs"])
                report["wall_s"] = round(time.monotonic() - started, 1)
                write_report(report, out)  # after every run: a late failure keeps the rest
    print(markdown(report))
    print(f"written to {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
