"""The project's own tooling: scripts/python.sh runs this checkout's code in the project venv,
the shell scripts pass shellcheck, and every Python command the READMEs show goes through an
environment the README explains and names a file that exists."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
READMES = (REPO / "README.md", REPO / "model" / "README.md", REPO / "benchmarks" / "README.md")
SHELL_SCRIPTS = ("scripts/test.sh", "scripts/python.sh", "scripts/lib/common.sh")


def _wrapper_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["VENV_DIR"] = str(venv)
    return env


@pytest.fixture(scope="module")
def project_venv() -> Path:
    """This interpreter's venv, when scripts/lib/common.sh has installed the development tools
    into it (scripts/test.sh does); the wrapper would install them otherwise, not a test's job."""
    venv = Path(sys.prefix)
    dev_hash = subprocess.run(["bash", "-c", 'source scripts/lib/common.sh && _hash_of requirements-dev.txt'],
                              cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    if not (venv / f".dev-installed-{dev_hash}").is_file():
        pytest.skip("the development tools are not installed in this venv: run scripts/test.sh")
    return venv


def test_python_wrapper_imports_this_checkout_from_any_directory(project_venv, tmp_path):
    code = "import backend, benchmarks, model, matplotlib; print(model.__file__)"
    result = subprocess.run(["bash", str(REPO / "scripts" / "python.sh"), "-c", code], cwd=tmp_path,
                            env=_wrapper_env(project_venv), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == REPO / "model" / "__init__.py"


def test_python_wrapper_runs_a_readme_command(project_venv):
    # scripts/ and benchmarks/ hold no sys.path set-up: the wrapper's PYTHONPATH makes them work
    result = subprocess.run(["bash", "scripts/python.sh", "scripts/settings_table.py"], cwd=REPO,
                            env=_wrapper_env(project_venv), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "| variable | default | unit | meaning |"
    assert "| `STRATEGY` |" in result.stdout


@pytest.mark.parametrize("script", SHELL_SCRIPTS)
def test_shellcheck_accepts(script):
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck is not installed here")
    result = subprocess.run(["shellcheck", "-x", script], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def _readme_text() -> str:
    return "\n".join(path.read_text() for path in READMES)


def test_readmes_run_python_through_the_wrapper():
    # a bare `python scripts/...` needs an environment the README does not give
    bare = re.findall(r"(?<![\w/.-])python3?(?:\.\d+)? (?:scripts|benchmarks)/\S+", _readme_text())
    assert not bare, f"run these through scripts/python.sh: {bare}"


def test_readme_commands_name_files_that_exist():
    text = _readme_text()
    wrapped = re.findall(r"scripts/python\.sh ((?:scripts|benchmarks)/[\w/]+\.py)", text)
    shell = re.findall(r"(?<![\w/])(scripts/[\w/]+\.sh)", text)
    assert wrapped, "the READMEs show no scripts/python.sh command: the pattern is stale"
    missing = sorted({path for path in wrapped + shell if not (REPO / path).is_file()})
    assert not missing, missing
