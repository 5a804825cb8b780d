#!/usr/bin/env bash
# Re-lock the environments: pip-compile (pip-tools) resolves each requirements file into a lock file
# that pins every package, direct or not, with the hashes of its files. Every installer reads the
# lock files (scripts/lib/common.sh, the Label Studio harness, the Dockerfiles), and the venv caches
# are keyed by them, so a new lock means a new venv on the next run.
#   requirements.txt                    -> requirements.lock                    (runtime)
#   requirements-dev.txt                -> requirements-dev.lock                (runtime + dev tools)
#   requirements-label-studio.txt       -> requirements-label-studio.lock       (Label Studio's own)
#   docker/requirements-rq-dashboard.txt -> docker/requirements-rq-dashboard.lock (the RQ dashboard)
#
#   scripts/lock.sh                        after editing a requirements file: keeps every other pin
#   scripts/lock.sh --upgrade              move every package to its newest allowed release
#   scripts/lock.sh --upgrade-package numpy   only that one (any pip-compile option passes through)
#
# Resolved for Linux x86_64 and Python 3.11 (the venvs and the Docker image); the hashes cover every
# file of each pinned release on the index, so other platforms get their own wheels of the same pins.
# requirements-dev.lock keeps requirements.lock's versions (-c), so the dev tools install on top of
# the runtime venv without changing it. tests/unit/test_lock_files.py fails when a requirements file
# and its lock disagree.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$REPO_ROOT"

PIP_TOOLS_VERSION="7.6.2"
export CUSTOM_COMPILE_COMMAND="scripts/lock.sh"   # the command the lock files' header names

# pip-tools in a small venv of its own, next to the other venvs
ensure_pip_tools() {
  PIP_TOOLS_VENV="$CACHE_ROOT/venv-pip-tools-$PIP_TOOLS_VERSION"
  if [[ -x "$PIP_TOOLS_VENV/bin/pip-compile" ]]; then return 0; fi
  local base; base="$(python_for_venvs)" || return 1
  log "installing pip-tools $PIP_TOOLS_VERSION into $PIP_TOOLS_VENV ..."
  mkdir -p "$CACHE_ROOT"
  "$base" -m venv "$PIP_TOOLS_VENV"
  _pip_quiet "$PIP_TOOLS_VENV/bin/python" -m pip install -q "pip-tools==$PIP_TOOLS_VERSION"
}

# lock INPUT OUTPUT [pip-compile options]: no index or find-links lines in the lock (they are this
# machine's pip configuration, not the project's)
lock() {
  local input="$1" output="$2"; shift 2
  log "locking $input -> $output ..."
  _pip_quiet "$PIP_TOOLS_VENV/bin/pip-compile" --quiet --generate-hashes --allow-unsafe \
    --strip-extras --no-emit-index-url --no-emit-find-links --output-file "$output" "$@" "$input"
}

ensure_pip_tools
lock requirements.txt requirements.lock "$@"
lock requirements-dev.txt requirements-dev.lock -c requirements.lock "$@"
lock requirements-label-studio.txt requirements-label-studio.lock "$@"
lock docker/requirements-rq-dashboard.txt docker/requirements-rq-dashboard.lock "$@"
log "locked: commit the *.lock files with the requirements files"
