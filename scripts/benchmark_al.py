"""Simulated active-learning benchmark (thin entry point; the code is benchmarks/al_benchmark.py).
Run it with scripts/python.sh (the project venv, this checkout on PYTHONPATH):

    scripts/python.sh scripts/benchmark_al.py --list-presets
    nice -n 19 scripts/python.sh scripts/benchmark_al.py --preset digits-fast
    nice -n 19 scripts/python.sh scripts/benchmark_al.py --preset mnist
    scripts/python.sh scripts/benchmark_al.py --preset cifar10-paper --fake-data --fake-size 200 \\
        --test-size 50 --initial 20 --query 20 --cycles 2 --epochs 1 --num-seeds 1 \\
        --strategies random,learning_loss --out /tmp/cifar-smoke
"""

from __future__ import annotations

import sys

from benchmarks.al_benchmark import main

if __name__ == "__main__":
    sys.exit(main())
