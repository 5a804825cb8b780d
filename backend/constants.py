"""The backend's states, phases, decisions and fixed timings, in one place.

States are ``StrEnum`` members: each one *is* the string stored in Redis, answered in JSON (/status,
/webhook, /predict) and shown in Label Studio, so stored state and clients stay compatible, and
``str()`` or an f-string gives that same string. Tunable timings are settings
(``backend/settings.py``); the ones here are fixed by the protocols the backend speaks, or are
the defaults settings start from. Standard library only: every process imports this.
"""

from __future__ import annotations

from enum import StrEnum


class RoundState(StrEnum):
    """``state`` of a project's training round in /status (and of the job's summary)."""

    RUNNING = "running"
    DONE = "done"  # a model was trained, its predictions pushed and published
    COLD_START = "cold_start"  # too few labels to train: a TypiClust ranking was published
    SKIPPED = "skipped"  # a cold start with no unlabeled task to rank: nothing published
    HELD_BACK = "held_back"  # too many tasks unscored by transient image failures
    # (PUBLISH_MAX_UNSCORED_SHARE), or none scored at all:
    # the previous version stays live
    FAILED = "failed"
    DEFERRED = "deferred"  # (job summary only) another job ran: a follow-up runs later
    WAITING = "waiting"  # (job summary only) an automatic round waits for the
    # retraining interval (backend/cadence.py) and starts later


class RoundPhase(StrEnum):
    """``phase`` of a project's training round in /status, in the order a round reaches them."""

    STARTING = "starting"
    FETCHING_TASKS = "fetching_tasks"
    DOWNLOADING_TRAINING_IMAGES = "downloading_training_images"
    COLD_START_RANKING = "cold_start_ranking"
    SELF_SUPERVISED_PRETRAINING = "self_supervised_pretraining"
    CHOOSING_COLOUR = "choosing_colour"
    RECIPE_SEARCH = "recipe_search"
    EXTRACTING_FEATURES = "extracting_features"
    TRAINING = "training"
    SCORING = "scoring"
    PUSHING_PREDICTIONS = "pushing_predictions"
    PUBLISHING = "publishing"
    UPDATING_VIEWS = "updating_views"
    FINISHED = "finished"
    FAILED = "failed"


# where a phase's progress is in a project's status; a phase's field is emptied as the phase
# begins (training_state.round_status), so no bar shows the counts of a phase that ended
PROGRESS_FIELD: dict[str, str] = {
    RoundPhase.SELF_SUPERVISED_PRETRAINING: "self_supervised_progress",
    RoundPhase.RECIPE_SEARCH: "recipe_search_progress",
    RoundPhase.EXTRACTING_FEATURES: "scoring_progress",
    RoundPhase.TRAINING: "training_progress",
    RoundPhase.SCORING: "scoring_progress",
    RoundPhase.COLD_START_RANKING: "scoring_progress",
}


class WebhookDecision(StrEnum):
    """What a Label Studio event asks of the backend (backend.webhooks.Decision.kind)."""

    TRAIN = "train"  # Start Training: request a round now
    COUNT = "count"  # an annotation change: count it toward RETRAIN_AFTER_ANNOTATIONS
    IGNORE = "ignore"  # no effect on training


class EventAnswer(StrEnum):
    """``status`` of the answer to /webhook and /train."""

    QUEUED = "queued"
    ALREADY_QUEUED = "already_queued"
    COUNTED = "counted"
    IGNORED = "ignored"
    WAITING = "waiting"  # joined an automatic round that waits for the retraining interval


class PlaceholderVersion(StrEnum):
    """``model_version`` of a /predict answer that comes from no round's predictions. Label Studio
    keeps these like any version, so a round deletes their predictions with its own old ones."""

    UNTRAINED = "untrained"  # no version is published yet (or a cold start met a new task)
    UNSCORED = "unscored"  # a version is published but this task was not scored here


# --- timings (seconds) -----------------------------------------------------------------------
# Default of the setting RUN_LOCK_TTL_S: a killed worker's run lock expires after it, so the
# project's next trigger can run.
RUN_LOCK_TTL_S = 120
RUN_LOCK_RENEWALS_PER_TTL = 4  # a running job renews its run lock every ttl / this
QUEUED_TTL_S = 7 * 24 * 3600  # a project's "queued" and "follow-up" markers in Redis
# A queued marker older than this whose RQ job is gone, finished or failed (or started this long
# ago without its round taking the marker) stands for no job: a new request replaces it. Younger
# markers are trusted (the marker is set just before its job is put on the queue).
QUEUED_MARKER_GRACE_S = 60
TRAIN_JOB_RESULT_TTL_S = 7 * 24 * 3600  # how long RQ keeps a training job's result
PRUNE_JOB_RESULT_TTL_S = 24 * 3600  # ... and a prediction-pruning job's result
FEATURE_SHARD_JOB_RESULT_TTL_S = 24 * 3600  # ... and a feature shard job's result
JOB_FAILURE_TTL_S = 7 * 24 * 3600  # ... and a failed job of either kind
REDIS_SOCKET_TIMEOUT_S = 2.0  # a webhook must answer within 1 s: fail fast when Redis is down
PROGRESS_STATUS_INTERVAL_S = 1.0  # fewest seconds between two training-progress writes to Redis
RECONCILER_LEASE_INTERVALS = 3  # the reconciler lease lives this many RECONCILE_INTERVAL_S
# A project Label Studio answers 404 for is forgotten (its Redis keys and model directory
# deleted) by the first reconcile pass this long after the first 404, if it still answers 404:
# a Label Studio briefly serving the wrong database does not wipe every project's models.
DELETED_PROJECT_GRACE_S = 3600
ACCESS_TOKEN_REFRESH_AFTER_S = 240.0  # Label Studio access tokens live 300 s; refresh early
# A feature shard's claim (backend/feature_shards.py) lives this long unless its worker renews it
# (every third of it, from a thread): a dead worker's shard is claimed again after at most this.
FEATURE_SHARD_LEASE_S = 60.0
FEATURE_SHARD_POLL_S = 0.5  # how often a round waiting for other workers' shards looks again
