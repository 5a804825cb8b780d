#!/usr/bin/env bash
# The repository-wide mechanical edits, in one re-runnable step (development only). Idempotent: a
# second run changes nothing, so it is run again after a merge brings code written before them.
#   scripts/dev/normalize.sh
# 1. One spelling per concept (module renames with git mv, then every reference rewritten):
#      model/coldstart.py      -> model/cold_start.py       (as backend/rounds/cold_start.py)
#      model/selfsup.py        -> model/self_supervised.py  (as backend/self_supervised.py and the
#                                                            SELF_SUPERVISED_* settings)
#      backend/defaults.py     -> backend/constants.py      (fixed states and timings; the tunable
#                                                            ones are backend/settings.py)
#      backend/scoring_setup.py -> backend/image_scoring.py (fetching task images and scoring them)
#    and the identifiers that spelled them the other way (new_cold_start_version,
#    COLD_START_*, SelfSupervisedConfig, ...). Unchanged on purpose: setting and environment names
#    (COLDSTART_PICK, coldstart_pick), the version prefix "coldstart-" stored in model stores and
#    Label Studio, cached file names (selfsup.pt), and the benchmarks' recorded names (their
#    modules, --embedding selfsup, recipes such as selfsup_init, result fields and files).
# 2. ruff: import order, pyupgrade and bugbear fixes (`ruff check --fix`; zip() calls get an
#    explicit strict=False, what they did before), then `ruff format` (pyproject.toml [tool.ruff]).
# Afterwards `scripts/python.sh -m ruff check .` lists what needs a hand fix, if anything.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"
cd "$REPO_ROOT"
ensure_dev_tools

# old path -> new path (git mv when only the old one exists)
RENAMES=(
  model/coldstart.py:model/cold_start.py
  model/selfsup.py:model/self_supervised.py
  backend/defaults.py:backend/constants.py
  backend/scoring_setup.py:backend/image_scoring.py
  tests/unit/model/test_model_coldstart.py:tests/unit/model/test_model_cold_start.py
  tests/unit/model/test_model_selfsup.py:tests/unit/model/test_model_self_supervised.py
)

# perl substitutions over every tracked text file (recorded benchmark results and this script
# excepted); each leaves text it already rewrote alone
SUBSTITUTIONS='
s{\bmodel([./])coldstart\b}{model${1}cold_start}g;
s{\bmodel([./])selfsup\b}{model${1}self_supervised}g;
s{(?<![\w/.-])coldstart\.py\b}{cold_start.py}g;
s{(?<![\w/.-])selfsup\.py\b}{self_supervised.py}g;
s{\bfrom model import coldstart\b}{from model import cold_start}g;
s{\("selfsup", }{("self_supervised", }g;
s{\bbackend([./])defaults\b}{backend${1}constants}g;
s{`defaults\.py`}{`constants.py`}g;
s{\bbackend([./])scoring_setup\b}{backend${1}image_scoring}g;
s{`scoring_setup\.py`}{`image_scoring.py`}g;
s{\bcold-start-coldstartpy\b}{cold-start-cold_startpy}g;
s{-selfsuppy\b}{-self_supervisedpy}g;
s{\btest_model_coldstart\b}{test_model_cold_start}g;
s{\btest_model_selfsup\b}{test_model_self_supervised}g;
s{\bnew_coldstart_version\b}{new_cold_start_version}g;
s{\bCOLDSTART_(VERSION_RE|FIRST_CLUSTERS|THUMBNAIL_PX|PICKS)\b}{COLD_START_$1}g;
s{\bSelfSupConfig\b}{SelfSupervisedConfig}g;
s{\bSELFSUP_AUGMENT\b}{SELF_SUPERVISED_AUGMENT}g;
s{\bpretrain_selfsup\b}{pretrain_self_supervised}g;
'
# in Python only: the module object imported as `from model import coldstart`
PY_SUBSTITUTIONS='s{(?<![\w/.-])coldstart(?=[.,)])(?!\.py)}{cold_start}g;'

rename_modules() {
  local pair old new
  for pair in "${RENAMES[@]}"; do
    old="${pair%%:*}"; new="${pair#*:}"
    if [[ -e "$old" && -e "$new" ]]; then
      log "error: both $old and $new exist: merge $old into $new by hand, then run again"; exit 1
    fi
    if [[ -e "$old" ]]; then git mv "$old" "$new"; log "renamed $old -> $new"; fi
  done
}

text_files() {
  git ls-files -z -- . ':!benchmarks/results' ':!scripts/dev/normalize.sh' \
    | xargs -0 grep -IlZ -e '' --
}

rewrite_references() {
  local errors
  errors="$(text_files | xargs -0 perl -i -pe "$SUBSTITUTIONS" -- 2>&1 || true)"
  [[ -z "$errors" ]] || { log "error: $errors"; exit 1; }
  git ls-files -z -- '*.py' | xargs -0 perl -i -pe "$PY_SUBSTITUTIONS" --
}

rename_modules
rewrite_references
"$VENV_DIR/bin/ruff" check --no-cache --fix --silent --exit-zero .
"$VENV_DIR/bin/ruff" check --no-cache --fix --unsafe-fixes --select B905 --silent --exit-zero .
"$VENV_DIR/bin/ruff" format --no-cache --quiet .
log "normalized: $(git status --porcelain | wc -l) paths differ from the last commit (git diff --stat)"
if ! "$VENV_DIR/bin/ruff" check --no-cache --quiet .; then
  log "ruff's findings above need a hand fix"
fi
