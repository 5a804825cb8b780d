#!/usr/bin/env bash
# The demo, on a fresh machine: installs what is missing, starts a real Label Studio 1.23.2 and
# this backend (embedded Redis + worker), creates an image project (digits unless --source
# says otherwise), connects the backend and prints the URL and login. Ctrl-C stops everything;
# data stays in ./demo-data.
#   scripts/demo.sh                       serve until Ctrl-C
#   scripts/demo.sh --source shapes       images that are not digits (shapes, textures, letters,
#                                         colours: classes told apart by colour)
#   scripts/demo.sh --auto-annotate 40    also label 40 images as a simulated annotator and train
#   scripts/demo.sh --help                all options
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$REPO_ROOT"
ensure_venv
ensure_ls_venv
export VENV_DIR LS_VENV_DIR
# demo.py imports the Label Studio harness (scripts/lib/lslocal) from this checkout
export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" "$REPO_ROOT/scripts/demo.py" "$@"
