"""Simulated active-learning benchmark (thin entry point; the code is benchmarks/al_benchmark.py).

    python scripts/benchmark_al.py --list-presets
    nice -n 19 python scripts/benchmark_al.py --preset digits-fast
    nice -n 19 python scripts/benchmark_al.py --preset mnist
    python scripts/benchmark_al.py --preset cifar10-paper --fake-data --fake-size 200 --test-size 50 \\
        --initial 20 --query 20 --cycles 2 --epochs 1 --num-seeds 1 --strategies random,learning_loss \\
        --out /tmp/cifar-smoke
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.al_benchmark import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
