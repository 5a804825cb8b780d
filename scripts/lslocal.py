"""Run and drive a real, local Label Studio 1.23.2 for integration tests and the demo.

Importable (tests put ``scripts/`` on sys.path) and a small CLI (``python scripts/lslocal.py --help``).
Uses only the standard library and ``requests``; all traffic goes to the local server.

Facts this module relies on (measured against label-studio 1.23.2):
- ``label-studio --version`` prints the version and then STARTS THE SERVER on 0.0.0.0:8080 (it never
  returns); ``label-studio version`` (sub-command) prints and exits.
- Migrating an empty database takes about a minute; a copy of a migrated empty database makes a fresh
  start take seconds, so we keep one next to the venv (``ensure_db_template``).
- Without ``--debug`` LS silently moves to the next free port when the requested one is busy; ``--debug``
  only switches that search off (runserver then exits with "That port is already in use").
- Legacy tokens (``Authorization: Token <t>``) are refused unless the organization enables them.
  Personal access tokens (PATs) are JWT refresh tokens exchanged at ``/api/token/refresh/`` for access
  tokens that live 300 s; a PAT sent directly as ``Bearer`` is refused.
"""

from __future__ import annotations

import argparse
import base64
import json
import mimetypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import requests

LABEL_STUDIO_VERSION = "1.23.2"
# Label Studio reads a feature flag from an environment variable of the same name.
PREDICTIONS_IMPORT_FLAG = "fflag_fix_back_4620_memory_efficient_predictions_import_08012025_short"
INSTALL_MARKER = ".installed"  # same marker as scripts/lib/common.sh's ensure_ls_venv
DB_TEMPLATE_NAME = f"lslocal-empty-db-{LABEL_STUDIO_VERSION}.sqlite3"
DB_FILE_NAME = "label_studio.sqlite3"
DEFAULT_START_TIMEOUT_S = 180.0
PIP_INSTALL_TIMEOUT_S = 1800.0
MIGRATE_TIMEOUT_S = 600.0
HTTP_TIMEOUT_S = 60.0
MAX_FILES_PER_IMPORT = 100  # LS DATA_UPLOAD_MAX_NUMBER_FILES default
ACCESS_TOKEN_REFRESH_MARGIN_S = 30.0
SAMPLING_VALUES = ("Sequential sampling", "Uniform sampling", "Uncertainty sampling")
LOG_TAIL_CHARS = 4000


def cache_root() -> Path:
    """Where venvs and downloads are cached; the same rule as scripts/lib/common.sh."""
    if os.environ.get("AL_CACHE_DIR"):
        return Path(os.environ["AL_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ls-active-learning"


def default_ls_venv_dir() -> Path:
    """$LS_VENV_DIR, else the shared cache location scripts/lib/common.sh uses."""
    if os.environ.get("LS_VENV_DIR"):
        return Path(os.environ["LS_VENV_DIR"])
    return cache_root() / f"venv-label-studio-{LABEL_STUDIO_VERSION}"


class LabelStudioError(RuntimeError):
    """Label Studio could not be installed, started or driven; the message says why."""


# --------------------------------------------------------------------------------------------------
# venv
# --------------------------------------------------------------------------------------------------


def ensure_ls_venv(venv_dir: os.PathLike | str | None = None, python: str = "python3.11") -> Path:
    """Return ``venv_dir``, creating it with label-studio installed if its marker file is missing.

    Label Studio gets its own venv because its dependency set conflicts with label-studio-ml's pins.
    """
    venv_dir = Path(venv_dir or default_ls_venv_dir()).absolute()
    marker = venv_dir / INSTALL_MARKER
    if marker.exists():
        return venv_dir
    venv_dir.parent.mkdir(parents=True, exist_ok=True)
    if not (venv_dir / "bin" / "python").exists():
        _run_checked([python, "-m", "venv", str(venv_dir)], "create the Label Studio venv", timeout_s=300)
    pip = [str(venv_dir / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
    _run_pip(pip + [f"label-studio=={LABEL_STUDIO_VERSION}"])
    marker.write_text(f"label-studio=={LABEL_STUDIO_VERSION}\n")
    return venv_dir


def _run_pip(command: list[str]) -> None:
    """Run pip, echoing its output without the noisy "... is ignored" warning lines."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    timer = threading.Timer(PIP_INSTALL_TIMEOUT_S, process.kill)
    timer.start()
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if "is ignored" in line:
                continue
            sys.stdout.write(line)
            tail = (tail + [line])[-40:]
        returncode = process.wait()
    finally:
        timer.cancel()
    if returncode != 0:
        raise LabelStudioError(
            f'pip install failed (exit {returncode}): {" ".join(command)}\n' + "".join(tail)
        )


def _run_checked(command: list[str], what: str, timeout_s: float, env: Optional[dict] = None) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired as error:
        raise LabelStudioError(f"could not {what}: timed out after {timeout_s:.0f} s") from error
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-LOG_TAIL_CHARS:]
        raise LabelStudioError(f"could not {what} (exit {done.returncode}):\n{output}")
    return done.stdout


def label_studio_executable(venv_dir: os.PathLike | str) -> Path:
    executable = Path(venv_dir).absolute() / "bin" / "label-studio"
    if not executable.exists():
        raise LabelStudioError(f"{executable} not found: create the venv with ensure_ls_venv({venv_dir!r})")
    return executable


# --------------------------------------------------------------------------------------------------
# environment
# --------------------------------------------------------------------------------------------------


def offline_environment(data_dir: Path, local_files_root: Path, extra_env: Optional[dict] = None) -> dict:
    """Environment for an LS process that starts fast, stays offline and accepts local ML backends."""
    env = dict(os.environ)
    env.update(
        {
            "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
            # Pin the database: get_env() also reads un-prefixed names a developer might have set.
            "LABEL_STUDIO_DJANGO_DB": "sqlite",
            "LABEL_STUDIO_DATABASE_NAME": str(data_dir / DB_FILE_NAME),
            # Without these, connecting an ML backend at 127.0.0.1 fails with 403 "reserved network address".
            "ML_BLOCK_LOCAL_IP": "false",
            "SSRF_PROTECTION_ENABLED": "false",
            # Prediction import recounts only the tasks it touched instead of every task of the
            # project per request (quadratic push on a stock 1.23; benchmarks/push_cost.py).
            PREDICTIONS_IMPORT_FLAG: "true",
            "LOCAL_FILES_SERVING_ENABLED": "true",
            "LOCAL_FILES_DOCUMENT_ROOT": str(local_files_root),
            # No calls home: PyPI version check, analytics, Sentry (an empty DSN disables it).
            "LATEST_VERSION_CHECK": "false",
            "COLLECT_ANALYTICS": "false",
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra_env or {})
    return env


# --------------------------------------------------------------------------------------------------
# database template
# --------------------------------------------------------------------------------------------------


def ensure_db_template(venv_dir: os.PathLike | str) -> Path:
    """Return a migrated, empty LS database kept in the venv, creating it (about a minute) if missing.

    Copying it into a new data dir replaces the migrations LS would otherwise run on its first start.
    It holds no users, organizations or secrets (SECRET_KEY lives in the data dir's .env).
    """
    template = Path(venv_dir).absolute() / DB_TEMPLATE_NAME
    if template.exists():
        return template
    with tempfile.TemporaryDirectory(prefix="lslocal-migrate-") as scratch:
        scratch_dir = Path(scratch)
        env = offline_environment(scratch_dir, scratch_dir)
        # The `user` sub-command applies the migrations, prints "user ... doesn't exist" and exits.
        command = [str(label_studio_executable(venv_dir)), "user", "--username", "nobody@localhost"]
        _run_checked(command, "migrate an empty Label Studio database", MIGRATE_TIMEOUT_S, env=env)
        migrated = scratch_dir / DB_FILE_NAME
        if not migrated.exists():
            raise LabelStudioError(f"migrations ran but {migrated} was not created")
        partial = template.with_suffix(f".partial-{os.getpid()}")
        shutil.copyfile(migrated, partial)
        os.replace(partial, template)  # atomic: a concurrent reader sees all or nothing
    return template


# --------------------------------------------------------------------------------------------------
# ports
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# process
# --------------------------------------------------------------------------------------------------


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

    def __enter__(self) -> "LabelStudioProcess":
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
    user_token: Optional[str] = None,
    extra_env: Optional[dict] = None,
    log_path: Optional[os.PathLike | str] = None,
    *,
    host: str = "127.0.0.1",
    enable_legacy_api_token: bool = False,
    local_files_root: Optional[os.PathLike | str] = None,
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


# --------------------------------------------------------------------------------------------------
# tokens
# --------------------------------------------------------------------------------------------------


def looks_like_jwt(token: str) -> bool:
    """A PAT (JWT) has three dot-separated parts; a legacy token is 40 hex characters."""
    return token.count(".") == 2


def jwt_claims(token: str) -> dict:
    """The payload of a JWT, without verifying its signature (only to read ``exp``/``token_type``)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def login_session(url: str, email: str, password: str) -> requests.Session:
    """A requests.Session logged in through LS's login form (session cookie + CSRF token)."""
    session = direct_session()
    login_url = f"{url}/user/login/"
    session.get(login_url, timeout=HTTP_TIMEOUT_S).raise_for_status()  # sets the csrftoken cookie
    form = {"email": email, "password": password, "csrfmiddlewaretoken": session.cookies.get("csrftoken", "")}
    response = session.post(
        login_url, data=form, headers={"Referer": login_url}, allow_redirects=False, timeout=HTTP_TIMEOUT_S
    )
    # Success redirects; a failed login re-renders the form with 200.
    if response.status_code != 302:
        raise LabelStudioError(
            f"login to {url} as {email} failed (HTTP {response.status_code}): wrong credentials?"
        )
    session.headers.update({"X-CSRFToken": session.cookies.get("csrftoken") or "", "Referer": f"{url}/"})
    return session


def get_legacy_token(url: str, email: str, password: str) -> str:
    """The user's legacy API token (it authenticates only where legacy tokens are enabled)."""
    session = login_session(url, email, password)
    response = session.get(f"{url}/api/current-user/token", timeout=HTTP_TIMEOUT_S)
    _raise_for_status(response, "read the legacy token")
    return response.json()["token"]


def create_personal_access_token(url: str, email: str, password: str, replace_existing: bool = True) -> str:
    """Create a personal access token (JWT refresh token) for the user, via a session login.

    LS allows one live PAT per user (409 otherwise). With ``replace_existing`` the existing ones are
    revoked (blacklisted) first, because LS only ever shows the full token once, at creation.
    """
    session = login_session(url, email, password)
    response = session.post(f"{url}/api/token/", timeout=HTTP_TIMEOUT_S)
    if response.status_code == 409 and replace_existing:
        _revoke_personal_access_tokens(session, url)
        response = session.post(f"{url}/api/token/", timeout=HTTP_TIMEOUT_S)
    _raise_for_status(response, "create a personal access token")
    return response.json()["token"]


def _revoke_personal_access_tokens(session: requests.Session, url: str) -> None:
    listing = session.get(f"{url}/api/token/", timeout=HTTP_TIMEOUT_S)
    _raise_for_status(listing, "list personal access tokens")
    for item in listing.json():
        # The listing holds truncated tokens (no signature); the blacklist endpoint accepts those.
        revoked = session.post(
            f"{url}/api/token/blacklist/", json={"refresh": item["token"]}, timeout=HTTP_TIMEOUT_S
        )
        if revoked.status_code not in (204, 404):  # 404: already revoked
            _raise_for_status(revoked, "revoke a personal access token")


def _raise_for_status(response: requests.Response, what: str) -> None:
    if response.status_code >= 400:
        raise LabelStudioError(
            f"could not {what}: {response.request.method} {response.url} -> HTTP {response.status_code}: "
            f"{response.text[:1000]}"
        )


# --------------------------------------------------------------------------------------------------
# API client
# --------------------------------------------------------------------------------------------------


class LabelStudioAdmin:
    """A small LS API client that accepts either a legacy token or a personal access token (PAT).

    Legacy: ``Authorization: Token <t>``. PAT: exchanged at ``/api/token/refresh/`` for an access token
    sent as ``Bearer``; renewed shortly before it expires (300 s in LS 1.23.2) and once on a 401.
    """

    def __init__(self, url: str, token: str, timeout_s: float = HTTP_TIMEOUT_S):
        self.url = url.rstrip("/")
        self.token = token.strip()
        self.timeout_s = timeout_s
        self.uses_personal_access_token = looks_like_jwt(self.token)
        self.session = direct_session()
        self._access_token: Optional[str] = None
        self._access_expires_at = 0.0
        self._lock = threading.Lock()

    # ---- auth ------------------------------------------------------------------------------------

    def access_token(self, force_refresh: bool = False) -> str:
        """A current access token (PAT mode only); usable to download /data/upload/... files."""
        if not self.uses_personal_access_token:
            raise LabelStudioError('a legacy token has no access token: send it as "Token <t>"')
        with self._lock:
            expiring = time.time() > self._access_expires_at - ACCESS_TOKEN_REFRESH_MARGIN_S
            if force_refresh or self._access_token is None or expiring:
                self._access_token, self._access_expires_at = self._exchange_refresh_token()
            return self._access_token

    def _exchange_refresh_token(self) -> tuple[str, float]:
        response = self.session.post(
            f"{self.url}/api/token/refresh/", json={"refresh": self.token}, timeout=self.timeout_s
        )
        if response.status_code in (400, 401):
            raise LabelStudioError(
                f"Label Studio refused the personal access token (HTTP {response.status_code}): revoked, or "
                f"from another Label Studio instance? {response.text[:300]}"
            )
        _raise_for_status(response, "exchange the personal access token for an access token")
        access = response.json()["access"]
        try:
            expires_at = float(jwt_claims(access)["exp"])
        except (KeyError, ValueError, IndexError):
            expires_at = time.time() + 300  # LS 1.23.2 default lifetime
        return access, expires_at

    def auth_headers(self, force_refresh: bool = False) -> dict:
        if self.uses_personal_access_token:
            return {"Authorization": f"Bearer {self.access_token(force_refresh)}"}
        return {"Authorization": f"Token {self.token}"}

    # ---- transport -------------------------------------------------------------------------------

    def request(
        self, method: str, path: str, expected: Sequence[int] = (200, 201, 204), **kwargs
    ) -> requests.Response:
        """Send an authenticated request to ``path`` (relative to the LS URL); raise on unexpected status."""
        response = self._send(method, path, **kwargs)
        if response.status_code not in expected:
            _raise_for_status(response, f"{method} {path}")
            raise LabelStudioError(
                f"{method} {path}: unexpected HTTP {response.status_code}: {response.text[:500]}"
            )
        return response

    def _send(self, method: str, path: str, **kwargs) -> requests.Response:
        url = self._url_on_this_server(path)
        kwargs.setdefault("timeout", self.timeout_s)
        response = self.session.request(method, url, headers=self.auth_headers(), **kwargs)
        if response.status_code == 401 and self.uses_personal_access_token:
            # The access token may have expired between our check and the server's (clock skew).
            _rewind_files(kwargs.get("files"))
            response = self.session.request(
                method, url, headers=self.auth_headers(force_refresh=True), **kwargs
            )
        return response

    def _url_on_this_server(self, path: str) -> str:
        if path.startswith("/"):
            return f"{self.url}{path}"
        if path.startswith(f"{self.url}/"):
            return path
        # Task data is user input: never send our credentials to a host it names.
        raise ValueError(f"refusing to send Label Studio credentials to {path!r} (not under {self.url})")

    def get_json(self, path: str, **kwargs):
        return self.request("GET", path, **kwargs).json()

    def download(self, url_or_path: str) -> bytes:
        """Bytes of a file LS serves, e.g. a task's ``/data/upload/<pid>/<file>`` (needs auth)."""
        return self.request("GET", url_or_path).content

    # ---- organization / user ---------------------------------------------------------------------

    def whoami(self) -> dict:
        return self.get_json("/api/current-user/whoami")

    def get_legacy_api_token(self) -> str:
        """The current user's legacy token (readable with either token kind)."""
        return self.get_json("/api/current-user/token")["token"]

    def get_jwt_settings(self) -> dict:
        return self.get_json("/api/jwt/settings")

    def set_legacy_api_tokens_enabled(self, enabled: bool) -> dict:
        """Allow or refuse ``Authorization: Token`` for the whole organization (off by default in 1.23)."""
        body = {"api_tokens_enabled": True, "legacy_api_tokens_enabled": bool(enabled)}
        return self.request("POST", "/api/jwt/settings", json=body).json()

    # ---- projects --------------------------------------------------------------------------------

    def create_project(self, title: str, label_config: str, **fields) -> dict:
        if len(title) < 3:
            raise ValueError(f"LS requires a project title of at least 3 characters, got {title!r}")
        body = {"title": title, "label_config": label_config, **fields}
        return self.request("POST", "/api/projects/", json=body).json()

    def get_project(self, project_id: int) -> dict:
        return self.get_json(f"/api/projects/{project_id}/")

    def update_project(self, project_id: int, **fields) -> dict:
        return self.request("PATCH", f"/api/projects/{project_id}/", json=fields).json()

    def set_sampling(self, project_id: int, value: str) -> dict:
        """Set how "Label All Tasks" picks the next task; the UI shows Uncertainty as Enterprise-only,
        but the API accepts it."""
        if value not in SAMPLING_VALUES:
            raise ValueError(f"sampling must be one of {SAMPLING_VALUES}, got {value!r}")
        return self.update_project(project_id, sampling=value)

    def next_task(self, project_id: int) -> Optional[dict]:
        """The task LS would give this user next, or None when there is none left.

        The trailing slash matters: without it LS answers 500. Opening a task locks it for other users.
        """
        response = self.request("GET", f"/api/projects/{project_id}/next/", expected=(200, 404))
        return response.json() if response.status_code == 200 else None

    # ---- tasks -----------------------------------------------------------------------------------

    def import_images(self, project_id: int, paths: Iterable[os.PathLike | str]) -> list[int]:
        """Upload image files as tasks; their ids, in order.

        Tasks get ``data.image = /data/upload/<pid>/<8 hex>-<name>``."""
        task_ids: list[int] = []
        for chunk in _chunks([Path(p) for p in paths], MAX_FILES_PER_IMPORT):
            task_ids.extend(self._import_chunk(project_id, chunk))
        return task_ids

    def _import_chunk(self, project_id: int, paths: list[Path]) -> list[int]:
        handles = [open(path, "rb") for path in paths]
        try:
            # Each file needs its own form field name: LS reads request.FILES as a dict.
            files = {
                f"file{index}": (
                    path.name,
                    handle,
                    mimetypes.guess_type(path.name)[0] or "application/octet-stream",
                )
                for index, (path, handle) in enumerate(zip(paths, handles))
            }
            response = self.request(
                "POST", f"/api/projects/{project_id}/import", files=files, params={"return_task_ids": "true"}
            )
        finally:
            for handle in handles:
                handle.close()
        task_ids = response.json().get("task_ids", [])
        if len(task_ids) != len(paths):
            raise LabelStudioError(
                f"imported {len(paths)} files but LS reported {len(task_ids)} tasks: {response.text[:500]}"
            )
        return task_ids

    def import_tasks(self, project_id: int, tasks: list[dict]) -> list[int]:
        """Import tasks given as JSON (e.g. ``{"data": {"image": "/data/local-files/?d=..."}}``)."""
        response = self.request(
            "POST", f"/api/projects/{project_id}/import", json=tasks, params={"return_task_ids": "true"}
        )
        return response.json().get("task_ids", [])

    def iter_tasks(self, project_id: int, page_size: int = 100) -> Iterator[dict]:
        """All tasks of a project, one page at a time (LS pages 50 per request by default)."""
        page = 1
        while True:
            response = self.request(
                "GET",
                f"/api/projects/{project_id}/tasks/",
                params={"page": page, "page_size": page_size},
                expected=(200, 404),
            )
            if response.status_code == 404:  # LS answers 404 for a page past the end
                return
            tasks = response.json()
            yield from tasks
            if len(tasks) < page_size:
                return
            page += 1

    def list_tasks(self, project_id: int, page_size: int = 100) -> list[dict]:
        return list(self.iter_tasks(project_id, page_size))

    def get_task(self, task_id: int) -> dict:
        """Note: LS calls the ML backend's /predict for a task that has no prediction yet."""
        return self.get_json(f"/api/tasks/{task_id}/")

    def create_annotation(self, task_id: int, result: list, **fields) -> dict:
        body = {"result": result, **fields}
        return self.request("POST", f"/api/tasks/{task_id}/annotations/", json=body).json()

    def list_annotations(self, task_id: int) -> list[dict]:
        return self.get_json(f"/api/tasks/{task_id}/annotations/")

    # ---- predictions -----------------------------------------------------------------------------

    def list_predictions(self, task_id: Optional[int] = None, project_id: Optional[int] = None) -> list[dict]:
        if (task_id is None) == (project_id is None):
            raise ValueError("give exactly one of task_id, project_id")
        params = {"task": task_id} if task_id is not None else {"project": project_id}
        return self.get_json("/api/predictions/", params=params)

    def import_predictions(self, project_id: int, predictions: list[dict]) -> dict:
        """Bulk-create predictions (``[{task, result, score, model_version}, ...]``) in one request.

        LS neither de-duplicates them nor sets the project's model_version."""
        return self.request("POST", f"/api/projects/{project_id}/import/predictions", json=predictions).json()

    # ---- ML backends -----------------------------------------------------------------------------

    def add_ml_backend(
        self,
        project_id: int,
        url: str,
        title: str,
        basic_auth_user: Optional[str] = None,
        basic_auth_pass: Optional[str] = None,
        is_interactive: bool = False,
        **fields,
    ) -> dict:
        """Connect an ML backend. LS calls its /health and /setup first; adds a webhook to <url>/webhook."""
        body = {"project": project_id, "url": url, "title": title, "is_interactive": is_interactive, **fields}
        if basic_auth_user is not None or basic_auth_pass is not None:
            body.update(
                auth_method="BASIC_AUTH",
                basic_auth_user=basic_auth_user or "",
                basic_auth_pass=basic_auth_pass or "",
            )
        return self.request("POST", "/api/ml", json=body).json()

    def list_ml_backends(self, project_id: int) -> list[dict]:
        return self.get_json("/api/ml", params={"project": project_id})

    def get_ml_backend(self, ml_id: int) -> dict:
        return self.get_json(f"/api/ml/{ml_id}")

    def start_training(self, ml_id: int) -> None:
        """The UI's "Start Training": LS POSTs START_TRAINING to the backend's /webhook and waits for it.

        LS answers 200 whatever the backend did; errors show only in the ML backend's state."""
        self.request("POST", f"/api/ml/{ml_id}/train")

    # ---- Data Manager views ----------------------------------------------------------------------

    def list_views(self, project_id: int) -> list[dict]:
        return self.get_json("/api/dm/views/", params={"project": project_id})

    def create_view(self, project_id: int, data: dict) -> dict:
        return self.request("POST", "/api/dm/views/", json={"project": project_id, "data": data}).json()


def _rewind_files(files: Optional[dict]) -> None:
    for value in (files or {}).values():
        handle = value[1] if isinstance(value, tuple) else value
        if hasattr(handle, "seek"):
            handle.seek(0)


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def choice_annotation(from_name: str, to_name: str, label: str) -> list[dict]:
    """The ``result`` of a single-choice annotation (a ``<Choices>`` tag applied to ``to_name``)."""
    return [{"from_name": from_name, "to_name": to_name, "type": "choices", "value": {"choices": [label]}}]


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def _exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so `with server:` stops Label Studio on the way out."""

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def _cli_start(args: argparse.Namespace) -> int:
    _exit_on_sigterm()
    venv = ensure_ls_venv(args.venv)
    server = start_label_studio(
        venv,
        args.data_dir,
        args.port,
        args.username,
        args.password,
        user_token=args.user_token,
        enable_legacy_api_token=args.enable_legacy_api_token,
        start_timeout_s=args.timeout,
    )
    with server:
        print(f"Label Studio is up at {server.url} after {server.started_in_s:.1f} s (log {server.log_path})")
        if args.token_file:
            token = create_personal_access_token(server.url, args.username, args.password)
            Path(args.token_file).write_text(token + "\n")
            os.chmod(args.token_file, 0o600)
            print(f"personal access token written to {args.token_file}")
        print("Ctrl-C stops it.")
        try:
            while server.is_running():
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        if not server.is_running():
            print(f"Label Studio exited:\n{server.log_tail()}", file=sys.stderr)
            return 1
    return 0


def _cli_token(args: argparse.Namespace) -> int:
    if args.kind == "pat":
        print(create_personal_access_token(args.url, args.username, args.password))
    else:
        print(get_legacy_token(args.url, args.username, args.password))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Run and drive a local Label Studio " + LABEL_STUDIO_VERSION)
    commands = parser.add_subparsers(dest="command", required=True)

    venv = commands.add_parser("ensure-venv", help="create the Label Studio venv and its database template")
    venv.add_argument("--venv", default=None, help=f"default: $LS_VENV_DIR or {default_ls_venv_dir()}")

    start = commands.add_parser("start", help="start Label Studio in the foreground")
    start.add_argument("--venv", default=None, help="default: $LS_VENV_DIR or the shared cache")
    start.add_argument("--data-dir", required=True)
    start.add_argument("--port", type=int, default=8080)
    start.add_argument("--username", default="admin@example.com")
    start.add_argument(
        "--password", default=os.environ.get("LABEL_STUDIO_PASSWORD"), help="default: $LABEL_STUDIO_PASSWORD"
    )
    start.add_argument("--user-token", default=None, help="legacy token to give the user on first start")
    start.add_argument("--enable-legacy-api-token", action="store_true", help="on first start only")
    start.add_argument("--token-file", help="write a new personal access token here")
    start.add_argument("--timeout", type=float, default=DEFAULT_START_TIMEOUT_S)

    token = commands.add_parser("token", help="print a new personal access token (pat) or the legacy token")
    token.add_argument("kind", choices=["pat", "legacy"])
    token.add_argument("--url", default="http://127.0.0.1:8080")
    token.add_argument("--username", default="admin@example.com")
    token.add_argument("--password", default=os.environ.get("LABEL_STUDIO_PASSWORD"))
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "password", "") is None:
        raise SystemExit("give --password or set LABEL_STUDIO_PASSWORD")
    try:
        if args.command == "ensure-venv":
            ensure_db_template(ensure_ls_venv(args.venv))
            print(f"Label Studio {LABEL_STUDIO_VERSION} ready in {ensure_ls_venv(args.venv)}")
            return 0
        if args.command == "start":
            return _cli_start(args)
        return _cli_token(args)
    except LabelStudioError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
