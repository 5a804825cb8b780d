"""The project's own tooling: scripts/python.sh runs this checkout's code in the project venv,
the shell scripts pass shellcheck, and every Python command the READMEs show goes through an
environment the README explains and names a file that exists (the READMEs and docs/)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# the READMEs and docs/, where the README's longer sections moved
READMES = (
    REPO / "README.md",
    REPO / "model" / "README.md",
    REPO / "benchmarks" / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
)
SHELL_SCRIPTS = ("scripts/test.sh", "scripts/python.sh", "scripts/lock.sh", "scripts/lib/common.sh")


def _wrapper_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["VENV_DIR"] = str(venv)
    return env


@pytest.fixture(scope="module")
def project_venv() -> Path:
    """This interpreter's venv, when scripts/lib/common.sh has installed the development tools
    into it (scripts/test.sh does); the wrapper would install them otherwise, not a test's job."""
    venv = Path(sys.prefix)
    dev_hash = subprocess.run(
        ["bash", "-c", "source scripts/lib/common.sh && _requirements_hash requirements-dev.lock"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not (venv / f".dev-installed-{dev_hash}").is_file():
        pytest.skip("the development tools are not installed in this venv: run scripts/test.sh")
    return venv


def test_python_wrapper_imports_this_checkout_from_any_directory(project_venv, tmp_path):
    code = "import backend, benchmarks, model, scripts.lib.lslocal, matplotlib; print(model.__file__)"
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "python.sh"), "-c", code],
        cwd=tmp_path,
        env=_wrapper_env(project_venv),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == REPO / "model" / "__init__.py"


def test_python_wrapper_runs_a_readme_command(project_venv):
    # scripts/ and benchmarks/ hold no sys.path set-up: the wrapper's PYTHONPATH makes them work
    result = subprocess.run(
        ["bash", "scripts/python.sh", "scripts/settings_table.py"],
        cwd=REPO,
        env=_wrapper_env(project_venv),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "| variable | default | unit | meaning |"
    assert "| `STRATEGY` |" in result.stdout


def test_no_module_edits_sys_path():
    # scripts, benchmarks and tests import each other as packages of the checkout on PYTHONPATH
    pattern = re.compile(r"sys\.path\.(insert|append|extend)\(")
    folders = ("backend", "model", "scripts", "benchmarks", "tests", "docker")
    offenders = [
        str(path.relative_to(REPO))
        for folder in folders
        for path in sorted((REPO / folder).rglob("*.py"))
        if pattern.search(path.read_text())
    ]
    assert not offenders, f"import through the package instead: {offenders}"


def _requirements_hash(path: Path) -> str:
    result = subprocess.run(
        ["bash", "-c", 'source scripts/lib/common.sh && _requirements_hash "$1"', "-", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def test_venv_key_ignores_comments_but_not_requirements(tmp_path):
    # the ~5.5 GB venv is keyed on this hash: a comment edit must not reinstall it
    variants = {
        "plain": "torch==2.14.1\nrq==2.6.1\n",
        "commented": "# runtime\ntorch==2.14.1  # CUDA wheels\n\n  \nrq==2.6.1   \n# end\n",
        "bumped": "torch==2.14.2\nrq==2.6.1\n",
        "url": "pkg @ https://example.org/pkg.tar.gz#sha256=ab\n",
        "url_other": "pkg @ https://example.org/pkg.tar.gz#sha256=cd\n",
    }
    hashes = {}
    for name, text in variants.items():
        (tmp_path / name).write_text(text)
        hashes[name] = _requirements_hash(tmp_path / name)
    assert re.fullmatch(r"[0-9a-f]{10}", hashes["plain"])
    assert hashes["commented"] == hashes["plain"]
    assert hashes["bumped"] != hashes["plain"]
    assert hashes["url"] != hashes["url_other"]  # a "#" inside a URL is not a comment, for pip either


@pytest.mark.parametrize("script", SHELL_SCRIPTS)
def test_shellcheck_accepts(script):
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck is not installed here")
    result = subprocess.run(
        ["shellcheck", "-x", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
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
