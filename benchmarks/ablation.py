"""Paired-seed comparison tables for the issue-B ablation, from benchmark results.json files.

    scripts/python.sh benchmarks/ablation.py benchmarks/results/digits-ablation benchmarks/results/mnist-ablation \
        > benchmarks/results/ablation_tables.md

For every strategy: AUBC mean ± std over seeds, and per-seed paired differences (same seed = same
initial set and training seeds) against random and against margin: mean ± std, seed count, and
how many seeds the strategy won. "beats random" = mean paired Δ > 2 × the larger seed std of the
two AUBCs (a strict reading of "beats random by more than 2 x seed std").
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from benchmarks.al_benchmark import aubc


def per_seed_aubc(results: dict) -> dict[str, dict[int, float]]:
    budgets = results["budgets"]
    return {
        spec: {
            int(seed): aubc(budgets, [c["accuracy"] for c in run["cycles"]]) for seed, run in by_seed.items()
        }
        for spec, by_seed in results["runs"].items()
    }


def paired(a: dict[int, float], b: dict[int, float]) -> np.ndarray:
    seeds = sorted(set(a) & set(b))
    return np.asarray([a[s] - b[s] for s in seeds]) * 100


def table(results_dir: Path) -> str:
    results = json.loads((results_dir / "results.json").read_text())
    scores = per_seed_aubc(results)
    lines = [
        f"### {results_dir.name}",
        "",
        "| strategy | seeds | AUBC (%) | Δ vs random (paired) | wins vs random | beats random by > 2 std | "
        "Δ vs margin (paired) | wins vs margin | mean LPM Spearman | max-class share |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    summary = results["summary"]
    order = sorted(scores, key=lambda s: -np.mean(list(scores[s].values())))
    for spec in order:
        values = np.asarray(list(scores[spec].values())) * 100
        std = values.std(ddof=1) if len(values) > 1 else 0.0
        cells = [spec, str(len(values)), f"{values.mean():.2f} ± {std:.2f}"]
        for ref in ("random", "margin"):
            if spec == ref or ref not in scores:
                cells += ["–", "–"] + (["–"] if ref == "random" else [])
                continue
            d = paired(scores[spec], scores[ref])
            d_std = d.std(ddof=1) if len(d) > 1 else 0.0
            cells += [f"{d.mean():+.2f} ± {d_std:.2f} (n={len(d)})", f"{int((d > 0).sum())}/{len(d)}"]
            if ref == "random":
                ref_values = np.asarray(list(scores["random"].values())) * 100
                bar = 2 * max(std, ref_values.std(ddof=1) if len(ref_values) > 1 else 0.0)
                cells.append("yes" if d.mean() > bar else f"no (bar {bar:.2f})")
        sp = [x for x in summary.get(spec, {}).get("lpm_spearman_mean", []) if x is not None]
        share = summary.get(spec, {}).get("batch_max_class_share_mean")
        cells += [f"{np.mean(sp):.2f}" if sp else "–", f"{share * 100:.0f} %" if share is not None else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    for folder in argv:
        print(table(Path(folder)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
