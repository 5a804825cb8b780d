# shellcheck shell=bash
# Shared shell helpers: where the virtual environments live and how they are installed.
# Sourced by scripts/serve.sh, scripts/test.sh, scripts/demo.sh and scripts/python.sh (which
# runs the Python commands, scripts/compose_check.py among them).
#
# Every environment installs from a lock file with hashes (scripts/lock.sh writes them from the
# requirements files with pip-compile): requirements.lock (runtime), requirements-dev.lock (runtime
# and development tools), requirements-label-studio.lock (Label Studio's own environment).
# The project venv (torch, torchvision, label-studio-ml ...) is ~5.5 GB, so it lives in a cache
# directory keyed by the hash of requirements.lock (its comments do not count) and is reused by
# every checkout on the machine.
# So the project itself is never installed into it (an editable install would point every
# checkout at one of them): the scripts put their own checkout on PYTHONPATH instead.
#   AL_CACHE_DIR   where the venvs are cached (default: $XDG_CACHE_HOME or ~/.cache, then
#                  ls-active-learning)
#   VENV_DIR       project venv (default: $CACHE_ROOT/venv-<hash of requirements.lock>)
#   LS_VENV_DIR    Label Studio 1.23.2's own venv (its pins conflict with label-studio-ml's; default:
#                  $CACHE_ROOT/venv-label-studio-1.23.2-<hash of requirements-label-studio.lock>)
#   PYTHON         interpreter used to create venvs (default: python3.11)

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE_ROOT="${AL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ls-active-learning}"
LABEL_STUDIO_VERSION="1.23.2"
RUNTIME_LOCK="$REPO_ROOT/requirements.lock"
DEV_LOCK="$REPO_ROOT/requirements-dev.lock"
LS_LOCK="$REPO_ROOT/requirements-label-studio.lock"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

_pip_quiet() {
  # pip prints one warning per package for empty local index folders; hide only those lines
  local status_file rc
  status_file="$(mktemp)"
  { "$@"; echo $? >"$status_file"; } 2>&1 \
    | { grep -v -e "is ignored: it is neither a file nor a directory" >&2 || true; }
  rc="$(cat "$status_file")"; rm -f "$status_file"
  return "${rc:-1}"
}

# _pip_install_locked PYTHON LOCK: every package of LOCK at its pinned version, each file checked
# against the lock's hashes (pip refuses a package the lock does not pin, or a file that differs).
_pip_install_locked() {
  _pip_quiet "$1" -m pip install -q --require-hashes -r "$2" || { log "error: pip install -r $2 failed"; return 1; }
}

# Hash of a requirements file's requirements: comments (as pip reads them: from a "#" at the start
# of a line or after a space) and blank lines are dropped, so editing a comment reinstalls nothing.
# scripts/lib/lslocal/venv.py's requirements_hash is the same rule in Python.
_requirements_hash() {
  sed -E -e 's/(^|[[:space:]])#.*$//' -e 's/[[:space:]]+$//' -e '/^$/d' "$1" | sha256sum | cut -c1-10
}

python_for_venvs() {
  local py="${PYTHON:-python3.11}"
  command -v "$py" >/dev/null 2>&1 || { log "error: $py not found (Python 3.11 is required)"; return 1; }
  echo "$py"
}

# ensure_venv: create/install the project venv if missing; sets VENV_DIR and PY.
ensure_venv() {
  local lock_hash; lock_hash="$(_requirements_hash "$RUNTIME_LOCK")"
  VENV_DIR="${VENV_DIR:-$CACHE_ROOT/venv-$lock_hash}"
  PY="$VENV_DIR/bin/python"
  if [[ -f "$VENV_DIR/.installed-$lock_hash" ]]; then return 0; fi
  local base; base="$(python_for_venvs)" || return 1
  log "installing the project venv (requirements.lock) into $VENV_DIR (torch is large: a few minutes) ..."
  local t0=$SECONDS
  mkdir -p "$(dirname "$VENV_DIR")"
  [[ -x "$PY" ]] || "$base" -m venv "$VENV_DIR"
  # with the venv's own pip: an upgrade from the index would be the one unlocked package
  _pip_install_locked "$PY" "$RUNTIME_LOCK" || return 1
  touch "$VENV_DIR/.installed-$lock_hash"
  log "project venv ready in $((SECONDS - t0)) s"
}

# ensure_dev_tools: the development tools (pytest, ruff, mypy, matplotlib, ...) of
# requirements-dev.lock into the project venv; its runtime pins are requirements.lock's, so a
# changed requirements-dev.lock installs only what is new.
ensure_dev_tools() {
  ensure_venv || return 1
  local dev_hash; dev_hash="$(_requirements_hash "$DEV_LOCK")"
  if [[ -f "$VENV_DIR/.dev-installed-$dev_hash" ]]; then return 0; fi
  log "installing the development tools (requirements-dev.lock) into the project venv ..."
  _pip_install_locked "$PY" "$DEV_LOCK" || return 1
  touch "$VENV_DIR/.dev-installed-$dev_hash"
}

# ensure_ls_venv: Label Studio in its own venv, keyed by its lock; sets LS_VENV_DIR.
ensure_ls_venv() {
  local lock_hash; lock_hash="$(_requirements_hash "$LS_LOCK")"
  LS_VENV_DIR="${LS_VENV_DIR:-$CACHE_ROOT/venv-label-studio-$LABEL_STUDIO_VERSION-$lock_hash}"
  export LS_VENV_DIR
  if [[ -f "$LS_VENV_DIR/.installed" ]]; then return 0; fi
  local base; base="$(python_for_venvs)" || return 1
  log "installing Label Studio $LABEL_STUDIO_VERSION (requirements-label-studio.lock) into $LS_VENV_DIR (about 2-3 minutes) ..."
  local t0=$SECONDS
  mkdir -p "$(dirname "$LS_VENV_DIR")"
  [[ -x "$LS_VENV_DIR/bin/python" ]] || "$base" -m venv "$LS_VENV_DIR"
  _pip_install_locked "$LS_VENV_DIR/bin/python" "$LS_LOCK" || return 1
  touch "$LS_VENV_DIR/.installed"
  log "Label Studio venv ready in $((SECONDS - t0)) s"
}
