#!/usr/bin/env bash
# Run a Python script or module of this project with the project venv, installed on first use
# together with the development tools (matplotlib for the benchmark plots, pytest, ruff, mypy).
# This checkout goes first on PYTHONPATH, so backend, model and benchmarks import from any script.
#   scripts/python.sh scripts/benchmark_al.py --preset digits-fast
#   scripts/python.sh benchmarks/domain_suite.py --report-only
#   scripts/python.sh -m mypy                  any argument list python takes
# Paths are taken relative to the current directory, as python takes them.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

ensure_dev_tools
export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" "$@"
