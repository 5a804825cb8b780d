#!/usr/bin/env bash
# Run every check: ruff (lint and format) and mypy (types), then the tests: unit, integration (real Redis,
# real HTTP) and end-to-end (real Label Studio). A lint or type error fails the run before any
# test starts. Installs what it needs (project venv, development tools, Label Studio's own venv)
# on first use.
#   scripts/test.sh                        everything
#   scripts/test.sh -m "not labelstudio"   pass any pytest arguments
#   LINT=0 scripts/test.sh tests/unit/...  skip ruff and mypy (a quick run of a few tests)
# (scripts/dev/normalize.sh applies ruff's fixes and its formatter.)
# ruff and mypy read their settings from pyproject.toml; mypy keeps its cache next to the venvs
# (a cold run takes about a minute, a warm one seconds).
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$REPO_ROOT"

t0=$SECONDS
ensure_dev_tools
log "project environment ready in $((SECONDS - t0)) s"

if [[ "${LINT:-1}" != 0 ]]; then
  t0=$SECONDS
  if ! "$VENV_DIR/bin/ruff" check --no-cache --quiet .; then
    log "error: ruff found the lint errors above (rules: pyproject.toml [tool.ruff]; scripts/dev/normalize.sh repairs the fixable ones)"
    exit 1
  fi
  if ! "$VENV_DIR/bin/ruff" format --no-cache --check --quiet .; then
    log "error: ruff format would reformat the files above (scripts/dev/normalize.sh or 'scripts/python.sh -m ruff format' does)"
    exit 1
  fi
  if ! "$PY" -m mypy --cache-dir "$CACHE_ROOT/mypy-cache"; then
    log "error: mypy found the type errors above (settings: pyproject.toml [tool.mypy])"
    exit 1
  fi
  log "ruff and mypy clean in $((SECONDS - t0)) s"
fi

t0=$SECONDS
ensure_ls_venv
log "Label Studio environment ready in $((SECONDS - t0)) s"
export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$VENV_DIR/bin:$PATH"   # tools installed into the venv (docker compose, hadolint)
export PYTHONDONTWRITEBYTECODE=1
set +e
"$PY" -m pytest -p no:cacheprovider "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then log "error: pytest collected no tests"; exit 1; fi
exit $rc
