"""What the frozen mode's feature cache costs at scale: the pooled-feature rows of N tasks written
in chunks of FEATURE_CHUNK_IMAGES (what a first extraction does), a later round's chunk of new
tasks added to them, and the rows read the way a round reads them (``pooled_features``: which
keys are missing, then the rows), by a fresh instance as a new round's process would. The rows
are synthetic (no network, no model): only the cache's own work is timed.

Any module defining ``FeatureCache`` can be measured (``--cache-module``), e.g. the code of an
earlier commit (``git show <commit>:model/feature_cache.py > old_cache.py``): a cache without
``missing`` is read the way that code's round read it (``get_many`` twice).

    nice -n 19 scripts/python.sh benchmarks/feature_cache_cost.py --tasks 100000 --label after
    nice -n 19 scripts/python.sh benchmarks/feature_cache_cost.py --tasks 100000 --label before \\
        --cache-module old_cache.py

Adds one entry per label to ``benchmarks/results/feature-cache-cost.json`` and rewrites
``feature-cache-cost.md`` from it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np

from backend.feature_round import FEATURE_CHUNK_IMAGES
from model.pooled import PooledFeatures

RESULTS = Path(__file__).resolve().parent / "results"
RESNET18_TAPS = (64, 128, 256, 512)  # resnet18's pooled taps; its embedding is 512 wide
RESNET18_EMBEDDING = 512


def load_cache_module(path: str | None) -> ModuleType:
    """``model.feature_cache``, or the module in the file ``path``."""
    if path is None:
        from model import feature_cache

        return feature_cache
    spec = importlib.util.spec_from_file_location("feature_cache_under_test", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--cache-module {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def chunk_rows(n: int, seed: int, taps: tuple[int, ...], embedding: int) -> PooledFeatures:
    matrix = np.random.default_rng(seed).standard_normal((n, sum(taps) + embedding), np.float32)
    return PooledFeatures.from_matrix(matrix, list(taps), embedding)


def round_read(cache, keys: list[str]) -> tuple[int, int]:
    """What a round's ``pooled_features`` reads of an all-cached pool: (rows read, rows found)."""
    read = 0
    if hasattr(cache, "missing"):
        missing = cache.missing(keys)
    else:  # the former round: get_many to find the missing keys, then again for the rows
        found, missing = cache.get_many(keys)
        read += 0 if found is None else len(found)
    found, _ = cache.get_many(keys)
    n_found = 0 if found is None else len(found)
    return read + n_found, n_found - len(missing)


def measure(
    module: ModuleType,
    root: Path,
    tasks: int,
    new_tasks: int,
    taps: tuple[int, ...] = RESNET18_TAPS,
    embedding: int = RESNET18_EMBEDDING,
) -> dict:
    """Write ``tasks`` rows in chunks, add ``new_tasks`` more, read them all; seconds and bytes."""
    key = "resnet18-0123456789abcdef"
    cache = module.FeatureCache(root, key)
    keys = [f"{task}:{task:016x}" for task in range(tasks + new_tasks)]
    chunk_s = []
    for start in range(0, tasks, FEATURE_CHUNK_IMAGES):
        part = keys[start : min(start + FEATURE_CHUNK_IMAGES, tasks)]
        rows = chunk_rows(len(part), start, taps, embedding)
        began = time.perf_counter()
        cache.put_many(part, rows)
        chunk_s.append(time.perf_counter() - began)
    later = module.FeatureCache(root, key)  # a later round's process
    rows = chunk_rows(new_tasks, tasks, taps, embedding)
    began = time.perf_counter()
    later.put_many(keys[tasks:], rows)
    add_s = time.perf_counter() - began
    reader = module.FeatureCache(root, key)
    began = time.perf_counter()
    rows_read, found = round_read(reader, keys)
    read_s = time.perf_counter() - began
    tenth = max(len(chunk_s) // 10, 1)
    index = [p for p in (root / key).iterdir() if p.name.startswith("index")]
    return {
        "tasks": tasks,
        "new_tasks": new_tasks,
        "row_bytes": 4 * (sum(taps) + embedding),
        "chunk_images": FEATURE_CHUNK_IMAGES,
        "chunks": len(chunk_s),
        "write_s": round(sum(chunk_s), 2),
        # the median chunk of the first and of the last tenth: what a put costs as the cache
        # grows; the slowest put includes a compaction
        "first_tenth_chunk_ms": round(1000 * float(np.median(chunk_s[:tenth])), 1),
        "last_tenth_chunk_ms": round(1000 * float(np.median(chunk_s[-tenth:])), 1),
        "slowest_chunk_ms": round(1000 * max(chunk_s), 1),
        "add_new_tasks_s": round(add_s, 3),
        "round_read_s": round(read_s, 2),
        "rows_read": rows_read,
        "rows_found": found,
        "index_bytes": sum(p.stat().st_size for p in index),
        "shard_bytes": sum(p.stat().st_size for p in (root / key / "shards").iterdir()),
    }


def markdown(results: dict) -> str:
    lines = [
        "# Feature cache: write and read cost at scale",
        "",
        "`benchmarks/feature_cache_cost.py`: synthetic rows of resnet18's width (taps 64+128+256+512,",
        "embedding 512: 5,888 bytes a row), written in chunks of 1,024 as an extraction does, then one",
        "later round's chunk of new tasks, then every row read the way a round reads them, by a fresh",
        "instance. Times in seconds on a shared 2-core machine (other work running).",
        "",
        "| label | tasks | write all (s) | a chunk, first / last tenth (median ms) | slowest chunk "
        "(ms) | add new tasks (s) | round read (s) | rows read | index bytes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, r in results.items():
        lines.append(
            f"| {label} | {r['tasks']:,} (+{r['new_tasks']:,}) | {r['write_s']} | "
            f"{r['first_tenth_chunk_ms']} / {r['last_tenth_chunk_ms']} | {r['slowest_chunk_ms']} | "
            f"{r['add_new_tasks_s']} | "
            f"{r['round_read_s']} | {r['rows_read']:,} | {r['index_bytes']:,} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--new-tasks", type=int, default=1_000, help="a later round's new tasks")
    parser.add_argument("--label", default="current")
    parser.add_argument("--cache-module", help="a file defining FeatureCache (default: ours)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory of the results")
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.new_tasks < 1:
        raise SystemExit("--tasks and --new-tasks must be at least 1")
    root = Path(tempfile.mkdtemp(prefix="feature-cache-cost-"))
    try:
        result = measure(load_cache_module(args.cache_module), root, args.tasks, args.new_tasks)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "feature-cache-cost.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results[args.label] = result
    path.write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "feature-cache-cost.md").write_text(markdown(results))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
