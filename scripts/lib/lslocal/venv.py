"""Label Studio's own venv, the environment it runs in, and a migrated empty database template.

Facts (label-studio 1.23.2): ``label-studio --version`` prints the version and then STARTS THE
SERVER on 0.0.0.0:8080 (it never returns); ``label-studio version`` prints and exits. Migrating an
empty database takes about a minute; a copy of a migrated empty database makes a fresh start take
seconds, so one is kept next to the venv (``ensure_db_template``).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from backend.ls_auth import LabelStudioError

LABEL_STUDIO_VERSION = "1.23.2"
# Label Studio's environment, pinned with hashes (scripts/lock.sh writes it)
LS_LOCK = Path(__file__).resolve().parents[3] / "requirements-label-studio.lock"
# Label Studio reads a feature flag from an environment variable of the same name.
PREDICTIONS_IMPORT_FLAG = "fflag_fix_back_4620_memory_efficient_predictions_import_08012025_short"
INSTALL_MARKER = ".installed"  # same marker as scripts/lib/common.sh's ensure_ls_venv
DB_TEMPLATE_NAME = f"lslocal-empty-db-{LABEL_STUDIO_VERSION}.sqlite3"
DB_FILE_NAME = "label_studio.sqlite3"
PIP_INSTALL_TIMEOUT_S = 1800.0
MIGRATE_TIMEOUT_S = 600.0
LOG_TAIL_CHARS = 4000


def cache_root() -> Path:
    """Where venvs and downloads are cached; the same rule as scripts/lib/common.sh."""
    if os.environ.get("AL_CACHE_DIR"):
        return Path(os.environ["AL_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ls-active-learning"


def requirements_hash(path: os.PathLike | str) -> str:
    """The venv key of a requirements or lock file: scripts/lib/common.sh's _requirements_hash.

    Comments (from a "#" at the start of a line or after a space) and blank lines do not count.
    """
    kept = []
    for line in Path(path).read_text().splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).rstrip()
        if line:
            kept.append(line + "\n")
    return hashlib.sha256("".join(kept).encode()).hexdigest()[:10]


def default_ls_venv_dir() -> Path:
    """$LS_VENV_DIR, else the shared cache location scripts/lib/common.sh uses (keyed by the lock)."""
    if os.environ.get("LS_VENV_DIR"):
        return Path(os.environ["LS_VENV_DIR"])
    return cache_root() / f"venv-label-studio-{LABEL_STUDIO_VERSION}-{requirements_hash(LS_LOCK)}"


def ensure_ls_venv(venv_dir: os.PathLike | str | None = None, python: str = "python3.11") -> Path:
    """Return ``venv_dir``, creating it from ``LS_LOCK`` if its marker file is missing.

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
    _run_pip(pip + ["--require-hashes", "-r", str(LS_LOCK)])
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
            f"pip install failed (exit {returncode}): {' '.join(command)}\n" + "".join(tail)
        )


def _run_checked(command: list[str], what: str, timeout_s: float, env: dict | None = None) -> str:
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


def offline_environment(data_dir: Path, local_files_root: Path, extra_env: dict | None = None) -> dict:
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
