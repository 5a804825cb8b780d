"""Does the backend's colour choice (model/colour_choice.py) pick the winner on every domain?

For each domain, label count and seed of the domain suite (the same labeled draw as its runs), the
choice is made as a round makes it: the labeled images' features from the domain's
colour-invariant self-supervised backbone (the suite's ``selfsup_init`` weights), their colour
histograms, cross-validated on the labels alone. The decision is then set beside what the suite
measured for the two options on the same draw: the default (``selfsup_frozen`` up to 20 labels,
``selfsup_init`` after) against colour kept (``selfsup_colour_frozen`` / ``keep_colour_init``),
the product's behaviour with KEEP_COLOUR false and true.

Writes ``benchmarks/results/colour-choice/<domain>.json`` and ``results.md``.
CLI: ``scripts/python.sh benchmarks/colour_choice.py --domains colours,shapes --labels 20,50``
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from benchmarks.domain_suite import (
    DOMAINS,
    RESULTS_DIR,
    SEEDS,
    draw_labeled,
    load_domain_data,
    run_path,
    selfsup_weights,
)
from model import ModelConfig, build_network
from model.colour_choice import choose_colour, colour_histograms
from model.frozen import extract_pooled

OUT = RESULTS_DIR.parent / "colour-choice"
SELFSUP_STEPS = 1000
FROZEN_MAX_LABELS = 20  # the backend's default: frozen up to this many labels, full after


def options_at(count: int) -> tuple[str, str]:
    """The suite recipes that are the product with KEEP_COLOUR false and true at ``count`` labels."""
    if count <= FROZEN_MAX_LABELS:
        return "selfsup_frozen", "selfsup_colour_frozen"
    return "selfsup_init", "keep_colour_init"


def measured(recipe: str, domain: str, count: int, seed: int) -> float | None:
    path = run_path(RESULTS_DIR, recipe, domain, count, seed)
    return json.loads(path.read_text())["accuracy"] if path.exists() else None


def evaluate_domain(domain: str, counts: list[int], seeds: list[int], device: str) -> list[dict]:
    data = load_domain_data(domain)
    config = ModelConfig()
    weights = selfsup_weights(domain, data, config, SELFSUP_STEPS, RESULTS_DIR, device)
    network = build_network(ModelConfig(pretrained_weights=str(weights)), num_classes=len(data.labels))
    rows_out = []
    for count in counts:
        for seed in seeds:
            rows = draw_labeled(len(data.pool_images), count, seed)
            images = [data.pool_images[i] for i in rows]
            features = extract_pooled(network, images, config, device=device, batch_size=256).embedding
            choice = choose_colour(features, colour_histograms(images), data.pool_targets[rows], seed=seed)
            default, kept = options_at(count)
            rows_out.append(
                {
                    "domain": domain,
                    "labels": count,
                    "seed": seed,
                    **choice.to_dict(),
                    "default_accuracy": measured(default, domain, count, seed),
                    "kept_accuracy": measured(kept, domain, count, seed),
                }
            )
            print(f"{domain:>8} {count:>3} s{seed}: {choice.reason}", flush=True)
    return rows_out


def percent(values: list[float | None]) -> str:
    """The mean of ``values`` in %, or "–" when any is missing."""
    if any(v is None for v in values):
        return "–"
    return f"{100 * float(np.mean([float(v) for v in values if v is not None])):.1f}"


def markdown(records: list[dict]) -> str:
    lines = [
        "Colour chosen from the labels (model/colour_choice.py) against the accuracy the suite "
        "measured for each option on the same labeled draw (default = colour-invariant, "
        "kept = KEEP_COLOUR=true); CV = the choice's cross-validated accuracy on the labels, "
        "invariant features alone → with colour histograms.",
        "",
        "| domain | labels | kept (of seeds) | CV accuracy | default % | kept % | chosen % | best % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in records:
        groups.setdefault((r["domain"], r["labels"]), []).append(r)
    for (domain, count), rs in groups.items():
        chosen = [r["kept_accuracy"] if r["keep_colour"] else r["default_accuracy"] for r in rs]
        best = [
            None
            if r["kept_accuracy"] is None or r["default_accuracy"] is None
            else max(r["kept_accuracy"], r["default_accuracy"])
            for r in rs
        ]
        cv = f"{percent([r['invariant_accuracy'] for r in rs])} → {percent([r['with_colour_accuracy'] for r in rs])}"
        lines.append(
            f"| {domain} | {count} | {sum(r['keep_colour'] for r in rs)}/{len(rs)} | {cv} | "
            f"{percent([r['default_accuracy'] for r in rs])} | {percent([r['kept_accuracy'] for r in rs])} | "
            f"{percent(chosen)} | {percent(best)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--domains", default="colours,photos,shapes,textures,letters,emoji,stamps")
    parser.add_argument("--labels", default="20,50")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    for domain in [d for d in args.domains.split(",") if d]:
        if domain not in DOMAINS:
            raise SystemExit(f"unknown domain {domain!r}; choose from {DOMAINS}")
        records = evaluate_domain(
            domain,
            [int(c) for c in args.labels.split(",")],
            [int(s) for s in args.seeds.split(",")],
            args.device,
        )
        (OUT / f"{domain}.json").write_text(json.dumps(records, indent=1))
    records = [r for path in sorted(OUT.glob("*.json")) for r in json.loads(path.read_text())]
    (OUT / "results.md").write_text(markdown(records))
    print(markdown(records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
