"""Starting and stopping a Label Studio server on a loopback port.

Without ``--debug`` Label Studio 1.23.2 silently moves to the next free port when the requested one
is busy; ``--debug`` only switches that search off (runserver then exits with "That port is
already in use"), so ``start_label_studio`` checks the port and passes ``--debug``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import requests

from backend.ls_auth import LabelStudioError
from scripts.lib.lslocal.venv import (
    DB_FILE_NAME,
    LOG_TAIL_CHARS,
    ensure_db_template,
    label_studio_executable,
    offline_environment,
)

DEFAULT_START_TIMEOUT_S = 180.0


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS reports free right now (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Like LS's server (allow_reuse_address): connections of a stopped server lingering in
        # TIME_WAIT must not count as busy, an active listener still does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    # LS itself probes "localhost" by connecting; match that too (localhost may resolve to ::1).
    for family, _, _, _, address in socket.getaddrinfo("localhost", port, type=socket.SOCK_STREAM):
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            if probe.connect_ex(address) == 0:
                return False
    return True


class LabelStudioProcess:
    """A running Label Studio server; ``stop()`` ends its whole process group. A context manager."""

    def __init__(
        self,
        process: subprocess.Popen,
        url: str,
        port: int,
        data_dir: Path,
        log_path: Path,
        username: str,
        password: str,
        started_in_s: float = 0.0,
    ):
        self.process = process
        self.url = url
        self.port = port
        self.data_dir = data_dir
        self.log_path = log_path
        self.username = username
        self.password = password
        self.started_in_s = started_in_s

    def is_running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.process.poll() is not None:
            return
        _signal_group(self.process, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _signal_group(self.process, signal.SIGKILL)
            self.process.wait(timeout=timeout_s)

    def __enter__(self) -> LabelStudioProcess:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (
            f"LabelStudioProcess(url={self.url!r}, pid={self.process.pid}, data_dir={str(self.data_dir)!r})"
        )


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the starting thread dies (Linux only).

    LS runs in its own session (so stop() can signal the group), which also means it would outlive a
    test run or CLI killed by a signal; the parent-death signal prevents that orphaned server.
    Start LS from a thread that lives as long as you need it (the main thread, normally).
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: stop() and the CLI's signal handling still apply


def stop_serve(process: subprocess.Popen, timeout_s: float = 60) -> None:
    """Stop a ``scripts/serve.sh`` started with ``start_new_session``: TERM to serve.sh alone,
    which stops its children in order (HTTP server and workers, then the embedded Redis; a TERM
    to the whole group stopped Redis under the workers, which logged tracebacks); the group is
    killed only if it has not exited within ``timeout_s`` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _signal_group(process, signal.SIGKILL)
        process.wait(timeout=30)


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)  # started with start_new_session, so its pid is the group id
    except ProcessLookupError:
        pass


def start_label_studio(
    venv_dir: os.PathLike | str,
    data_dir: os.PathLike | str,
    port: int,
    username: str,
    password: str,
    user_token: str | None = None,
    extra_env: dict | None = None,
    log_path: os.PathLike | str | None = None,
    *,
    host: str = "127.0.0.1",
    enable_legacy_api_token: bool = False,
    local_files_root: os.PathLike | str | None = None,
    use_db_template: bool = True,
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
) -> LabelStudioProcess:
    """Start LS on ``host:port`` with its data in ``data_dir`` and wait until ``GET /health`` answers.

    ``username``/``password``/``user_token``/``enable_legacy_api_token`` take effect when the user and
    the organization are created, i.e. on the first start with a new data dir. ``user_token`` becomes
    the user's legacy token; it authenticates only where legacy tokens are enabled.
    Raises LabelStudioError (with the tail of the LS log) if it does not come up in time.
    On Linux LS gets SIGTERM when the thread that started it ends, so a killed test run leaves no server.
    """
    if "@" not in username:
        raise ValueError(f"LS logs in by email: username must be an email address, got {username!r}")
    if user_token is not None and len(user_token) <= 5:
        raise ValueError("LS ignores a user_token of 5 characters or fewer")
    data_dir = Path(data_dir).absolute()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = Path(log_path) if log_path else data_dir / "label-studio.log"
    if not port_is_free(host, port):
        raise LabelStudioError(f"port {port} on {host} is busy; LS would silently move to another port")
    if use_db_template and not (data_dir / DB_FILE_NAME).exists():
        shutil.copyfile(ensure_db_template(venv_dir), data_dir / DB_FILE_NAME)

    url = f"http://{host}:{port}"
    env = offline_environment(data_dir, Path(local_files_root or data_dir).absolute(), extra_env)
    # Credentials travel in the environment, not argv: not visible in `ps`, and a password that
    # starts with "-" would break LS's argument parsing.
    env["LABEL_STUDIO_USERNAME"] = username
    env["LABEL_STUDIO_PASSWORD"] = password
    if user_token:
        env["LABEL_STUDIO_USER_TOKEN"] = user_token
    command = [
        str(label_studio_executable(venv_dir)),
        "start",
        "--no-browser",
        "--internal-host",
        host,  # bind address (LS default: 0.0.0.0)
        "--host",
        url,  # the URL LS puts in links and sends to ML backends
        "--port",
        str(port),
        "--debug",  # only effect in 1.23.2: fail on a busy port instead of silently moving
    ]
    if enable_legacy_api_token:
        command.append("--enable-legacy-api-token")

    started = time.monotonic()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=str(data_dir),
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    server = LabelStudioProcess(process, url, port, data_dir, log_path, username, password)
    try:
        _wait_until_healthy(server, started + start_timeout_s)
    except BaseException:
        server.stop()
        raise
    server.started_in_s = time.monotonic() - started
    return server


def _wait_until_healthy(server: LabelStudioProcess, deadline: float) -> None:
    while True:
        if not server.is_running():
            raise LabelStudioError(
                f"Label Studio exited with code {server.process.returncode} before it was ready "
                f"(log {server.log_path}):\n{server.log_tail()}"
            )
        if _health_is_up(server.url):
            return
        if time.monotonic() > deadline:
            raise LabelStudioError(
                f"Label Studio did not answer {server.url}/health in time (log {server.log_path}):\n"
                f"{server.log_tail()}"
            )
        time.sleep(0.5)


def direct_session() -> requests.Session:
    """A session that ignores *_PROXY variables: this traffic is for the local server only."""
    session = requests.Session()
    session.trust_env = False
    return session


def _health_is_up(url: str) -> bool:
    try:
        with direct_session() as session:
            response = session.get(f"{url}/health", timeout=2)
        return response.status_code == 200 and response.json().get("status") == "UP"
    except (requests.RequestException, ValueError):
        return False
