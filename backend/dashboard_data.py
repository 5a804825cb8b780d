"""What the dashboard shows of a project, as plain values: the round in progress (phase in words,
a bar per phase, elapsed time), the history of rounds, the versions (live, kept, can be made
live), the learning curve's points, the next tasks of the live ranking and the errors in words.

Everything is read from what /status reads (the project's status in Redis, the published
pointer) plus the round history (``backend.round_history``) and the stored predictions of the
live version; nothing here calls Label Studio, so the page renders fast whatever it does.
"""

from __future__ import annotations

import calendar
import heapq
import threading
import time

from backend import rollback, round_history, training_state
from backend.constants import PROGRESS_FIELD, RoundPhase, RoundState
from backend.dashboard_advice import problems
from backend.model_store import ModelStore, Published, is_cold_start_version, version_sort_key
from backend.rounds.predictions import FIRST_TASKS_KEPT
from backend.settings import Settings

PHASE_WORDS: dict[str, str] = {
    RoundPhase.STARTING: "Starting",
    RoundPhase.FETCHING_TASKS: "Reading the project's tasks from Label Studio",
    RoundPhase.DOWNLOADING_TRAINING_IMAGES: "Downloading the labeled images",
    RoundPhase.COLD_START_RANKING: "Ranking the images without a model (cold start)",
    RoundPhase.SELF_SUPERVISED_PRETRAINING: "Learning a backbone from the project's own images",
    RoundPhase.CHOOSING_COLOUR: "Deciding from the labels whether colour tells the classes apart",
    RoundPhase.RECIPE_SEARCH: "Choosing a training recipe (cross-validation)",
    RoundPhase.EXTRACTING_FEATURES: "Computing image features",
    RoundPhase.TRAINING: "Training the model",
    RoundPhase.SCORING: "Scoring every task",
    RoundPhase.PUSHING_PREDICTIONS: "Sending the predictions to Label Studio",
    RoundPhase.PUBLISHING: "Making the new version live",
    RoundPhase.UPDATING_VIEWS: "Updating the Label Studio tab",
    RoundPhase.FINISHED: "Finished",
    RoundPhase.FAILED: "Failed",
}
# the phases a trained round passes, and a cold start's (a round skips those it does not need)
TRAINED_PHASES = (
    RoundPhase.FETCHING_TASKS,
    RoundPhase.DOWNLOADING_TRAINING_IMAGES,
    RoundPhase.SELF_SUPERVISED_PRETRAINING,
    RoundPhase.CHOOSING_COLOUR,
    RoundPhase.RECIPE_SEARCH,
    RoundPhase.EXTRACTING_FEATURES,
    RoundPhase.TRAINING,
    RoundPhase.SCORING,
    RoundPhase.PUSHING_PREDICTIONS,
    RoundPhase.PUBLISHING,
    RoundPhase.UPDATING_VIEWS,
)
COLD_START_PHASES = (
    RoundPhase.FETCHING_TASKS,
    RoundPhase.DOWNLOADING_TRAINING_IMAGES,
    RoundPhase.COLD_START_RANKING,
    RoundPhase.PUSHING_PREDICTIONS,
    RoundPhase.PUBLISHING,
    RoundPhase.UPDATING_VIEWS,
)
# the (done, total) pairs a phase's progress (PROGRESS_FIELD) may hold
PAIRS = (
    ("done", "total", "images"),
    ("step", "steps", "steps"),
    ("epoch", "epochs", "epochs"),
    ("fold", "folds", "folds"),
)
VERSIONS_SHOWN = 50  # newest rounds read from the history for one page
TOP_TASKS = FIRST_TASKS_KEPT  # tasks of the live ranking shown


def epoch_of(iso: str | None) -> float | None:
    try:
        return float(calendar.timegm(time.strptime(str(iso), "%Y-%m-%dT%H:%M:%SZ")))
    except (TypeError, ValueError):
        return None


def phase_progress(record: dict, phase: str) -> dict:
    """The current phase's bar: fraction (None: no count reported), words, seconds left."""
    info = record.get(PROGRESS_FIELD.get(phase, ""), None)
    out: dict = {"fraction": None, "text": "", "left_s": None}
    if not isinstance(info, dict):
        return out
    for done_key, total_key, unit in PAIRS:
        done, total = info.get(done_key), info.get(total_key)
        if isinstance(done, (int, float)) and isinstance(total, (int, float)) and total > 0:
            fraction = max(0.0, min(1.0, done / total))
            out.update(fraction=fraction, text=f"{done:g} of {total:g} {unit}")
            seconds = info.get("seconds")
            if isinstance(seconds, (int, float)) and 0 < fraction < 1:
                out["left_s"] = round(seconds * (1 - fraction) / fraction, 1)
            break
    else:
        if "images_loaded" in info:
            out["text"] = f"{info['images_loaded']} images loaded"
    return out


def round_in_progress(record: dict, now: float | None = None) -> dict | None:
    """The running round: phase in words, one bar per phase, elapsed time (None: none runs)."""
    if record.get("state") != RoundState.RUNNING or not record.get("running_job_id"):
        return None
    now = time.time() if now is None else now
    phase = str(record.get("phase") or RoundPhase.STARTING)
    order = COLD_START_PHASES if phase == RoundPhase.COLD_START_RANKING else TRAINED_PHASES
    current = order.index(RoundPhase(phase)) if phase in order else -1
    bars = []
    for index, step in enumerate(order):
        bar: dict = {
            "phase": str(step),
            "words": PHASE_WORDS[step],
            "fraction": None,
            "text": "",
            "left_s": None,
            "state": "to come",
        }
        if current >= 0 and index < current:
            bar.update(state="passed", fraction=1.0)
        elif index == current:
            bar.update(phase_progress(record, phase), state="now")
        bars.append(bar)
    started = epoch_of(record.get("started_at"))
    return {
        "phase": phase,
        "words": PHASE_WORDS.get(phase, phase),
        "bars": bars,
        "elapsed_s": round(now - started, 1) if started else None,
        "started_at": record.get("started_at"),
        "reason": record.get("reason"),
        "version_in_progress": record.get("version_in_progress"),
        "last_round_s": record.get("duration_s"),
        "feature_shards": record.get("feature_shards"),
    }


def accuracy_estimate(entry: dict) -> dict:
    """A version's held-out accuracy estimate: ``value`` (None: none was measured), ``std``
    over the folds (None: no spread known), the per-fold values and what it is. From the
    round history's ``accuracy`` (``round_history.accuracy_of``), else from the metrics of an
    entry recorded before it was kept."""
    kept = entry.get("accuracy")
    if isinstance(kept, dict) and isinstance(kept.get("mean"), (int, float)):
        std = kept.get("std")
        return {
            "value": float(kept["mean"]),
            "std": std if isinstance(std, (int, float)) else None,
            "folds": kept.get("folds") or [],
            "kind": str(kept.get("kind") or ""),
        }
    metrics = entry.get("metrics") or {}
    for key, kind in (("recipe_cv_acc", "cross-validated"), ("val_acc", "held-out")):
        if isinstance(metrics.get(key), (int, float)):
            return {"value": float(metrics[key]), "std": None, "folds": [], "kind": kind}
    return {"value": None, "std": None, "folds": [], "kind": ""}


def prospective_by_version(history: list[dict]) -> dict[str, dict]:
    """Each version's newest prospective measurement (``backend.rounds.prospective``), with its
    accuracy: a later round measured the same version on every task annotated since it was
    trained, so the newest counts every earlier one's tasks too."""
    out: dict[str, dict] = {}
    for entry in history:  # newest first
        measured = entry.get("prospective")
        if not isinstance(measured, dict) or measured.get("version") in out:
            continue
        tasks, correct = measured.get("tasks"), measured.get("correct")
        if not isinstance(tasks, int) or not isinstance(correct, int):
            continue
        shown = dict(
            measured, accuracy=correct / tasks if tasks else None, measured_at=entry.get("finished_at")
        )
        chosen, right = measured.get("preselected"), measured.get("preselected_correct")
        if isinstance(chosen, int) and isinstance(right, int) and chosen:
            shown["preselected_accuracy"] = right / chosen
        out[str(measured.get("version"))] = shown
    return out


def version_rows(store: ModelStore, project_id: int, history: list[dict]) -> list[dict]:
    """Every version the history or MODEL_DIR knows, newest first, with what it measured."""
    published = store.published(project_id)
    live = published.version if published else None
    by_version = {e["model_version"]: e for e in reversed(history) if e.get("model_version")}
    prospective = prospective_by_version(history)
    names = set(by_version) | set(store.versions(project_id))
    rows = []
    for version in sorted(names, key=version_sort_key, reverse=True):
        entry = by_version.get(version, {})
        metrics = entry.get("metrics") or {}
        accuracy = accuracy_estimate(entry)
        reason = rollback.refusal(store, project_id, version, live) if version != live else None
        rows.append(
            {
                "version": version,
                "live": version == live,
                "cold_start": is_cold_start_version(version),
                "finished_at": entry.get("finished_at"),
                "labels": entry.get("annotations_used"),
                "mode": metrics.get("mode") or ("cold start" if is_cold_start_version(version) else None),
                "accuracy": accuracy["value"],
                "accuracy_std": accuracy["std"],
                "accuracy_kind": accuracy["kind"],
                "train_acc": metrics.get("train_acc"),
                "lpm_spearman": metrics.get("lpm_spearman"),
                "timings_s": entry.get("timings_s") or {},
                "prospective": prospective.get(version),
                "refusal": reason,
            }
        )
    return rows


def curve_points(history: list[dict]) -> list[dict]:
    """One point per trained version, oldest first: labels used against accuracy."""
    points = []
    for entry in reversed(history):
        metrics = entry.get("metrics") or {}
        labels = entry.get("annotations_used")
        if entry.get("state") != RoundState.DONE or not isinstance(labels, int):
            continue
        accuracy = accuracy_estimate(entry)
        train = metrics.get("train_acc")
        points.append(
            {
                "version": entry.get("model_version"),
                "labels": labels,
                "accuracy": accuracy["value"],
                "accuracy_std": accuracy["std"],
                "accuracy_kind": accuracy["kind"],
                "train_acc": train if isinstance(train, (int, float)) else None,
            }
        )
    return points


class _TopTasks:
    """The live version's first tasks, computed once per predictions file and process."""

    _lock = threading.Lock()
    _cache: dict[str, tuple[float, list[dict]]] = {}

    @classmethod
    def get(cls, store: ModelStore, project_id: int, version: str) -> list[dict]:
        path = store.predictions_path(project_id, version)
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return []
        with cls._lock:
            hit = cls._cache.get(str(path))
        if hit is not None and hit[0] == mtime:
            return hit[1]
        items = store.stored_predictions(project_id, version).items()
        top = [
            {"task_id": tid, "score": p.score, "label": p.label, "probability": p.probability}
            for tid, p in heapq.nsmallest(TOP_TASKS, items, key=lambda item: item[1].score)
        ]
        with cls._lock:
            cls._cache = {k: v for k, v in cls._cache.items() if k != str(path)}
            cls._cache[str(path)] = (mtime, top)
            while len(cls._cache) > 16:
                cls._cache.pop(next(iter(cls._cache)))
        return top


def top_tasks(store: ModelStore, project_id: int, published: Published | None) -> list[dict]:
    """The live ranking's first tasks: kept with the published pointer (a version published
    since it keeps them), else from the version's stored predictions (parsed once per file)."""
    if published is None:
        return []
    kept = published.info.get("first_tasks")
    if isinstance(kept, list) and all(isinstance(t, dict) and "task_id" in t for t in kept):
        return kept[:TOP_TASKS]
    return _TopTasks.get(store, project_id, published.version)


def project_view(
    settings: Settings, store: ModelStore, conn, project_id: int, queue_info: dict | None = None
) -> dict:
    """Everything the dashboard shows of one project."""
    record = training_state.get_status(conn, project_id)
    history = round_history.rounds(conn, project_id, VERSIONS_SHOWN)
    published = store.published(project_id)
    live = published.version if published else None
    return {
        "project_id": project_id,
        "state": record.get("state"),
        "live_version": live,
        "published_at": published.published_at if published else None,
        "running": round_in_progress(record),
        "history": history,
        "versions": version_rows(store, project_id, history),
        "curve": curve_points(history),
        "top_tasks": top_tasks(store, project_id, published),
        "rollback": record.get("rollback"),
        "pending_changes": record.get("pending_annotation_changes"),
        "queued_job_id": record.get("queued_job_id"),
        "next_automatic_round": record.get("next_automatic_round"),
        "problems": problems(settings, record, history, queue_info or {}),
    }


THUMBNAIL_PX = 96  # the longer side of a thumbnail


def thumbnail(settings: Settings, conn, project_id: int, task_id: int) -> bytes | None:
    """A small JPEG of a task's image, from the image cache the rounds fill (None: the task is
    not in the project's index or its image is not cached; the page never fetches from Label
    Studio)."""
    import io

    from backend.images import ImageCache
    from backend.task_index import TaskIndex
    from model.data import ImageError, load_image_bytes

    url = conn.hget(TaskIndex(conn, project_id).tasks_key, int(task_id))
    if url is None:
        return None
    data = ImageCache(settings.resolved_image_cache_dir).get(url.decode())
    if data is None:
        return None
    try:
        image = load_image_bytes(data, max_pixels=settings.image_max_pixels)
    except (ImageError, ValueError):
        return None
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=80)
    return out.getvalue()
