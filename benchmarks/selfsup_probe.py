"""Linear probe of self-supervised pre-training (model/self_supervised.py) against a random initialisation.

Domain ``shapes`` (benchmarks/domains.py, 4 classes, 64 px RGB, resized to the model's 32 px):
2,500 images; the first 1,500 are the project's pool (pre-training sees all of them, no labels),
the last 1,000 are held out. For each of ``--draws`` random draws of ``--labeled`` labeled images
from the pool, a logistic regression (sklearn, standardised features) is fitted on the frozen
embeddings (``model.score(...).embedding``, the classifier head's input) and scored on the
held-out images. The same probe runs on the embeddings of a randomly initialised network of the
same architecture (ModelConfig(image_size=32) defaults: small_cnn, width 16).

``scripts/python.sh benchmarks/selfsup_probe.py --steps 150`` (one CPU thread; ~2-3 min) is the
measurement the README quotes; without ``--steps`` it pre-trains SelfSupervisedConfig.steps (1,000, about
5 min). ``--json PATH`` writes the numbers. A linear probe undersells the weights: as the start of
a full training they help far more (benchmarks/domain_suite.py, recipe ``selfsup_init``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from benchmarks.domains import load_domain
from model import ModelConfig, build_network, score
from model.self_supervised import SelfSupervisedConfig, pretrain, save_pretrained


def embeddings(config: ModelConfig, images: list[Image.Image], num_classes: int, seed: int = 0) -> np.ndarray:
    torch.manual_seed(seed)  # the random-init network (and the unused head) are seeded
    net = build_network(config, num_classes)
    return score(net, images, config, batch_size=256, device="cpu").embedding


def probe(
    features: np.ndarray, targets: np.ndarray, train_index: np.ndarray, test_index: np.ndarray
) -> float:
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    classifier.fit(features[train_index], targets[train_index])
    return float(classifier.score(features[test_index], targets[test_index]))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domain", default="shapes")
    parser.add_argument("--pool", type=int, default=1500, help="images pre-trained on (labels unused)")
    parser.add_argument("--test", type=int, default=1000, help="held-out images")
    parser.add_argument("--labeled", type=int, default=100, help="labeled images per probe")
    parser.add_argument("--draws", type=int, default=3, help="random draws of the labeled set")
    parser.add_argument(
        "--steps", type=int, default=None, help="pre-training steps (default: SelfSupervisedConfig's)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    started = time.monotonic()
    arrays, targets, classes = load_domain(args.domain, args.pool + args.test, seed=0)
    images = [Image.fromarray(a) for a in arrays]
    pool_index = np.arange(args.pool)
    test_index = np.arange(args.pool, args.pool + args.test)
    print(f"{args.domain}: {len(images)} images, {len(classes)} classes ({time.monotonic() - started:.1f} s)")

    model_config = ModelConfig(image_size=32)
    ssl_config = SelfSupervisedConfig(device="cpu", **({"steps": args.steps} if args.steps else {}))
    curve: list[dict] = []

    def report(info: dict) -> None:
        curve.append(info)
        print(
            f"  step {info['step']:4d}/{info['steps']}  loss {info['loss']:.3f}  {info['seconds']:.0f} s",
            flush=True,
        )

    t0 = time.monotonic()
    state = pretrain([images[i] for i in pool_index], model_config, ssl_config, progress=report)
    pretrain_seconds = time.monotonic() - t0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "selfsup.pt"
        save_pretrained(state, path)
        ssl_features = embeddings(
            ModelConfig(image_size=32, pretrained_weights=str(path)), images, len(classes)
        )
    random_features = embeddings(model_config, images, len(classes))

    rows: dict[str, list[float]] = {"selfsup": [], "random_init": []}
    for draw in range(args.draws):
        labeled = np.random.default_rng(draw).choice(pool_index, size=args.labeled, replace=False)
        rows["selfsup"].append(probe(ssl_features, targets, labeled, test_index))
        rows["random_init"].append(probe(random_features, targets, labeled, test_index))

    result = {
        "domain": args.domain,
        "pool": args.pool,
        "test": args.test,
        "labeled": args.labeled,
        "draws": args.draws,
        "selfsup_config": {k: v for k, v in ssl_config.__dict__.items() if k != "augment"},
        "threads": args.threads,
        "pretrain_seconds": round(pretrain_seconds, 1),
        "seconds_per_step": round(pretrain_seconds / ssl_config.steps, 3),
        "final_loss": curve[-1]["loss"] if curve else None,
        "accuracy": {
            name: {"mean": float(np.mean(v)), "std": float(np.std(v)), "runs": v} for name, v in rows.items()
        },
        "total_seconds": round(time.monotonic() - started, 1),
    }
    print(
        f"pre-training: {ssl_config.steps} steps in {pretrain_seconds:.0f} s "
        f"({result['seconds_per_step']} s/step, {args.threads} thread)"
    )
    for name, stats in result["accuracy"].items():
        print(
            f"linear probe, {args.labeled} labels, {name:11s}: {stats['mean']:.3f} ± {stats['std']:.3f}  {np.round(stats['runs'], 3).tolist()}"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
