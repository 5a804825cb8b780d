#!/usr/bin/env bash
# Run every test: unit, integration (real Redis, real HTTP) and end-to-end (real Label Studio).
# Installs what it needs (project venv, test tools, Label Studio's own venv) on first use.
#   scripts/test.sh                 all tests
#   scripts/test.sh -m "not labelstudio"   pass any pytest arguments
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$REPO_ROOT"

t0=$SECONDS
ensure_dev_tools
ensure_ls_venv
log "environments ready in $((SECONDS - t0)) s"
export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$VENV_DIR/bin:$PATH"   # tools installed into the venv (docker compose, hadolint)
export PYTHONDONTWRITEBYTECODE=1
set +e
"$PY" -m pytest -p no:cacheprovider "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then log "error: pytest collected no tests"; exit 1; fi
exit $rc
