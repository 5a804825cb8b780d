"""The one typed, documented configuration object of the backend.

Every tunable is read from the environment here and nowhere else, so a value has one source of
truth and the README's settings table can be checked against this file (tests do so).
Settings are read when a process starts (``Settings.from_env()``), never at import time.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

# numpy only, never torch (a test checks): every entry point validates STRATEGY before it starts.
from backend.defaults import RUN_LOCK_TTL_S
from model.coldstart import PICKS as COLDSTART_PICKS
from model.strategies import STRATEGIES


class SettingsError(ValueError):
    """A setting is present but unusable; the message names the variable."""


def _doc(text: str, unit: str = "") -> dict:
    return {"doc": text, "unit": unit}


@dataclass(frozen=True)
class Settings:
    # --- Label Studio connection -------------------------------------------------------------
    label_studio_url: str = field(default="http://127.0.0.1:8080", metadata=_doc(
        "Base URL of Label Studio as the backend reaches it (images, predictions, project updates)."))
    label_studio_api_key: str = field(default="", repr=False, metadata=_doc(
        "Label Studio token: a personal access token (JWT, refreshed automatically) or a legacy token."))
    label_studio_timeout_s: float = field(default=30.0, metadata=_doc(
        "Timeout of one HTTP request to Label Studio.", "seconds"))
    label_studio_retries: int = field(default=4, metadata=_doc(
        "Retries of a failed Label Studio request with exponential backoff: reads, updates and "
        "deletes after a connection error, a lost answer, a 5xx or a 429; a creating POST "
        "(predictions, tabs) only after a connection error or a 429, and after a lost answer or a "
        "5xx only once the backend has checked what Label Studio already created.", "attempts"))
    label_studio_bulk_timeout_s: float = field(default=600.0, metadata=_doc(
        "Timeout of one bulk request to Label Studio: a prediction import chunk, deleting a "
        "version's predictions.", "seconds"))
    label_studio_retry_after_max_s: float = field(default=60.0, metadata=_doc(
        "Longest wait honoured from a Retry-After header (429/503) before retrying.", "seconds"))
    # --- storage and queue ---------------------------------------------------------------------
    model_dir: Path = field(default=Path("./data/models"), metadata=_doc(
        "Directory holding one sub-directory per project with its versioned checkpoints."))
    keep_model_versions: int = field(default=5, metadata=_doc(
        "How many newest model versions to keep per project; older checkpoints are deleted.", "versions"))
    keep_prediction_versions: int = field(default=2, metadata=_doc(
        "How many of this backend's newest versions keep their predictions in Label Studio; "
        "older ones are deleted there after each round (other models' predictions are never "
        "touched).", "versions"))
    image_cache_dir: Path | None = field(default=None, metadata=_doc(
        "Where downloaded images, and the model-ready arrays scoring reads (each image decoded "
        "and resized once), are cached (default: MODEL_DIR/../image-cache)."))
    image_cache_max_bytes: int = field(default=5 * 1024 ** 3, metadata=_doc(
        "Bound of the image cache, downloaded images and model-ready arrays together: past it the "
        "least recently used files are deleted; 0: no bound. Only images that decode are cached. "
        "An array takes about IMAGE_SIZE² x 3 bytes (3 KB at 32 px, 147 KB at 224 px).", "bytes"))
    redis_url: str = field(default="", metadata=_doc(
        "Redis server for the job queue and training state. scripts/serve.sh starts an embedded one "
        "when unset."))
    queue_name: str = field(default="active-learning", metadata=_doc("RQ queue name."))
    job_timeout_s: int = field(default=6 * 3600, metadata=_doc(
        "Longest a training + scoring job may run before RQ stops it.", "seconds"))
    run_lock_ttl_s: int = field(default=RUN_LOCK_TTL_S, metadata=_doc(
        "Lifetime of a project's run lock, renewed every quarter of it while a round runs; after a "
        "worker is killed, the project can train again once it expires.", "seconds"))
    # --- HTTP server ---------------------------------------------------------------------------
    port: int = field(default=9090, metadata=_doc("Port of the HTTP backend.", "TCP port"))
    basic_auth_user: str = field(default="", metadata=_doc(
        "If set (with BASIC_AUTH_PASS), every endpoint but /health requires this HTTP basic auth user."))
    basic_auth_pass: str = field(default="", repr=False, metadata=_doc("HTTP basic auth password."))
    max_request_bytes: int = field(default=20 * 1024 * 1024, metadata=_doc(
        "Largest request body accepted; larger bodies get 413.", "bytes"))
    predict_max_tasks: int = field(default=200, metadata=_doc(
        "Most tasks /predict answers with a model in one call; larger selections get an honest 'not "
        "scored here' answer because Label Studio gives /predict 100 s. The background job scores "
        "every task anyway.", "tasks"))
    # --- retraining policy ---------------------------------------------------------------------
    retrain_after_annotations: int = field(default=10, metadata=_doc(
        "Annotation changes (created/updated/deleted) that trigger an automatic retrain; 0 disables "
        "automatic retraining (Start Training still works).", "annotation events"))
    retrain_min_interval_s: float = field(default=60.0, metadata=_doc(
        "Least time from the end of a round to the start of the next automatic one (annotation "
        "count, reconciler, or their follow-up); annotations arriving meanwhile are kept and that "
        "round starts when the interval ends. Start Training and a labeling-config change never "
        "wait. 0: no minimum.", "seconds"))
    retrain_duration_factor: float = field(default=1.0, metadata=_doc(
        "An automatic round also waits this many times the last round's duration after it ends, "
        "so the wait grows with the project: 1 keeps rounds to about half of the time on a busy "
        "project, and an annotation reaches the ranking within about two round durations; 0: "
        "only RETRAIN_MIN_INTERVAL_S.", "x last round's duration"))
    reconcile_interval_s: int = field(default=300, metadata=_doc(
        "How often the worker compares Label Studio's count of annotated tasks with its count as "
        "the last round started, to catch missed webhooks (retrains when it drifted by "
        "RETRAIN_AFTER_ANNOTATIONS, or once when the labeling config changed); one worker does it "
        "(a lease of 3 intervals); 0 disables.", "seconds"))
    min_annotations_to_train: int = field(default=2, metadata=_doc(
        "Fewest usable annotated images a training job needs; below it (or below "
        "MIN_CLASSES_TO_TRAIN) the round is a cold-start round: no model is trained, the pool is "
        "ranked by TypiClust and pushed without a pre-selected choice. It ranks on the configured "
        "weights' embedding, else on the project's self-supervised backbone (a pixel ranking is "
        "pushed first while those weights are learned), else (SELF_SUPERVISED_STEPS=0) on pixels.",
        "annotations"))
    min_classes_to_train: int = field(default=2, metadata=_doc(
        "Fewest distinct classes among the usable annotations a training job needs; a classifier "
        "trained on fewer would rank the whole project by one class, so the round is a cold-start "
        "round instead.", "classes"))
    coldstart_pick: str = field(default="auto", metadata=_doc(
        "Which member of each cluster a cold-start ranking serves first: typical (TypiClust's most "
        "typical member), stratified (a random member) or auto (typical only where the embedding "
        "is clearly clustered, its k-means inertia at most 0.8 of a same-covariance Gaussian's: "
        "on unclustered embeddings the most typical images are the most uniform ones, and "
        "training on them lost to a random draw; benchmarks/results/coldstart-accuracy.md; on the "
        "project's self-supervised embedding auto is stratified: a contrastive embedding looks "
        "clustered whether or not its clusters are classes, and typical members did worse there; "
        "benchmarks/results/coldstart-accuracy-selfsup.md)."))
    # --- what is pushed to Label Studio --------------------------------------------------------
    strategy: str = field(default="margin_diverse", metadata=_doc(
        "Acquisition strategy whose ranking becomes the prediction score (a name registered in "
        "model/strategies.py; an unknown name stops every entry point at start); the default won "
        "the benchmark (README, 'Which ranking, measured'). learning_loss_v2 ranks exactly like "
        "learning_loss and needs LPM_LOSS=v2, the training objective it stands for."))
    push_clusters: bool = field(default=False, metadata=_doc(
        "Also push the diversity strategies' cluster ids; Label Studio's uncertainty sampling then "
        "serves the least-annotated cluster first instead of strictly the lowest score."))
    query_batch_size: int = field(default=50, metadata=_doc(
        "Size of the batch the diversity strategies (hybrid, coreset, badge) pick before the rest "
        "follows by score; about how many tasks annotators label between retrains.", "tasks"))
    prediction_chunk_size: int = field(default=50_000, metadata=_doc(
        "Predictions per bulk import request to Label Studio. A stock Label Studio 1.23 recounts "
        "every task of the project after each request, so the push stays linear only while a "
        "project fits in few requests (50,000 tasks: 1.6 ms per prediction in one request, "
        "4.3 ms in five of 10,000; Label Studio's own memory +0.1 GB); with its flag "
        "fflag_fix_back_4620_memory_efficient_predictions_import_08012025_short=true any size is "
        "linear (README, 'What a round costs').", "predictions"))
    preselect_min_confidence: float = field(default=0.5, metadata=_doc(
        "A prediction whose top-class probability is below this is pushed (and answered by "
        "/predict) with an empty result, keeping its score, so annotators are not anchored on a "
        "guess for exactly the uncertain tasks served first; 0 always pre-selects.",
        "probability (0..1)"))
    informative_view_title: str = field(default="Most informative first", metadata=_doc(
        "Title of the Data Manager tab the backend keeps ordered by score ascending."))
    set_uncertainty_sampling: bool = field(default=False, metadata=_doc(
        "Also switch the project to Label Studio's 'Uncertainty sampling' so 'Label All Tasks' serves "
        "the most informative task next."))
    # --- images ---------------------------------------------------------------------------------
    image_max_bytes: int = field(default=30 * 1024 * 1024, metadata=_doc(
        "Largest image file downloaded.", "bytes"))
    image_max_pixels: int = field(default=50_000_000, metadata=_doc(
        "Largest image accepted (width x height); guards against decompression bombs.", "pixels"))
    image_fetch_timeout_s: float = field(default=20.0, metadata=_doc(
        "Timeout of one image download.", "seconds"))
    image_fetch_retries: int = field(default=3, metadata=_doc(
        "Further attempts of an image download that failed with a connection error, a timeout, "
        "HTTP 5xx or 429, or a failed token refresh; each attempt has its own "
        "IMAGE_FETCH_TIMEOUT_S. 0: no retry.", "attempts"))
    image_fetch_backoff_s: float = field(default=1.0, metadata=_doc(
        "Pause before the first retry of an image download; each next pause is twice the one "
        "before, at most 30 s (a longer Retry-After is cut to that).", "seconds"))
    publish_max_unscored_share: float = field(default=0.01, metadata=_doc(
        "Largest share of a round's tasks left without a score by a transient image failure "
        "(what IMAGE_FETCH_RETRIES retries) with which the round still publishes; above it the "
        "previous version stays live and /status says why (state held_back). Failures a retry "
        "cannot mend (a missing or undecodable image, a refused URL) do not count.", "fraction"))
    allowed_image_hosts: tuple[str, ...] = field(default=(), metadata=_doc(
        "Comma-separated extra hosts images may be fetched from besides LABEL_STUDIO_URL's host "
        "(host or host:port)."))
    local_files_document_root: Path | None = field(default=None, metadata=_doc(
        "If set and shared with Label Studio, /data/local-files/?d=... images are read from this disk "
        "directory instead of over HTTP."))
    # --- model and training ---------------------------------------------------------------------
    backbone: str = field(default="small_cnn", metadata=_doc(
        "Network: small_cnn (fast on CPU), cifar_resnet18, or any torchvision classification model "
        "name (resnet18, mobilenet_v3_small, efficientnet_b0, convnext_tiny, ...)."))
    pretrained_weights: Path | None = field(default=None, metadata=_doc(
        "Local file with a state_dict to fine-tune from (no downloads happen at run time)."))
    backbone_weights: str = field(default="", metadata=_doc(
        "torchvision's pretrained weights for a torchvision BACKBONE: DEFAULT, a weights name "
        "(IMAGENET1K_V2) or ResNet50_Weights.IMAGENET1K_V2. Read from TORCH_HOME/hub/checkpoints, "
        "downloaded there once if missing (offline: the error names the file to place). Sets the "
        "input size (IMAGE_SIZE other than the default 32 wins), mean and std the weights expect."))
    image_size: int = field(default=32, metadata=_doc("Square input size images are resized to.",
                                                      "pixels"))
    train_mode: str = field(default="auto", metadata=_doc(
        "full: train the whole network jointly with the loss prediction module. frozen: keep the "
        "backbone fixed and train a light head + the module on its pooled features, computed once per "
        "image and cached per project and backbone version (rounds take seconds). auto: with a "
        "learned backbone (the project's self-supervised weights, or BACKBONE_WEIGHTS / "
        "PRETRAINED_WEIGHTS) frozen up to FROZEN_MAX_LABELS labels, full after; pretrained weights "
        "at an input larger than FULL_TRAINING_MAX_IMAGE_SIZE stay frozen until a GPU is present "
        "and there are FINETUNE_MIN_LABELS labels; full without any learned backbone "
        "(SELF_SUPERVISED_STEPS=0 and no weights)."))
    finetune_min_labels: int = field(default=1000, metadata=_doc(
        "With TRAIN_MODE=auto, pretrained weights at an input larger than "
        "FULL_TRAINING_MAX_IMAGE_SIZE and a GPU: labeled images from which the whole network is "
        "fine-tuned instead of training a head on frozen features.", "annotations"))
    full_training_max_image_size: int = field(default=64, metadata=_doc(
        "With TRAIN_MODE=auto and pretrained weights: the largest input side at which the whole "
        "network is trained on any device after FROZEN_MAX_LABELS labels, as without weights (a "
        "round costs about what one without weights costs). Measured on weights made from other "
        "image sets, at 32 px: 24 to 34 points above the frozen mode at 100 labels (mean per "
        "domain). Larger inputs (the 224 px of BACKBONE_WEIGHTS) keep the backbone frozen on a "
        "CPU. 0: frozen at any size.", "pixels"))
    frozen_max_labels: int = field(default=20, metadata=_doc(
        "With TRAIN_MODE=auto and a learned backbone (the project's self-supervised weights, or "
        "pretrained weights at an input of at most FULL_TRAINING_MAX_IMAGE_SIZE): rounds with at "
        "most this many labels keep the backbone frozen and train a head on it; later rounds "
        "fine-tune. Measured at 20 labels, frozen minus fine-tuned, mean per domain: on the "
        "self-supervised weights +0.8 to +10.4 points on the four non-digit domains, +0.1 on "
        "digits, -2.0 on MNIST; on weights made from other image sets +0.7 to +4.6; training takes "
        "seconds instead of minutes. 0: fine-tune from the first round.", "annotations"))
    keep_colour: bool = field(default=False, metadata=_doc(
        "true when colour is what tells your classes apart (ripe / unripe, a signal's state): "
        "the self-supervised pre-training's views keep their hue and the training augmentation "
        "makes no image grey or inverted. Measured where colour is the class: 25.1 -> 82.3 % at "
        "20 labels, 74.6 -> 92.2 % at 50. Off by default, and keep it off where colours vary "
        "within a class: those views are what teach the network to look past colour, and "
        "pre-trained with views that keep it, shapes, textures and letters lost 19.8-29.3 "
        "points at 50 labels (README, domain suite). Changing it learns the self-supervised "
        "weights again."))
    augment_policy: str = field(default="strong", metadata=_doc(
        "Training augmentation (TRAIN_MODE full): strong (random resized crop, rotation, colour "
        "jitter, random grayscale and inversion: the few-label recipe) or crop_flip (the paper's "
        "CIFAR recipe)."))
    input_norm: str = field(default="per_image", metadata=_doc(
        "Pixel standardisation for networks trained here: per_image (each image by its own mean and "
        "std) or dataset (fixed mean/std 0.5). Pretrained weights always use their own mean/std."))
    train_steps: int = field(default=0, metadata=_doc(
        "Optimizer steps a full training aims at (epochs follow from it and the labeled-set size); "
        "0 = the recipe's default.", "steps"))
    train_epochs: int = field(default=0, metadata=_doc(
        "Training epochs; 0 scales them to the labeled-set size so a first retrain takes seconds.",
        "epochs"))
    train_batch_size: int = field(default=64, metadata=_doc("Training mini-batch size.", "images"))
    recipe_search_budget_s: float = field(default=0.0, metadata=_doc(
        "Time a full-mode round may spend choosing its training recipe by k-fold cross-validation "
        "on the labeled set (model/recipe_search.py lists the candidates); the winner and its CV "
        "accuracy are in the round summary. 0 = off, train with the configured recipe.", "seconds"))
    recipe_search_min_labels: int = field(default=40, metadata=_doc(
        "Labeled images from which a round searches its recipe (fewer make folds too small to "
        "tell recipes apart).", "annotations"))
    recipe_search_folds: int = field(default=3, metadata=_doc(
        "Folds of the recipe search's cross-validation (each candidate trains once per fold).",
        "folds"))
    # model.selfsup.SelfSupConfig.steps (a test holds them equal; importing it here would load
    # torch in every process that reads its settings)
    self_supervised_steps: int = field(default=1000, metadata=_doc(
        "Training starts from a backbone pre-trained on the project's own images, labeled or "
        "not, with a contrastive objective for this many optimizer steps of 64 images x 2 views: "
        "4-10 min on one CPU core at 32 px (a GPU is far faster; not measured here). Learned in "
        "the project's first cold-start round (whose ranking then uses them) or first trained "
        "round, kept per project and reused by later rounds (frozen up to FROZEN_MAX_LABELS "
        "labels, fine-tuned after). From a "
        "random initialisation: +6 to +34 points on the synthetic non-digit domains at 20-100 "
        "labels, level on digits and MNIST, -5.2 / -1.9 / 0 points at 20 / 50 / 100 labels on "
        "photographs; from a PRETRAINED_WEIGHTS file at most "
        "FULL_TRAINING_MAX_IMAGE_SIZE a side (it adapts the file): +1.7 to +9.7 points over the "
        "file as it is at 100 labels (README, domain suite). Not with BACKBONE_WEIGHTS. 0 = off.",
        "steps"))
    self_supervised_refresh_growth: float = field(default=0.5, metadata=_doc(
        "The self-supervised weights are learned again once the project has grown by this "
        "fraction of the tasks they were learned from (0.5: at 1.5x), so new images are seen.",
        "fraction of tasks"))
    self_supervised_max_images: int = field(default=10000, metadata=_doc(
        "Most images self-supervised pre-training reads (a seeded sample of a larger project); "
        "they are held in memory at IMAGE_SIZE² x 3 bytes each (30 MB at 32 px).", "images"))
    lpm_loss: str = field(default="v1", metadata=_doc(
        "Loss prediction module objective: v1 (margin ranking, paper), v2 (ranking BCE), mse."))
    feature_shard_images: int = field(default=1024, metadata=_doc(
        "Images per shard when a round's feature extraction (TRAIN_MODE frozen, and a cold start "
        "on a learned backbone) is split over the queue's RQ workers: with more images missing "
        "from the feature cache than this, the round publishes shards of this size in Redis, "
        "queues one shard job per other worker and works shards itself until every one is done "
        "(README, 'Scale out'); 0: never split.", "images"))
    score_batch_size: int = field(default=128, metadata=_doc(
        "Images per forward pass when scoring the project.", "images"))
    mc_dropout_samples: int = field(default=10, metadata=_doc(
        "Stochastic forward passes per image for the bald strategy (MC dropout).", "passes"))
    device: str = field(default="auto", metadata=_doc(
        "Torch device: auto (CUDA when present, else CPU), cpu, cuda, cuda:N."))
    seed: int = field(default=0, metadata=_doc("Random seed of training and of random strategies."))
    # --- logging --------------------------------------------------------------------------------
    log_level: str = field(default="INFO", metadata=_doc("Python log level."))

    # ------------------------------------------------------------------------------------------
    @property
    def resolved_image_cache_dir(self) -> Path:
        return self.image_cache_dir or (self.model_dir.parent / "image-cache")

    @property
    def basic_auth_enabled(self) -> bool:
        return bool(self.basic_auth_user and self.basic_auth_pass)

    @classmethod
    def env_names(cls) -> dict[str, str]:
        """Field name -> environment variable name (upper case of the field name)."""
        return {f.name: f.name.upper() for f in dataclasses.fields(cls)}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        environ = os.environ if environ is None else environ
        values = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f, raw.strip())
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if not self.label_studio_url.startswith(("http://", "https://")):
            raise SettingsError(f"LABEL_STUDIO_URL must start with http:// or https://, got "
                                f"{self.label_studio_url!r}")
        positive = ("label_studio_timeout_s", "label_studio_bulk_timeout_s", "keep_model_versions",
                    "max_request_bytes",
                    "prediction_chunk_size", "image_max_bytes", "image_max_pixels",
                    "image_fetch_timeout_s", "image_size", "train_batch_size", "score_batch_size",
                    "job_timeout_s", "predict_max_tasks", "query_batch_size", "mc_dropout_samples",
                    "keep_prediction_versions", "run_lock_ttl_s")
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name.upper()} must be > 0, got {getattr(self, name)}")
        if self.label_studio_retries < 0 or self.label_studio_retry_after_max_s < 0:
            raise SettingsError("LABEL_STUDIO_RETRIES and LABEL_STUDIO_RETRY_AFTER_MAX_S must be >= 0")
        if self.image_fetch_retries < 0 or self.image_fetch_backoff_s < 0:
            raise SettingsError("IMAGE_FETCH_RETRIES and IMAGE_FETCH_BACKOFF_S must be >= 0")
        if not 0.0 <= self.publish_max_unscored_share <= 1.0:
            raise SettingsError(f"PUBLISH_MAX_UNSCORED_SHARE must be a fraction in [0, 1], got "
                                f"{self.publish_max_unscored_share}")
        if self.image_cache_max_bytes < 0:
            raise SettingsError("IMAGE_CACHE_MAX_BYTES must be >= 0 (0: no bound)")
        if self.reconcile_interval_s < 0:
            raise SettingsError("RECONCILE_INTERVAL_S must be >= 0")
        if self.min_annotations_to_train < 1:
            raise SettingsError("MIN_ANNOTATIONS_TO_TRAIN must be >= 1")
        if self.min_classes_to_train < 1:
            raise SettingsError("MIN_CLASSES_TO_TRAIN must be >= 1")
        if not 0.0 <= self.preselect_min_confidence <= 1.0:
            raise SettingsError(f"PRESELECT_MIN_CONFIDENCE must be a probability in [0, 1], got "
                                f"{self.preselect_min_confidence}")
        if self.retrain_after_annotations < 0:
            raise SettingsError("RETRAIN_AFTER_ANNOTATIONS must be >= 0")
        if self.retrain_min_interval_s < 0 or self.retrain_duration_factor < 0:
            raise SettingsError("RETRAIN_MIN_INTERVAL_S and RETRAIN_DURATION_FACTOR must be >= 0")
        choices = {"train_mode": ("auto", "full", "frozen"), "augment_policy": ("strong", "crop_flip"),
                   "input_norm": ("per_image", "dataset"), "coldstart_pick": COLDSTART_PICKS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise SettingsError(f"{name.upper()} must be one of {', '.join(allowed)}, got "
                                    f"{getattr(self, name)!r}")
        if self.train_mode == "frozen" and not (self.backbone_weights or self.pretrained_weights):
            raise SettingsError("TRAIN_MODE=frozen needs a learned backbone: set BACKBONE_WEIGHTS or "
                                "PRETRAINED_WEIGHTS, or use TRAIN_MODE=auto or full")
        if self.feature_shard_images < 0:
            raise SettingsError(f"FEATURE_SHARD_IMAGES must be >= 0 (0: never split), got "
                                f"{self.feature_shard_images}")
        if min(self.train_steps, self.finetune_min_labels, self.full_training_max_image_size,
               self.frozen_max_labels) < 0:
            raise SettingsError("TRAIN_STEPS, FINETUNE_MIN_LABELS, FULL_TRAINING_MAX_IMAGE_SIZE and "
                                "FROZEN_MAX_LABELS must be >= 0")
        if self.recipe_search_budget_s < 0 or self.recipe_search_min_labels < 0:
            raise SettingsError("RECIPE_SEARCH_BUDGET_S and RECIPE_SEARCH_MIN_LABELS must be >= 0")
        if self.self_supervised_steps < 0:
            raise SettingsError(f"SELF_SUPERVISED_STEPS must be >= 0 (0: off), got "
                                f"{self.self_supervised_steps}")
        if self.self_supervised_refresh_growth <= 0:
            raise SettingsError(f"SELF_SUPERVISED_REFRESH_GROWTH must be > 0 (a fraction of the "
                                f"tasks), got {self.self_supervised_refresh_growth}")
        if self.self_supervised_max_images < 2:
            raise SettingsError(f"SELF_SUPERVISED_MAX_IMAGES must be >= 2, got "
                                f"{self.self_supervised_max_images}")
        if self.recipe_search_folds < 2:
            raise SettingsError(f"RECIPE_SEARCH_FOLDS must be >= 2, got {self.recipe_search_folds}")
        if self.lpm_loss not in ("v1", "v2", "mse"):
            raise SettingsError(f"LPM_LOSS must be v1, v2 or mse, got {self.lpm_loss!r}")
        self._validate_strategy()
        if self.backbone_weights:
            if self.pretrained_weights:
                raise SettingsError("set BACKBONE_WEIGHTS (torchvision's) or PRETRAINED_WEIGHTS (a "
                                    "local file), not both")
            if self.backbone in ("small_cnn", "cifar_resnet18"):
                raise SettingsError(f"BACKBONE_WEIGHTS needs a torchvision BACKBONE (e.g. resnet50), "
                                    f"not {self.backbone}; use PRETRAINED_WEIGHTS for a local file")
        if bool(self.basic_auth_user) != bool(self.basic_auth_pass):
            raise SettingsError("set both BASIC_AUTH_USER and BASIC_AUTH_PASS, or neither")

    def _validate_strategy(self) -> None:
        """STRATEGY must be a registered strategy, and the training settings its name stands for
        must be the ones set (learning_loss_v2 ranks like learning_loss; what differs is
        LPM_LOSS=v2, so the name alone must not pretend to be something else)."""
        entry = STRATEGIES.get(self.strategy)
        if entry is None:
            raise SettingsError(f"STRATEGY={self.strategy!r} is unknown; known: "
                                f"{', '.join(sorted(STRATEGIES))}")
        for name, wanted in entry.train_overrides.items():
            if hasattr(self, name) and getattr(self, name) != wanted:
                raise SettingsError(f"STRATEGY={self.strategy} is {entry.summary}: set "
                                    f"{name.upper()}={wanted} (now {getattr(self, name)!r})")

    def describe(self) -> dict:
        """Settings as plain data with secrets masked, for logs and /health."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not f.repr:
                value = "***" if value else ""
            elif isinstance(value, Path):
                value = str(value)
            out[f.name] = value
        return out


def _parse(f: dataclasses.Field, raw: str):
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if kind == "bool":
            lowered = raw.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true/false")
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind.startswith("Path"):
            return Path(raw).expanduser()
        if kind.startswith("tuple"):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if f.name == "label_studio_url":
            return raw.rstrip("/")
        return raw
    except ValueError as exc:
        raise SettingsError(f"{f.name.upper()}={raw!r} is not a valid {kind}: {exc}") from None
