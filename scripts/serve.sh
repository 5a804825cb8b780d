#!/usr/bin/env bash
# Start the backend for an existing Label Studio, in the foreground.
#
#   LABEL_STUDIO_URL=http://127.0.0.1:8080 LABEL_STUDIO_API_KEY=<token> scripts/serve.sh
#
# Creates/installs the venv if missing, starts an embedded Redis when REDIS_URL is unset, one or
# more RQ workers (RQ_WORKERS, default 1) and the HTTP backend under gunicorn on $HOST:$PORT
# (default 127.0.0.1:9090). Every other setting is an environment variable: see docs/settings.md.
# Ctrl-C (or SIGTERM) stops everything it started.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$REPO_ROOT"

ensure_venv
export PORT="${PORT:-9090}"
HOST="${HOST:-127.0.0.1}"
export MODEL_DIR="${MODEL_DIR:-$REPO_ROOT/data/models}"
DATA_ROOT="$(dirname "$MODEL_DIR")"
mkdir -p "$MODEL_DIR"
export LABEL_STUDIO_URL="${LABEL_STUDIO_URL:-http://127.0.0.1:8080}"
[[ -n "${LABEL_STUDIO_API_KEY:-}" ]] || log "warning: LABEL_STUDIO_API_KEY is empty: training cannot read Label Studio"

# Fail before starting anything if a setting is wrong (the message names the variable).
"$PY" - <<'PYCHECK'
import sys
from backend.settings import Settings, SettingsError
try:
    Settings.from_env()   # also rejects an unknown STRATEGY
except SettingsError as exc:
    sys.exit(f"error: {exc}")
PYCHECK

children=()
redis_pid=""
stop_all() {
  trap - EXIT INT TERM
  # The embedded Redis goes last: the workers (and RQ's scheduler, their child) release their
  # locks in it on the way out, and a Redis already gone makes them log a traceback.
  local pid
  for pid in "${children[@]}"; do
    [[ "$pid" == "$redis_pid" ]] || kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${children[@]}"; do
    [[ "$pid" == "$redis_pid" ]] || wait "$pid" 2>/dev/null || true
  done
  if [[ -n "$redis_pid" ]]; then
    sleep 1   # RQ's scheduler process outlives its worker by a moment
    kill -TERM "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ -z "${REDIS_URL:-}" ]]; then
  redis_out="$(mktemp)"
  "$PY" -m backend.embedded_redis --dir "$DATA_ROOT/redis" >"$redis_out" &
  redis_pid=$!
  children+=("$redis_pid")
  for _ in $(seq 1 150); do
    grep -q '^REDIS_URL=' "$redis_out" 2>/dev/null && break
    kill -0 "${children[-1]}" 2>/dev/null || { log "error: embedded Redis failed to start"; exit 1; }
    sleep 0.1
  done
  REDIS_URL="$(sed -n 's/^REDIS_URL=//p' "$redis_out")"
  rm -f "$redis_out"
  [[ -n "$REDIS_URL" ]] || { log "error: embedded Redis did not report its address"; exit 1; }
  log "embedded Redis at $REDIS_URL (data in $DATA_ROOT/redis)"
fi
export REDIS_URL

for _ in $(seq 1 "${RQ_WORKERS:-1}"); do
  "$PY" -m backend.worker &
  children+=($!)
done

log "backend on http://$HOST:$PORT (Label Studio: $LABEL_STUDIO_URL, models: $MODEL_DIR)"
"$VENV_DIR/bin/gunicorn" backend.wsgi:app \
  --bind "$HOST:$PORT" \
  --workers "${WORKERS:-1}" --threads "${THREADS:-8}" \
  --timeout "${GUNICORN_TIMEOUT_S:-120}" \
  --limit-request-line 8190 --limit-request-fields 100 \
  --access-logfile - --config python:backend.gunicorn_conf &
children+=($!)

# Stay in the foreground; if any child dies, stop the rest and report it.
set +e
wait -n "${children[@]}"
rc=$?
log "a backend process exited (code $rc); stopping the others"
exit "$rc"
