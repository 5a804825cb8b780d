"""Checks of the Docker deployment files (docker/, .dockerignore) that need no Docker engine.

No image is built or pulled here. What is checked: the compose files parse and have the expected
structure (services, volumes, GPU reservation, health checks, Redis AOF, Label Studio's variables);
every variable set for the backend and worker is a real setting or a documented knob; every command
the containers run exists; the Dockerfiles follow the conventions (pinned base, non-root, health
check, requirements before code, no secrets); .dockerignore keeps the context small and secret-free;
the gunicorn flags of docker/entrypoint.sh equal those of scripts/serve.sh. The entry point and the
health check script are also run for real (gunicorn + an RQ worker on a real Redis). Where the tools
exist, `docker compose config`, hadolint and shellcheck run too; otherwise those tests skip.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from backend.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "docker-compose.yml"
COMPOSE_CPU = DOCKER / "docker-compose.cpu.yml"
COMPOSE_MULTI_GPU = DOCKER / "docker-compose.multi-gpu.yml"
ENV_EXAMPLE = DOCKER / ".env.example"
DOCKERFILE = DOCKER / "Dockerfile"
DASHBOARD_DOCKERFILE = DOCKER / "Dockerfile.rq-dashboard"
ENTRYPOINT = DOCKER / "entrypoint.sh"
HEALTHCHECK = DOCKER / "healthcheck.py"
SERVE_SH = REPO / "scripts" / "serve.sh"

# Variables read by scripts/serve.sh and docker/entrypoint.sh that are not backend settings.
PROCESS_KNOBS = {"WORKERS", "THREADS", "GUNICORN_TIMEOUT_S", "HOST", "PORT", "RQ_WORKERS"}
# Read by torch itself (where torchvision's pretrained weights are cached), set by the compose file.
LIBRARY_VARIABLES = {"TORCH_HOME"}
SETTING_NAMES = set(Settings.env_names().values())
SECRET_WORDS = re.compile(r"(API_?KEY|TOKEN|PASS(WORD)?|SECRET|CREDENTIAL)", re.I)
BACKEND_SERVICES = ("backend", "worker")


# ----------------------------------------------------------------------------------------------
# helpers: YAML with compose's merge tags, interpolation, .env files, Dockerfiles, .dockerignore


@dataclasses.dataclass
class Tagged:
    """A value carrying compose's `!reset` / `!override` tag."""

    tag: str
    value: object


class ComposeLoader(yaml.SafeLoader):
    pass


def _tagged(tag):
    def construct(loader, node):
        if isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        elif isinstance(node, yaml.MappingNode):
            value = loader.construct_mapping(node, deep=True)
        else:
            value = loader.construct_scalar(node)
        return Tagged(tag, value)

    return construct


ComposeLoader.add_constructor("!reset", _tagged("!reset"))
ComposeLoader.add_constructor("!override", _tagged("!override"))


def load_yaml(path: Path):
    return yaml.load(path.read_text(), Loader=ComposeLoader)  # noqa: S506 (SafeLoader subclass)


@pytest.fixture(scope="module")
def compose():
    return load_yaml(COMPOSE)


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def referenced_vars(text: str) -> set[str]:
    return {m.group(1) for m in _VAR.finditer(text.replace("$$", ""))}


def yaml_vars(node) -> set[str]:
    """Variables a parsed compose file interpolates (comments are not interpolated)."""
    if isinstance(node, Tagged):
        return yaml_vars(node.value)
    if isinstance(node, dict):
        return set().union(set(), *(yaml_vars(k) | yaml_vars(v) for k, v in node.items()))
    if isinstance(node, list):
        return set().union(set(), *(yaml_vars(v) for v in node))
    return referenced_vars(node) if isinstance(node, str) else set()


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err} (enough for these files)."""

    def repl(m):
        name, op, arg = m.group(1), m.group(2), m.group(3)
        present = name in env
        current = env.get(name, "")
        if op == ":-":
            return current if current else arg
        if op == "-":
            return current if present else arg
        if op in (":?", "?"):
            if (op == ":?" and not current) or not present:
                raise ValueError(f"{name} is required: {arg}")
            return current
        return current

    return _VAR.sub(repl, value).replace("$$", "$")


def parse_env_file(path: Path) -> list[tuple[str, str, list[str]]]:
    """(key, value, comment lines right above it) for each KEY=VALUE line."""
    entries, comments, after_key = [], [], False
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped:
            comments, after_key = [], False
        elif stripped.startswith("#"):
            if after_key:  # a new block starts right after an assignment
                comments, after_key = [], False
            comments = comments + [stripped.lstrip("#").strip()]
        else:
            key, sep, value = stripped.partition("=")
            assert sep, f"not KEY=VALUE: {line!r}"
            # keys that follow each other share the comment block above them
            entries.append((key.strip(), value.strip(), comments))
            after_key = True
    return entries


@pytest.fixture(scope="module")
def env_example():
    return {key: value for key, value, _ in parse_env_file(ENV_EXAMPLE)}


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            instruction, _, args = full.partition(" ")
            out.append((instruction.upper(), args.strip()))
    assert not pending, f"{path.name} ends inside a line continuation"
    return out


def resolved_bases(path: Path) -> list[str]:
    """The image of every FROM, with ARG defaults declared before the first FROM substituted."""
    args, bases, stages = {}, [], set()
    for instruction, rest in dockerfile_instructions(path):
        if instruction == "ARG" and not bases:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip().strip('"')
        elif instruction == "FROM":
            words = [w for w in rest.split() if not w.startswith("--platform")]
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
            if image not in stages:
                bases.append(image)
            if len(words) >= 3 and words[1].upper() == "AS":
                stages.add(words[2])
    return bases


def dockerignore_rules() -> list[tuple[bool, re.Pattern]]:
    rules = []
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        pattern = pattern.strip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        rules.append((negate, re.compile(regex + "$")))
    return rules


def dockerignored(relpath: str, rules=None) -> bool:
    """Docker's rule: the last matching pattern wins; an excluded folder excludes its contents."""
    rules = rules if rules is not None else dockerignore_rules()
    parts = relpath.strip("/").split("/")
    excluded = False
    for depth in range(1, len(parts) + 1):
        prefix = "/".join(parts[:depth])
        for negate, regex in rules:
            if regex.match(prefix):
                excluded = not negate
        if excluded and depth < len(parts):
            return True
    return excluded


def gunicorn_command(path: Path) -> list[str]:
    """The tokens of the `gunicorn backend.wsgi:app ...` command in a shell script."""
    lines = path.read_text().splitlines()
    start = next(
        i
        for i, line in enumerate(lines)
        if not line.lstrip().startswith("#") and re.search(r"gunicorn\"?\s+backend\.wsgi:app", line)
    )
    text = ""
    for line in lines[start:]:
        if line.rstrip().endswith("\\"):
            text += line.rstrip()[:-1] + " "
        else:
            text += line
            break
    tokens = shlex.split(text, comments=True)
    tokens = tokens[tokens.index("backend.wsgi:app") :]
    return [t for t in tokens if t not in ("&", "$@")]


def normalise_shell_vars(token: str) -> str:
    return re.sub(r"\$\{(\w+)(?::-[^}]*)?\}", r"$\1", token)


def shell_defaults(tokens: list[str]) -> dict[str, str]:
    return dict(re.findall(r"\$\{(\w+):-([^}]*)\}", " ".join(tokens)))


def entrypoint_subcommands() -> set[str]:
    text = ENTRYPOINT.read_text()
    body = text[text.index('case "$cmd" in') : text.index("esac")]
    labels = set()
    for match in re.finditer(r"^\s+([\w|-]+)\)\s*$", body, re.M):
        labels.update(match.group(1).split("|"))
    return labels


def service_env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def volume_mounts(service: dict) -> dict[str, tuple[str, str]]:
    """target -> (source, mode) of a service's short-syntax volumes."""
    out = {}
    for entry in service.get("volumes", []):
        parts = re.findall(r"(?:\$\{[^}]*\}|[^:])+", entry)  # a ${VAR:-x} is one part
        source, target = parts[0], parts[1]
        out[target] = (source, parts[2] if len(parts) > 2 else "rw")
    return out


def effective_env(service: dict, dotenv: dict[str, str]) -> dict[str, str]:
    return {k: interpolate(v, dotenv) for k, v in service_env(service).items()}


# ----------------------------------------------------------------------------------------------
# the compose file


def test_compose_has_the_services_and_named_volumes(compose):
    services = compose["services"]
    assert {"redis", "backend", "worker", "label-studio", "rq-dashboard"} <= set(services)
    declared = set(compose.get("volumes") or {})
    assert {"redis-data", "models", "image-cache", "label-studio-data"} <= declared
    for name, service in services.items():
        for source, _ in volume_mounts(service).values():
            if not source.startswith((".", "/", "$")):
                assert source in declared, f"{name} mounts undeclared named volume {source!r}"
    assert compose.get("name"), "a project name keeps volume names independent of the folder"


def test_redis_persists_with_aof_on_a_volume(compose):
    redis = compose["services"]["redis"]
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+(-\w+)?", redis["image"]), "pin the Redis tag"
    command = redis["command"]
    command = command if isinstance(command, list) else command.split()
    assert command[command.index("--appendonly") + 1] == "yes"
    assert volume_mounts(redis)["/data"][0] == "redis-data"
    assert "maxmemory-policy" not in " ".join(command), "RQ needs noeviction"


def test_backend_and_worker_run_one_image_with_their_commands(compose):
    backend, worker = (compose["services"][name] for name in BACKEND_SERVICES)
    assert backend["image"] == worker["image"]
    # one service builds the image: compose runs a build per service that declares one
    assert "build" not in worker, "the worker would build the same image a second time"
    build = backend["build"]
    assert (COMPOSE.parent / build["context"]).resolve() == REPO
    assert (REPO / build["dockerfile"]) == DOCKERFILE
    assert backend["command"] == ["web"] and worker["command"] == ["worker"]
    assert set(backend["command"] + worker["command"]) <= entrypoint_subcommands()
    for service in (backend, worker):
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        mounts = volume_mounts(service)
        env = service_env(service)
        assert mounts[env["MODEL_DIR"]][0] == "models"
        assert mounts[env["IMAGE_CACHE_DIR"]][0] == "image-cache"
        assert env["REDIS_URL"] == "redis://redis:6379/0"


def test_worker_reserves_an_nvidia_gpu_and_can_be_scaled(compose):
    worker = compose["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert len(devices) == 1
    gpu = devices[0]
    assert gpu["driver"] == "nvidia"
    assert "gpu" in gpu["capabilities"]
    assert "count" in gpu or "device_ids" in gpu
    # `--scale worker=N` needs replicas that do not clash
    assert "container_name" not in worker
    assert "ports" not in worker
    assert "deploy" not in compose["services"]["backend"] or "devices" not in compose["services"]["backend"][
        "deploy"
    ].get("resources", {}).get("reservations", {})


def test_every_long_running_service_has_a_healthcheck(compose):
    services = compose["services"]
    for name in ("redis", "backend", "worker", "label-studio"):
        test = services[name]["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name
    assert services["backend"]["healthcheck"]["test"][1:] == ["python", "/app/docker/healthcheck.py", "web"]
    assert services["worker"]["healthcheck"]["test"][1:] == ["python", "/app/docker/healthcheck.py", "worker"]
    assert "/health" in " ".join(services["label-studio"]["healthcheck"]["test"])
    # the dashboard's check is in its Dockerfile
    assert any(i == "HEALTHCHECK" for i, _ in dockerfile_instructions(DASHBOARD_DOCKERFILE))


def test_label_studio_service_allows_the_backend_and_serves_local_files(compose):
    services = compose["services"]
    ls = services["label-studio"]
    assert ls["image"] == "heartexlabs/label-studio:1.23.2"
    env = service_env(ls)
    assert env["LOCAL_FILES_SERVING_ENABLED"] == "true"
    # the linear prediction import (the stock one recounts the whole project per request)
    assert env["fflag_fix_back_4620_memory_efficient_predictions_import_08012025_short"] == "true"
    root = env["LOCAL_FILES_DOCUMENT_ROOT"]
    ls_mounts = volume_mounts(ls)
    assert root in ls_mounts, "LOCAL_FILES_DOCUMENT_ROOT must be a mounted volume"
    shared_source = ls_mounts[root][0]
    assert ls_mounts["/label-studio/data"][0] == "label-studio-data"
    for name in BACKEND_SERVICES:
        backend_root = service_env(services[name])["LOCAL_FILES_DOCUMENT_ROOT"]
        source, mode = volume_mounts(services[name])[backend_root]
        assert source == shared_source, f"{name} must mount the volume Label Studio serves"
        assert mode == "ro"
    assert any(str(p).endswith(":8080") for p in ls["ports"])


def _published_addresses(compose, env: dict[str, str]) -> dict[str, list[str]]:
    """service -> the host address of each published port, as compose interpolates them."""
    out: dict[str, list[str]] = {}
    for name, service in compose["services"].items():
        for port in service.get("ports") or []:
            parts = interpolate(str(port), env).split(":")
            out.setdefault(name, []).append(parts[0] if len(parts) == 3 else "0.0.0.0")
    return out


@pytest.mark.parametrize("env_source", ["no .env", ".env.example"])
def test_the_stack_lets_no_one_in_by_default(compose, env_example, env_source):
    """What a deployment gets without changing anything: ports on the host's loopback, signup
    closed, and Label Studio's SSRF protection on, letting through the backend's address alone."""
    from scripts.ls_banned_subnets import LS_DEFAULT_BANNED_SUBNETS, banned_except, is_banned

    env = {} if env_source == "no .env" else dict(env_example)
    for name, addresses in _published_addresses(compose, env).items():
        assert addresses and all(a == "127.0.0.1" for a in addresses), (name, addresses)
    ls = {k: interpolate(str(v), env) for k, v in service_env(compose["services"]["label-studio"]).items()}
    assert ls["LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK"] == "true"
    assert ls["SSRF_PROTECTION_ENABLED"] == "true"
    assert ls["ML_BLOCK_LOCAL_IP"] == "true"
    assert ls["USE_DEFAULT_BANNED_SUBNETS"] == "false"
    banned = ls["USER_ADDITIONAL_BANNED_SUBNETS"].split(",")
    assert all(item == item.strip() and item for item in banned), "Label Studio does not strip"
    backend_ip = compose["services"]["backend"]["networks"]["default"]["ipv4_address"]
    subnet = compose["networks"]["default"]["ipam"]["config"][0]["subnet"]
    assert ipaddress.ip_address(backend_ip) in ipaddress.ip_network(subnet)
    assert banned == banned_except(backend_ip)
    assert not is_banned(backend_ip, banned)
    network = ipaddress.ip_network(subnet)
    for other in (network[2], network[3], network[-2]):  # redis, workers, Label Studio itself
        assert is_banned(str(other), banned), other
    for address in (
        "127.0.0.1",
        "169.254.169.254",
        "10.0.0.1",
        "192.168.1.1",
        "172.17.0.1",
        "100.100.100.200",
        "::1",
        "fd00:ec2::254",
        "0.0.0.0",
    ):
        assert is_banned(address, banned), address
    # the list covers every default range but the backend's address
    for subnet_text in LS_DEFAULT_BANNED_SUBNETS:
        net = ipaddress.ip_network(subnet_text)
        for probe in (net[0], net[-1]):
            assert is_banned(str(probe), banned) or str(probe) == backend_ip, probe


def test_the_ban_list_copy_is_label_studios():
    """scripts/ls_banned_subnets.py copies Label Studio's default ban list: compared with the
    installed Label Studio's source where its venv is here."""
    from scripts.ls_banned_subnets import LS_DEFAULT_BANNED_SUBNETS

    found = sorted(
        Path(sys.prefix).parent.glob(
            "venv-label-studio-*/lib/python3*/site-packages/label_studio/core/utils/io.py"
        )
    )
    if not found:
        pytest.skip("Label Studio's venv is not installed next to this one")
    source = found[-1].read_text()
    block = source[source.index("default_banned_subnets = [") :]
    block = block[: block.index("]")]
    assert tuple(re.findall(r"'([^']+)'", block)) == LS_DEFAULT_BANNED_SUBNETS


def test_dashboard_is_optional_and_reads_the_same_redis(compose):
    services = compose["services"]
    dashboard = services["rq-dashboard"]
    assert dashboard["profiles"] == ["dashboard"]
    assert service_env(dashboard)["RQ_DASHBOARD_REDIS_URL"] == service_env(services["backend"])["REDIS_URL"]
    assert (REPO / dashboard["build"]["dockerfile"]) == DASHBOARD_DOCKERFILE
    for service in (dashboard, services["backend"]):
        for port in service["ports"]:
            assert str(port).startswith("127.0.0.1:"), "debug ports stay on the host's loopback"
    for profiled in (n for n, s in services.items() if s.get("profiles")):
        assert profiled == "rq-dashboard", "only the dashboard is optional"


def test_cpu_override_drops_the_gpu_reservation():
    override = load_yaml(COMPOSE_CPU)
    assert set(override["services"]) == {"worker"}
    worker = override["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert isinstance(devices, Tagged) and devices.tag == "!reset"
    assert service_env(worker)["DEVICE"] == "cpu"
    assert "DEVICE" in SETTING_NAMES


def test_multi_gpu_override_pins_one_gpu_per_worker_service():
    override = load_yaml(COMPOSE_MULTI_GPU)
    for service in override["services"].values():
        assert service["extends"] == {"file": "docker-compose.yml", "service": "worker"}
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert isinstance(devices, Tagged) and devices.tag == "!override"
        assert [d["driver"] for d in devices.value] == ["nvidia"]
        assert devices.value[0]["device_ids"] and "count" not in devices.value[0]


# ----------------------------------------------------------------------------------------------
# variables: settings, .env.example


def test_backend_and_worker_variables_are_real_settings(compose):
    for name in BACKEND_SERVICES:
        for key, value in service_env(compose["services"][name]).items():
            assert key in SETTING_NAMES | PROCESS_KNOBS | LIBRARY_VARIABLES, (
                f"{name} sets {key}, which is neither a backend setting nor a serve.sh knob"
            )
            # a value taken from docker/.env keeps the setting's name there
            assert referenced_vars(value) <= {key}, f"{key} is read from {referenced_vars(value)}"
    # and the cpu override
    for key in service_env(load_yaml(COMPOSE_CPU)["services"]["worker"]):
        assert key in SETTING_NAMES | PROCESS_KNOBS


def test_env_example_variables_are_documented_and_used():
    entries = parse_env_file(ENV_EXAMPLE)
    keys = [key for key, _, _ in entries]
    assert len(keys) == len(set(keys)), "a variable is set twice"
    documented = set()
    text = ENV_EXAMPLE.read_text().splitlines()
    for i, line in enumerate(text):
        if re.match(r"^[A-Z_][A-Z0-9_]*=", line):
            j = i - 1
            while j >= 0 and re.match(r"^[A-Z_][A-Z0-9_]*=", text[j]):
                j -= 1
            if j >= 0 and text[j].startswith("#"):
                documented.add(line.split("=", 1)[0])
    assert set(keys) == documented, f"undocumented: {set(keys) - documented}"
    used = set()
    for path in (COMPOSE, COMPOSE_CPU, COMPOSE_MULTI_GPU):
        used |= yaml_vars(load_yaml(path))
    assert set(keys) == used, (
        f"in .env.example but unused: {set(keys) - used}; used but not in .env.example: {used - set(keys)}"
    )


def test_env_example_holds_no_secrets_and_explains_the_connection(env_example):
    assert "LABEL_STUDIO_API_KEY" in env_example
    for key, value in env_example.items():
        if SECRET_WORDS.search(key) and not key.endswith("_PORT"):
            assert value == "", f"{key} must be empty in the example"
    text = ENV_EXAMPLE.read_text()
    assert "http://backend:9090" in text
    assert "cp docker/.env.example docker/.env" in text
    assert (DOCKER / ".gitignore").read_text().splitlines().count(".env") == 1


def test_env_example_defaults_are_the_real_defaults(compose, env_example):
    compose_text = "\n".join(p.read_text() for p in (COMPOSE, COMPOSE_MULTI_GPU))
    compose_defaults = {m.group(1): m.group(3) for m in _VAR.finditer(compose_text) if m.group(2) == ":-"}
    setting_defaults = {}
    for f in dataclasses.fields(Settings):
        default = f.default
        if isinstance(default, bool):
            default = str(default).lower()
        setting_defaults[f.name.upper()] = "" if default in (None, ()) else str(default)
    entrypoint_defaults = shell_defaults(gunicorn_command(ENTRYPOINT))
    checked = 0
    for key, value, comments in parse_env_file(ENV_EXAMPLE):
        match = re.search(r"\bDefault: (\S+)", " ".join(comments))
        if not match:
            continue
        claimed = match.group(1).rstrip(".,")
        claimed = "" if claimed == "none" else claimed
        real = compose_defaults.get(key) or setting_defaults.get(key) or entrypoint_defaults.get(key)
        assert claimed == (real or ""), f"{key}: comment says {claimed!r}, the default is {real!r}"
        if value:
            assert value == claimed, f"{key}={value} differs from its documented default"
        checked += 1
    assert checked >= 15


@pytest.mark.parametrize("override", [None, COMPOSE_CPU], ids=["gpu", "cpu"])
def test_effective_backend_settings_are_valid(compose, env_example, override):
    services = dict(compose["services"])
    if override is not None:
        worker = dict(services["worker"])
        worker["environment"] = {
            **service_env(worker),
            **service_env(load_yaml(override)["services"]["worker"]),
        }
        services["worker"] = worker
    for name in BACKEND_SERVICES:
        env = effective_env(services[name], env_example)
        settings = Settings.from_env(env)
        assert str(settings.model_dir) == "/data/models"
        assert settings.label_studio_url == "http://label-studio:8080"
        assert settings.local_files_document_root == Path("/label-studio/files")
        assert not settings.basic_auth_enabled
    if override is not None:
        assert Settings.from_env(effective_env(services["worker"], env_example)).device == "cpu"


# ----------------------------------------------------------------------------------------------
# commands the containers run


def test_entrypoint_subcommands_and_the_modules_they_run_exist():
    assert {"web", "worker", "check", "healthcheck"} <= entrypoint_subcommands()
    text = ENTRYPOINT.read_text()
    assert "exec gunicorn backend.wsgi:app" in text
    assert "exec python -m backend.worker" in text
    for module in ("backend.wsgi", "backend.worker", "backend.settings"):
        assert importlib.util.find_spec(module) is not None, module
    # gunicorn's target resolves to a WSGI callable (imported in a child: it reads the settings)
    probe = (
        "import backend.wsgi as w, backend.worker as k; "
        "assert callable(w.app) and callable(k.main); print('ok')"
    )
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO),
        "MODEL_DIR": "/nonexistent/models",
        "LOG_LEVEL": "WARNING",
    }
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


def test_gunicorn_flags_match_scripts_serve_sh():
    serve = gunicorn_command(SERVE_SH)
    docker = gunicorn_command(ENTRYPOINT)
    assert [normalise_shell_vars(t) for t in serve] == [normalise_shell_vars(t) for t in docker]
    serve_defaults, docker_defaults = shell_defaults(serve), shell_defaults(docker)
    for knob in ("WORKERS", "THREADS", "GUNICORN_TIMEOUT_S"):
        assert serve_defaults[knob] == docker_defaults[knob], knob
    assert docker_defaults["HOST"] == "0.0.0.0", "a container listens on all its interfaces"
    assert docker_defaults["PORT"] == "9090"
    assert "werkzeug" not in ENTRYPOINT.read_text().lower()


# ----------------------------------------------------------------------------------------------
# Dockerfiles and .dockerignore


@pytest.mark.parametrize("path", [DOCKERFILE, DASHBOARD_DOCKERFILE], ids=lambda p: p.name)
def test_dockerfile_conventions(path):
    instructions = dockerfile_instructions(path)
    names = [i for i, _ in instructions]
    for base in resolved_bases(path):
        name, _, tag = base.partition(":")
        assert name == "python", base
        assert re.match(r"3\.11\.\d+-slim-\w+", tag), f"pin a Python 3.11 patch release: {base}"
        assert "latest" not in tag
    users = [args for i, args in instructions if i == "USER"]
    assert users, "no USER: the process would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert "HEALTHCHECK" in names
    for instruction, args in instructions:
        if instruction in ("ENV", "ARG"):
            for key in re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", " " + args):
                assert not SECRET_WORDS.search(key), f"{instruction} {key}: no secrets in images"
        if instruction == "RUN":
            if "pip install" in args:
                assert "--require-hashes" in args and re.search(r"-r \S+\.lock\b", args), (
                    "install from a lock file with hashes (scripts/lock.sh)"
                )


def test_backend_dockerfile_layers_and_runtime():
    instructions = dockerfile_instructions(DOCKERFILE)
    copies = [(n, args) for n, (i, args) in enumerate(instructions) if i == "COPY"]
    requirements = next(n for n, args in copies if "requirements.lock" in args)
    code = next(n for n, args in copies if re.search(r"\bbackend/", args))
    assert requirements < code, "requirements before code, for the layer cache"
    install = next(
        n for n, (i, args) in enumerate(instructions) if i == "RUN" and "requirements.lock" in args
    )
    assert requirements < install < code
    env = " ".join(args for i, args in instructions if i == "ENV")
    volumes = json.loads(next(args for i, args in instructions if i == "VOLUME"))
    model_dir = re.search(r"MODEL_DIR=(\S+)", env).group(1)
    cache_dir = re.search(r"IMAGE_CACHE_DIR=(\S+)", env).group(1)
    assert {model_dir, cache_dir} <= set(volumes)
    healthcheck = next(args for i, args in instructions if i == "HEALTHCHECK")
    assert "/app/docker/healthcheck.py" in healthcheck
    entrypoint = json.loads(next(args for i, args in instructions if i == "ENTRYPOINT"))
    assert entrypoint[-1] == "/app/docker/entrypoint.sh"
    assert json.loads(next(args for i, args in instructions if i == "CMD")) == ["web"]
    assert "9090" in next(args for i, args in instructions if i == "EXPOSE")
    # every /app/... path the image or compose runs is copied there from the repository
    workdir = next(args for i, args in instructions if i == "WORKDIR")
    assert workdir == "/app"
    copied = []
    for _, args in copies:
        words = [w for w in args.split() if not w.startswith("--")]
        if "--from" not in args:
            copied.extend(words[:-1])
    compose_text = COMPOSE.read_text()
    for needed in set(re.findall(r"/app/([\w./-]+)", compose_text + " ".join(a for _, a in instructions))):
        assert (REPO / needed).exists(), needed
        assert any(needed == c.rstrip("/") or needed.startswith(c.rstrip("/") + "/") for c in copied), (
            f"/app/{needed} is not copied into the image"
        )


def test_dockerfile_copies_exist_and_are_in_the_build_context():
    rules = dockerignore_rules()
    for path in (DOCKERFILE, DASHBOARD_DOCKERFILE):
        for instruction, args in dockerfile_instructions(path):
            if instruction != "COPY" or "--from" in args:
                continue
            for source in [w for w in args.split() if not w.startswith("--")][:-1]:
                assert (REPO / source).exists(), f"{path.name}: COPY {source} does not exist"
                assert not dockerignored(source, rules), f"{source} is excluded by .dockerignore"


@pytest.mark.parametrize(
    "relpath",
    [
        ".git/config",
        ".venv/bin/python",
        ".venv-ls/bin/python",
        "venv/bin/python",
        "data/models/1/model.pt",
        "demo-data/a.png",
        "benchmarks/cache/x",
        ".cache/x",
        "backend/__pycache__/app.cpython-311.pyc",
        ".pytest_cache/v",
        ".hypothesis/x",
        "docker/.env",
        "docker/local-files/img.jpg",
        "tests/unit/x.py",
        "model/weights.pt",
    ],
)
def test_dockerignore_excludes(relpath):
    assert dockerignored(relpath), relpath


@pytest.mark.parametrize(
    "relpath",
    [
        "requirements.lock",
        "backend/app.py",
        "model/trainer.py",
        "docker/entrypoint.sh",
        "docker/healthcheck.py",
        "docker/requirements-rq-dashboard.lock",
        "docker/Dockerfile",
    ],
)
def test_dockerignore_keeps_what_the_images_need(relpath):
    assert not dockerignored(relpath), relpath


def test_dashboard_uses_the_workers_rq_and_redis_versions():
    def pins(path):
        out = {}
        for line in path.read_text().splitlines():
            match = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line.strip())
            if match:
                out[match.group(1).lower()] = match.group(2)
        return out

    main, dashboard = pins(REPO / "requirements.txt"), pins(DOCKER / "requirements-rq-dashboard.txt")
    for package in ("rq", "redis"):
        assert dashboard[package] == main[package], package
    assert "rq-dashboard" in dashboard


def test_git_ignores_the_local_configuration():
    if not shutil.which("git") or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    for path in ("docker/.env", "docker/local-files/a.jpg"):
        result = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO)
        assert result.returncode == 0, f"git would not ignore {path}"
    result = subprocess.run(["git", "check-ignore", "-q", "docker/.env.example"], cwd=REPO)
    assert result.returncode == 1


# ----------------------------------------------------------------------------------------------
# external tools, where present


def _compose_command() -> list[str] | None:
    clean = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, env=clean)
        if probe.returncode == 0:
            return ["docker", "compose"]
    standalone = shutil.which("docker-compose")
    if standalone:
        probe = subprocess.run([standalone, "version"], capture_output=True, text=True, env=clean)
        match = re.search(r"v?(\d+)\.\d+", probe.stdout)
        if probe.returncode == 0 and match and int(match.group(1)) >= 2:
            return [standalone]
    return None


def _compose_config(*files: Path, profiles=()) -> dict:
    command = _compose_command()
    if command is None:
        pytest.skip(
            "Docker Compose v2+ is not installed here (no `docker compose` plugin and no "
            "v2 `docker-compose` binary); the YAML checks above still ran"
        )
    args = [*command, "--env-file", str(ENV_EXAMPLE)]
    for path in files:
        args += ["-f", str(path)]
    for profile in profiles:
        args += ["--profile", profile]
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    result = subprocess.run(
        [*args, "config", "--format", "json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "warn" not in result.stderr.lower(), result.stderr
    return json.loads(result.stdout)


def _devices(config, name):
    return (
        (config["services"][name].get("deploy") or {})
        .get("resources", {})
        .get("reservations", {})
        .get("devices")
    )


def test_docker_compose_config_accepts_the_stack():
    config = _compose_config(COMPOSE)
    assert set(config["services"]) == {"redis", "backend", "worker", "label-studio"}
    assert _devices(config, "worker") == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert config["services"]["worker"]["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert Path(config["services"]["backend"]["build"]["context"]) == REPO
    with_dashboard = _compose_config(COMPOSE, profiles=["dashboard"])
    assert "rq-dashboard" in with_dashboard["services"]


def test_docker_compose_config_cpu_variant_has_no_gpu():
    config = _compose_config(COMPOSE, COMPOSE_CPU)
    assert not _devices(config, "worker")
    assert config["services"]["worker"]["environment"]["DEVICE"] == "cpu"


def test_docker_compose_config_multi_gpu_variant():
    config = _compose_config(COMPOSE, COMPOSE_MULTI_GPU)
    assert _devices(config, "worker")[0]["count"] == 1
    extra = config["services"]["worker-gpu1"]
    assert _devices(config, "worker-gpu1") == [
        {"driver": "nvidia", "device_ids": ["1"], "capabilities": ["gpu"]}
    ]
    assert extra["command"] == ["worker"]
    assert extra["depends_on"]["redis"]["condition"] == "service_healthy"


def test_hadolint_accepts_the_dockerfiles():
    if not shutil.which("hadolint"):
        pytest.skip("hadolint is not installed here")
    result = subprocess.run(
        ["hadolint", str(DOCKERFILE), str(DASHBOARD_DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_accepts_the_entrypoint():
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck is not installed here")
    result = subprocess.run(["shellcheck", str(ENTRYPOINT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# ----------------------------------------------------------------------------------------------
# the entry point and the health checks, run for real (no Docker: the same scripts on this host)


def _entrypoint_env(**extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES | PROCESS_KNOBS}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def _load_module(path: Path):
    """The module in ``path``, a file of docker/ that is no package's (the image runs it by path)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_entrypoint_refuses_to_start_without_redis_or_with_a_bad_setting(tmp_path):
    result = subprocess.run(
        ["bash", str(ENTRYPOINT), "web"], env=_entrypoint_env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "REDIS_URL" in result.stderr
    result = subprocess.run(
        ["bash", str(ENTRYPOINT), "worker"],
        env=_entrypoint_env(REDIS_URL="redis://127.0.0.1:1/0", LPM_LOSS="hinge"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "LPM_LOSS" in result.stderr
    result = subprocess.run(
        ["bash", str(ENTRYPOINT), "check"],
        env=_entrypoint_env(MODEL_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "settings OK" in result.stderr
    # the container's default HOST (0.0.0.0) without basic auth and without the compose file's
    # ALLOW_UNAUTHENTICATED_NETWORK: refused before gunicorn binds anything
    result = subprocess.run(
        ["bash", str(ENTRYPOINT), "web"],
        env=_entrypoint_env(
            REDIS_URL="redis://127.0.0.1:1/0", MODEL_DIR=str(tmp_path), PORT=str(_free_port())
        ),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 1 and "beyond loopback" in result.stderr, result.stderr


@pytest.mark.redis
def test_entrypoint_web_and_worker_start_and_pass_their_healthchecks(redis_server, tmp_path):
    from redis import Redis
    from rq import Worker

    healthcheck = _load_module(DOCKER / "healthcheck.py")

    redis_url = redis_server.rsplit("/", 1)[0] + "/7"  # a db of its own
    port = _free_port()
    env = _entrypoint_env(
        REDIS_URL=redis_url,
        MODEL_DIR=str(tmp_path / "models"),
        IMAGE_CACHE_DIR=str(tmp_path / "cache"),
        HOST="127.0.0.1",
        PORT=str(port),
        LOG_LEVEL="WARNING",
    )
    web_log = tmp_path / "web.log"
    web = subprocess.Popen(
        ["bash", str(ENTRYPOINT), "web"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=web_log.open("w"),
    )
    worker = subprocess.Popen(
        ["bash", str(ENTRYPOINT), "worker"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    conn = Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + 120
        web_ok = worker_ok = False
        while time.monotonic() < deadline and not (web_ok and worker_ok):
            assert web.poll() is None, web_log.read_text()[-3000:]
            assert worker.poll() is None, "the worker exited"
            web_ok = (
                web_ok
                or subprocess.run(
                    [sys.executable, str(HEALTHCHECK), "web"], env=env, capture_output=True, timeout=30
                ).returncode
                == 0
            )
            # exec: the worker process is the one the entry point started
            worker_ok = worker_ok or any(w.pid == worker.pid for w in Worker.all(connection=conn))
            time.sleep(0.5)
        assert web_ok, "gunicorn never answered /health"
        assert worker_ok, "the RQ worker never registered"
        result = subprocess.run(
            [sys.executable, str(HEALTHCHECK), "worker"], env=env, capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0, result.stdout
        with pytest.raises(RuntimeError, match="no RQ worker"):
            healthcheck.check_worker(redis_url, hostname="not-this-container")
        result = subprocess.run(
            [sys.executable, str(HEALTHCHECK), "web"],
            env={**env, "PORT": str(_free_port())},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 1 and "unhealthy" in result.stdout
    finally:
        _stop(web)
        _stop(worker)
    # SIGTERM reached the processes themselves (exec) and they shut down cleanly
    assert web.returncode == 0
    assert worker.returncode == 0
    assert not any(w.pid == worker.pid for w in Worker.all(connection=conn))
    conn.flushdb()
    conn.close()
