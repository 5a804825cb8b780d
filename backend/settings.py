"""The one typed, documented configuration object of the backend.

Every tunable is read from the environment here and nowhere else, so a value has one source of
truth: its field (name, default, text, unit), from which docs/settings.md is generated (tests
check it). The fields come in two groups: what an operator sets (the README's table), then the
advanced knobs. Which values are usable and how a variable's text is parsed:
backend/settings_checks.py. Settings are read when a process starts (``Settings.from_env()``),
never at import time.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# numpy only, never torch (a test checks): every entry point validates STRATEGY before it starts.
from backend import settings_checks
from backend.constants import RUN_LOCK_TTL_S
from backend.settings_checks import SettingsError as SettingsError  # re-exported
from model.weights_cache import find_cached_weights


def _doc(text: str, unit: str = "") -> dict:
    return {"doc": text, "unit": unit}


@dataclass(frozen=True)
class Settings:
    # fmt: off
    # (the fields are laid out by hand as a table: name, default, text, unit)
    # ===== What an operator sets (the README's table) =============================================
    # --- Label Studio and the HTTP server ---------------------------------------------------------
    label_studio_url: str = field(default="http://127.0.0.1:8080", metadata=_doc(
        "Base URL of Label Studio as the backend reaches it (images, predictions, project updates)."))
    label_studio_api_key: str = field(default="", repr=False, metadata=_doc(
        "Label Studio token: a personal access token (JWT, refreshed automatically) or a legacy token."))
    port: int = field(default=9090, metadata=_doc("Port of the HTTP backend.", "TCP port"))
    basic_auth_user: str = field(default="", metadata=_doc(
        "If set (with BASIC_AUTH_PASS), every endpoint but /health requires this HTTP basic auth user."))
    basic_auth_pass: str = field(default="", repr=False, metadata=_doc("HTTP basic auth password."))
    allow_unauthenticated_network: bool = field(default=False, metadata=_doc(
        "true: the HTTP backend may listen on an address beyond loopback (HOST, gunicorn's --bind) "
        "without BASIC_AUTH_USER/BASIC_AUTH_PASS, e.g. on a private network only Label Studio "
        "reaches. false: it refuses to start there, naming the address."))
    # --- storage and queue ------------------------------------------------------------------------
    model_dir: Path = field(default=Path("./data/models"), metadata=_doc(
        "Directory holding one sub-directory per project with its versioned checkpoints."))
    redis_url: str = field(default="", metadata=_doc(
        "Redis server for the job queue and training state. scripts/serve.sh starts an embedded one "
        "when unset."))
    # --- rounds and what is pushed ----------------------------------------------------------------
    retrain_after_annotations: int = field(default=10, metadata=_doc(
        "Annotation changes (created/updated/deleted) that trigger an automatic retrain; 0 disables "
        "automatic retraining (Start Training still works).", "annotation events"))
    strategy: str = field(default="margin_diverse", metadata=_doc(
        "Acquisition strategy whose ranking becomes the prediction score (a name registered in "
        "model/strategies/; an unknown name stops every entry point at start); the default won "
        "the benchmark (docs/results.md, 'Which ranking, measured'). learning_loss_v2 ranks exactly like "
        "learning_loss and needs LPM_LOSS=v2, the training objective it stands for."))
    preselect_min_confidence: float = field(default=0.5, metadata=_doc(
        "A prediction whose top-class probability is below this is pushed (and answered by "
        "/predict) with an empty result, keeping its score, so annotators are not anchored on a "
        "guess for exactly the uncertain tasks served first; 0 always pre-selects.",
        "probability (0..1)"))
    set_uncertainty_sampling: bool = field(default=False, metadata=_doc(
        "Also switch the project to Label Studio's 'Uncertainty sampling' so 'Label All Tasks' serves "
        "the most informative task next."))
    # --- the model --------------------------------------------------------------------------------
    keep_colour: str = field(default="auto", metadata=_doc(
        "Whether colour tells your classes apart (ripe / unripe, a signal's state). true: the "
        "self-supervised views keep their hue and training makes no image grey or inverted. "
        "false: both teach the network to look past colour, right where colours vary within a "
        "class. auto: each trained round decides from its labels, by cross-validating the "
        "colour-invariant backbone's features with and without colour histograms "
        "(model/colour_choice.py); /status and the round summary give the decision and its "
        "evidence (docs/results.md, 'Colour, decided from the labels'). Each choice keeps its "
        "own self-supervised weights."))
    backbone: str = field(default="small_cnn", metadata=_doc(
        "Network: small_cnn (fast on CPU), cifar_resnet18, or any torchvision classification model "
        "name (resnet18, mobilenet_v3_small, efficientnet_b0, convnext_tiny, ...)."))
    backbone_weights: str = field(default="", metadata=_doc(
        "torchvision's pretrained weights for a torchvision BACKBONE: DEFAULT, a weights name "
        "(IMAGENET1K_V2) or ResNet50_Weights.IMAGENET1K_V2. Read from TORCH_HOME/hub/checkpoints, "
        "downloaded there once if missing (offline: the error names the file to place). Sets the "
        "input size (IMAGE_SIZE other than the default 32 wins), mean and std the weights expect."))
    pretrained_weights: Path | None = field(default=None, metadata=_doc(
        "Local file with a state_dict to fine-tune from (no downloads happen at run time)."))
    device: str = field(default="auto", metadata=_doc(
        "Torch device: auto (CUDA when present, else CPU), cpu, cuda, cuda:N."))
    # --- images -----------------------------------------------------------------------------------
    allowed_image_hosts: tuple[str, ...] = field(default=(), metadata=_doc(
        "Comma-separated extra hosts images may be fetched from besides LABEL_STUDIO_URL's host "
        "(host or host:port)."))
    local_files_document_root: Path | None = field(default=None, metadata=_doc(
        "If set and shared with Label Studio, /data/local-files/?d=... images are read from this disk "
        "directory instead of over HTTP."))

    # ===== Advanced knobs: their defaults fit most projects (docs/settings.md) ====================
    # --- Label Studio connection ------------------------------------------------------------------
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
    # --- storage and queue ------------------------------------------------------------------------
    keep_model_versions: int = field(default=5, metadata=_doc(
        "How many newest model versions to keep per project (checkpoint, stored predictions, "
        "embeddings); older ones are deleted, never the live one. Only a kept version can be "
        "made live again from the dashboard.", "versions"))
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
    queue_name: str = field(default="active-learning", metadata=_doc("RQ queue name."))
    job_timeout_s: int = field(default=6 * 3600, metadata=_doc(
        "Longest a training + scoring job may run before RQ stops it.", "seconds"))
    run_lock_ttl_s: int = field(default=RUN_LOCK_TTL_S, metadata=_doc(
        "Lifetime of a project's run lock, renewed every quarter of it while a round runs; after a "
        "worker is killed, the project can train again once it expires.", "seconds"))
    # --- HTTP server ------------------------------------------------------------------------------
    max_request_bytes: int = field(default=20 * 1024 * 1024, metadata=_doc(
        "Largest request body accepted; larger bodies get 413.", "bytes"))
    predict_max_tasks: int = field(default=200, metadata=_doc(
        "Most tasks /predict answers with a model in one call; larger selections get an honest 'not "
        "scored here' answer because Label Studio gives /predict 100 s. The background job scores "
        "every task anyway.", "tasks"))
    predict_cache_projects: int = field(default=8, metadata=_doc(
        "Projects whose live version (parsed predictions, model, kept embeddings) each web process "
        "keeps in memory for /predict; the least recently served are dropped first.", "projects"))
    # --- retraining policy ------------------------------------------------------------------------
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
        "is clearly clustered, its k-means inertia at most 0.8 of a same-covariance Gaussian's, "
        "and stratified on the project's self-supervised embedding; why: "
        "benchmarks/results/coldstart-accuracy.md, benchmarks/results/coldstart-accuracy-selfsup.md)."))
    # --- what is pushed to Label Studio -----------------------------------------------------------
    push_clusters: bool = field(default=False, metadata=_doc(
        "Also push the diversity strategies' cluster ids; Label Studio's uncertainty sampling then "
        "serves the least-annotated cluster first instead of strictly the lowest score."))
    query_batch_size: int = field(default=50, metadata=_doc(
        "Size of the batch the diversity strategies (hybrid, coreset, badge) pick before the rest "
        "follows by score; about how many tasks annotators label between retrains.", "tasks"))
    prediction_chunk_size: int = field(default=50_000, metadata=_doc(
        "Predictions per bulk import request to Label Studio. A stock Label Studio 1.23 recounts "
        "every task of the project after each request, so the push stays linear only while a "
        "project fits in few requests; with its flag "
        "fflag_fix_back_4620_memory_efficient_predictions_import_08012025_short=true any size is "
        "linear (docs/results.md, 'Measured: what a round costs').", "predictions"))
    informative_view_title: str = field(default="Most informative first", metadata=_doc(
        "Title of the Data Manager tab the backend keeps ordered by score ascending."))
    # --- images -----------------------------------------------------------------------------------
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
        "cannot mend (a missing or undecodable image, a refused URL) do not count, except that a "
        "round that scores no task at all is always held back.", "fraction"))
    held_back_retry_s: float = field(default=600.0, metadata=_doc(
        "After a round held back with tasks unscored by transient image failures, an automatic "
        "round is requested this long after it (cadence permitting; /status: next_automatic_round), "
        "again while rounds stay held back. 0: no retry.", "seconds"))
    # --- model and training -----------------------------------------------------------------------
    discover_weights: bool = field(default=True, metadata=_doc(
        "With the default BACKBONE and neither BACKBONE_WEIGHTS nor PRETRAINED_WEIGHTS set: use "
        "torchvision weights already in the torch hub cache (TORCH_HOME/hub/checkpoints; the first "
        "found of model.weights_cache.CACHED_WEIGHTS) as if BACKBONE and BACKBONE_WEIGHTS named "
        "them. Nothing is downloaded. /status names the weights in use. false: never."))
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
        "round costs about what one without weights costs); larger inputs (the 224 px of "
        "BACKBONE_WEIGHTS) keep the backbone frozen on a CPU (docs/results.md, 'Measured: the "
        "domain suite'). 0: frozen at any size.", "pixels"))
    frozen_max_labels: int = field(default=20, metadata=_doc(
        "With TRAIN_MODE=auto and a learned backbone (the project's self-supervised weights, or "
        "pretrained weights at an input of at most FULL_TRAINING_MAX_IMAGE_SIZE): rounds with at "
        "most this many labels keep the backbone frozen and train a head on it, in seconds; later "
        "rounds fine-tune (docs/results.md, 'Measured: the domain suite'). 0: fine-tune from the "
        "first round.", "annotations"))
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
    # model.self_supervised.SelfSupervisedConfig.steps (a test holds them equal; importing it here would load
    # torch in every process that reads its settings)
    self_supervised_steps: int = field(default=1000, metadata=_doc(
        "Training starts from a backbone pre-trained on the project's own images, labeled or "
        "not, with a contrastive objective for this many optimizer steps of 64 images x 2 views; "
        "from a PRETRAINED_WEIGHTS file at most FULL_TRAINING_MAX_IMAGE_SIZE a side the "
        "pre-training adapts the file. Learned in the project's first cold-start round (whose "
        "ranking then uses them) or first trained round, kept per project and reused by later "
        "rounds (frozen up to FROZEN_MAX_LABELS labels, fine-tuned after); what it gains and "
        "costs: docs/results.md, 'Learning from a few labels'. Not with BACKBONE_WEIGHTS. 0 = off.",
        "steps"))
    self_supervised_refresh_growth: float = field(default=0.5, metadata=_doc(
        "The self-supervised weights are learned again once the project has grown by this "
        "fraction of the tasks they were learned from (0.5: at 1.5x), so new images are seen.",
        "fraction of tasks"))
    self_supervised_max_images: int = field(default=10000, metadata=_doc(
        "Most images self-supervised pre-training reads (a seeded sample of a larger project); "
        "they are held in memory at IMAGE_SIZE² x 3 bytes each (30 MB at 32 px).", "images"))
    pool_consistency_weight: float = field(default=0.0, metadata=_doc(
        "Full training also learns from unlabeled pool images: a confident prediction on a mild "
        "view of an image becomes the label a strongly augmented view of it must get (FixMatch-"
        "style consistency, model/consistency.py), at this weight next to the labeled loss; what "
        "it gains and costs: docs/results.md, 'Learning from the unlabeled pool'. 0 = off.",
        "loss weight"))
    pool_consistency_max_images: int = field(default=5000, metadata=_doc(
        "Most unlabeled images full training learns from with POOL_CONSISTENCY_WEIGHT (a seeded "
        "sample of a larger pool); held in memory at IMAGE_SIZE² x 3 bytes each.", "images"))
    lpm_loss: str = field(default="v1", metadata=_doc(
        "Loss prediction module objective: v1 (margin ranking, paper), v2 (ranking BCE), mse."))
    feature_shard_images: int = field(default=1024, metadata=_doc(
        "Images per shard when a round's feature extraction (TRAIN_MODE frozen, and a cold start "
        "on a learned backbone) is split over the queue's RQ workers: with more images missing "
        "from the feature cache than this, the round publishes shards of this size in Redis, "
        "queues one shard job per other worker and works shards itself until every one is done "
        "(docs/deployment.md, 'Scale out'); 0: never split.", "images"))
    score_batch_size: int = field(default=128, metadata=_doc(
        "Images per forward pass when scoring the project.", "images"))
    mc_dropout_samples: int = field(default=10, metadata=_doc(
        "Stochastic forward passes per image for the bald strategy (MC dropout).", "passes"))
    seed: int = field(default=0, metadata=_doc("Random seed of training and of random strategies."))
    # --- logging ----------------------------------------------------------------------------------
    log_level: str = field(default="INFO", metadata=_doc("Python log level."))

    # fmt: on
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
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        values = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = settings_checks.parse_value(f, raw.strip())
        settings = cls(**values).with_discovered_weights()
        settings.validate()
        return settings

    def with_discovered_weights(self) -> Settings:
        """These settings with the torchvision weights found in the torch hub cache as BACKBONE and
        BACKBONE_WEIGHTS (see DISCOVER_WEIGHTS), or unchanged when discovery is off, weights are
        configured, BACKBONE is not the default, or the cache holds none."""
        default_backbone = Settings.__dataclass_fields__["backbone"].default
        if (
            not self.discover_weights
            or self.backbone_weights
            or self.pretrained_weights
            or self.backbone != default_backbone
        ):
            return self
        found = find_cached_weights()
        if found is None:
            return self
        backbone, weights, _ = found
        return dataclasses.replace(self, backbone=backbone, backbone_weights=weights)

    def validate(self) -> None:
        """Raise SettingsError naming the first unusable setting (backend/settings_checks.py)."""
        settings_checks.validate(self)

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
