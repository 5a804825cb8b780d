# shellcheck shell=bash
# Shared shell helpers: where the virtual environments live and how they are installed.
# Sourced by scripts/serve.sh, scripts/test.sh, scripts/demo.sh and scripts/python.sh (which
# runs the Python commands, scripts/compose_check.py among them).
#
# The project venv (torch, torchvision, label-studio-ml ...) is ~5.5 GB, so it lives in a cache
# directory keyed by the hash of requirements.txt's requirements (its comments do not count) and is
# reused by every checkout on the machine.
# So the project itself is never installed into it (an editable install would point every
# checkout at one of them): the scripts put their own checkout on PYTHONPATH instead.
#   VENV_DIR       project venv (default: $CACHE_ROOT/venv-<hash of requirements.txt>)
#   LS_VENV_DIR    Label Studio 1.23.2's own venv (its pins conflict with label-studio-ml's)
#   PYTHON         interpreter used to create venvs (default: python3.11)

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE_ROOT="${AL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ls-active-learning}"
LABEL_STUDIO_VERSION="1.23.2"

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

# Hash of a requirements file's requirements: comments (as pip reads them: from a "#" at the start
# of a line or after a space) and blank lines are dropped, so editing a comment reinstalls nothing.
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
  local req_hash; req_hash="$(_requirements_hash "$REPO_ROOT/requirements.txt")"
  VENV_DIR="${VENV_DIR:-$CACHE_ROOT/venv-$req_hash}"
  PY="$VENV_DIR/bin/python"
  if [[ -f "$VENV_DIR/.installed-$req_hash" ]]; then return 0; fi
  local base; base="$(python_for_venvs)" || return 1
  log "installing the project venv into $VENV_DIR (torch is large: a few minutes) ..."
  local t0=$SECONDS
  mkdir -p "$(dirname "$VENV_DIR")"
  [[ -x "$PY" ]] || "$base" -m venv "$VENV_DIR"
  _pip_quiet "$PY" -m pip install -q --upgrade pip
  _pip_quiet "$PY" -m pip install -q -r "$REPO_ROOT/requirements.txt" || { log "error: pip install failed"; return 1; }
  touch "$VENV_DIR/.installed-$req_hash"
  log "project venv ready in $((SECONDS - t0)) s"
}

# ensure_dev_tools: the development tools of requirements-dev.txt (pytest, ruff, mypy, matplotlib,
# ...) into the project venv; a changed requirements-dev.txt installs only what is new.
ensure_dev_tools() {
  ensure_venv || return 1
  local dev_hash; dev_hash="$(_requirements_hash "$REPO_ROOT/requirements-dev.txt")"
  if [[ -f "$VENV_DIR/.dev-installed-$dev_hash" ]]; then return 0; fi
  log "installing the development tools (requirements-dev.txt) into the project venv ..."
  _pip_quiet "$PY" -m pip install -q -r "$REPO_ROOT/requirements-dev.txt" || { log "error: pip install failed"; return 1; }
  touch "$VENV_DIR/.dev-installed-$dev_hash"
}

# ensure_ls_venv: Label Studio in its own venv; sets LS_VENV_DIR.
ensure_ls_venv() {
  LS_VENV_DIR="${LS_VENV_DIR:-$CACHE_ROOT/venv-label-studio-$LABEL_STUDIO_VERSION}"
  export LS_VENV_DIR
  if [[ -f "$LS_VENV_DIR/.installed" ]]; then return 0; fi
  local base; base="$(python_for_venvs)" || return 1
  log "installing Label Studio $LABEL_STUDIO_VERSION into $LS_VENV_DIR (about 2-3 minutes) ..."
  local t0=$SECONDS
  mkdir -p "$(dirname "$LS_VENV_DIR")"
  [[ -x "$LS_VENV_DIR/bin/python" ]] || "$base" -m venv "$LS_VENV_DIR"
  _pip_quiet "$LS_VENV_DIR/bin/python" -m pip install -q "label-studio==$LABEL_STUDIO_VERSION" || { log "error: pip install failed"; return 1; }
  touch "$LS_VENV_DIR/.installed"
  log "Label Studio venv ready in $((SECONDS - t0)) s"
}
