#!/usr/bin/env bash
# Entry point of the backend image (docker/Dockerfile). One image, one process per container:
#
#   web          the HTTP backend Label Studio calls: gunicorn backend.wsgi:app on $HOST:$PORT
#                (default 0.0.0.0:9090), WORKERS / THREADS / GUNICORN_TIMEOUT_S as in scripts/serve.sh;
#                extra arguments are passed on to gunicorn
#   worker       one RQ worker (training and scoring jobs): python -m backend.worker [--burst]
#   check        validate the settings (environment variables) and exit
#   healthcheck  python docker/healthcheck.py [web|worker]
#   anything else is run as a command (e.g. `bash` for a shell in the image)
#
# web and worker need REDIS_URL (the compose file points it at its redis service): unlike
# scripts/serve.sh, this script never starts an embedded Redis, because the web container and the
# worker containers must share one queue.
set -euo pipefail

APP_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$APP_DIR"

log() { printf '[entrypoint] %s\n' "$*" >&2; }

check_settings() {
  # Fail before starting anything if a setting is wrong (the message names the variable).
  python -c "from backend.settings import Settings; Settings.from_env()"
}

require_redis() {
  if [[ -z "${REDIS_URL:-}" ]]; then
    log "error: REDIS_URL is not set; web and worker containers must share one Redis (e.g. redis://redis:6379/0)"
    exit 2
  fi
}

cmd="${1:-web}"
[[ $# -gt 0 ]] && shift

case "$cmd" in
  web)
    require_redis
    check_settings
    [[ -n "${LABEL_STUDIO_API_KEY:-}" ]] || log "warning: LABEL_STUDIO_API_KEY is empty: training cannot read Label Studio"
    # Keep these flags identical to the gunicorn command in scripts/serve.sh (a test compares them);
    # only HOST's default differs: a container must listen on all its interfaces.
    exec gunicorn backend.wsgi:app \
      --bind "${HOST:-0.0.0.0}:${PORT:-9090}" \
      --workers "${WORKERS:-1}" --threads "${THREADS:-8}" \
      --timeout "${GUNICORN_TIMEOUT_S:-120}" \
      --limit-request-line 8190 --limit-request-fields 100 \
      --access-logfile - --config python:backend.gunicorn_conf "$@"
    ;;
  worker)
    require_redis
    check_settings
    exec python -m backend.worker "$@"
    ;;
  check)
    check_settings
    log "settings OK"
    ;;
  healthcheck)
    exec python "$APP_DIR/docker/healthcheck.py" "$@"
    ;;
  *)
    exec "$cmd" "$@"
    ;;
esac
