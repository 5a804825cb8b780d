"""The dashboard's errors in plain words, each with what to do about it.

Reads what a project's status and its last rounds recorded (``backend.jobs``: ``error``,
``last_summary``; ``backend.round_history``) and the queue's counts; each problem is a dict
``{"title", "detail", "todo"}``. No secret is ever put into one: errors quote Label Studio's URL
(a setting the admin knows) and never a token (the client redacts them from its errors).
"""

from __future__ import annotations

from backend.constants import RoundState
from backend.settings import Settings

# an image's skip reason (its kind, the text before the first ':') -> what to do
IMAGE_ADVICE = (
    (
        "refused",
        "the image's host is neither Label Studio's nor in ALLOWED_IMAGE_HOSTS: add the "
        "host there if it is trusted, or import the images into Label Studio",
    ),
    ("IMAGE_MAX_BYTES", "the file is larger than IMAGE_MAX_BYTES: raise it or shrink the image"),
    ("IMAGE_MAX_PIXELS", "the image has more pixels than IMAGE_MAX_PIXELS: raise it or shrink the image"),
    ("slow", "the image server answered too slowly: check it, or raise IMAGE_TIMEOUT_S"),
    (
        "HTTP 4",
        "Label Studio or the image host refused the download: check the task's image "
        "URL and the backend's token (LABEL_STUDIO_API_KEY)",
    ),
    (
        "local file",
        "the local file could not be read: check LOCAL_FILES_DOCUMENT_ROOT and the file's permissions",
    ),
)
DEFAULT_IMAGE_ADVICE = "open the task in Label Studio and fix or remove its image"


def image_advice(kind: str) -> str:
    for needle, advice in IMAGE_ADVICE:
        if needle.lower() in kind.lower():
            return advice
    return DEFAULT_IMAGE_ADVICE


def round_error(settings: Settings, error: str) -> dict:
    """A failed round's error, in words."""
    url = settings.label_studio_url
    if "unreachable" in error or "no answer from Label Studio" in error:
        return {
            "title": "Label Studio could not be reached",
            "detail": f"The last round could not talk to Label Studio at {url}: {error}",
            "todo": "Check that Label Studio runs and that LABEL_STUDIO_URL is the address "
            "the backend reaches it at (in Docker: the service name, not "
            "localhost); then press Start Training again.",
        }
    if "HTTP 401" in error or "HTTP 403" in error or "access token" in error:
        return {
            "title": "Label Studio refused the backend's token",
            "detail": error,
            "todo": "Create a personal access token in Label Studio (Account & Settings) "
            "and set it as LABEL_STUDIO_API_KEY, then restart the backend.",
        }
    if error.startswith("RunLockLost"):
        return {
            "title": "The round stopped before publishing",
            "detail": error,
            "todo": "Another worker took the project over (or Redis was unreachable for "
            "longer than RUN_LOCK_TTL_S); nothing was published. The next round "
            "publishes; check Redis if this repeats.",
        }
    return {
        "title": "The last round failed",
        "detail": error,
        "todo": "The worker's log has the details. Press Start Training to try again.",
    }


def image_problems(images: dict) -> list[dict]:
    skipped = int(images.get("skipped_tasks") or 0)
    if not skipped:
        return []
    reasons = images.get("reasons") or {}
    detail = "; ".join(f"{count} × {kind}" for kind, count in reasons.items())
    examples = images.get("examples") or {}
    if examples:
        detail += ". For example " + "; ".join(
            f"task {tid}: {why}" for tid, why in list(examples.items())[:3]
        )
    advice = sorted({image_advice(kind) for kind in reasons}) or [DEFAULT_IMAGE_ADVICE]
    todo = " ".join(f"{text[0].upper()}{text[1:]}." for text in advice)
    return [
        {
            "title": f"{skipped} image(s) could not be read in the last round",
            "detail": detail + ". Those tasks were left out of training and ranking.",
            "todo": todo,
        }
    ]


def problems(settings: Settings, record: dict, history: list[dict], queue_info: dict) -> list[dict]:
    """What is wrong with a project now, newest cause first."""
    out = []
    if record.get("state") == RoundState.FAILED and record.get("error"):
        out.append(round_error(settings, str(record["error"])))
    summary = record.get("last_summary") or {}
    if record.get("state") != RoundState.RUNNING:
        out.extend(image_problems(summary.get("images") or {}))
        for warning in summary.get("warnings") or []:
            out.append(
                {
                    "title": "The last round published, with a warning",
                    "detail": warning,
                    "todo": "Check Label Studio's tab 'Most informative first'; the next round tries again.",
                }
            )
    rolled = record.get("rollback") or {}
    if rolled.get("state") in ("failed", "refused"):
        out.append(
            {
                "title": f"Making {rolled.get('version')} live did not happen",
                "detail": str(rolled.get("error") or ""),
                "todo": "Read the reason; try again when it no longer applies.",
            }
        )
    if queue_info.get("workers") == 0:
        out.append(
            {
                "title": "No worker is running",
                "detail": "Rounds wait in the queue until a worker takes them.",
                "todo": "Start the workers (scripts/serve.sh starts them, or the Compose service 'worker').",
            }
        )
    change = record.get("labeling_config_change")
    if isinstance(change, dict) and change.get("to_hash"):
        out.append(
            {
                "title": "The labeling config changed",
                "detail": f"Labels added: {', '.join(change.get('labels_added') or []) or 'none'}"
                f"; removed: {', '.join(change.get('labels_removed') or []) or 'none'}.",
                "todo": "The backend retrains for the new config; annotations of a removed "
                "label are not used for training.",
            }
        )
    return out
