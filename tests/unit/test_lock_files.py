"""The lock files (scripts/lock.sh) agree with the requirements files they were resolved from:
every requirement is pinned in its lock at a version it allows, every pin carries hashes, the dev
lock keeps the runtime lock's versions, and the venv keys the shell scripts and the Label Studio
harness compute from a lock are the same."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from scripts.lib import lslocal

REPO = Path(__file__).resolve().parents[2]
LOCKS = {  # requirements file -> its lock
    "requirements.txt": "requirements.lock",
    "requirements-dev.txt": "requirements-dev.lock",
    "requirements-label-studio.txt": "requirements-label-studio.lock",
    "docker/requirements-rq-dashboard.txt": "docker/requirements-rq-dashboard.lock",
}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def requirements(path: Path) -> list[Requirement]:
    """The requirements of a requirements file, following its `-r` includes."""
    found: list[Requirement] = []
    for raw in path.read_text().splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if line.startswith("-r "):
            found += requirements(path.parent / line[3:].strip())
        elif line and not line.startswith("-"):
            found.append(Requirement(line))
    return found


def lock_pins(text: str) -> dict[str, str]:
    """Package (canonical name) -> pinned version, from a pip-compile lock file."""
    return {canonicalize_name(m.group(1)): m.group(2) for m in map(PIN.match, text.splitlines()) if m}


def disagreements(wanted: list[Requirement], pins: dict[str, str]) -> list[str]:
    """Each requirement the lock does not pin at a version the requirement allows."""
    problems = []
    for requirement in wanted:
        version = pins.get(canonicalize_name(requirement.name))
        if version is None:
            problems.append(f"{requirement}: not in the lock")
        elif not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{requirement}: the lock pins {version}")
    return problems


def unhashed(text: str) -> list[str]:
    """Pins of a lock file without a --hash line (pip's --require-hashes would refuse them)."""
    entries = re.split(r"\n(?=[A-Za-z0-9])", text)
    return [entry.split()[0] for entry in entries if PIN.match(entry) and "--hash=sha256:" not in entry]


def test_disagreements_finds_a_missing_or_stale_pin():
    wanted = [Requirement("numpy>=1.26,<3"), Requirement("rq==2.6.1"), Requirement("Pillow>=10")]
    assert disagreements(wanted, {"numpy": "2.2.6", "rq": "2.6.1", "pillow": "13.0.0"}) == []
    assert disagreements(wanted, {"numpy": "3.0.0", "rq": "2.6.1"}) == [
        "numpy<3,>=1.26: the lock pins 3.0.0",
        "Pillow>=10: not in the lock",
    ]


def test_lock_pins_and_unhashed_read_pip_compile_output():
    text = (
        "#\n# header\n#\nrq==2.6.1 \\\n    --hash=sha256:ab \\\n    --hash=sha256:cd\n"
        "    # via -r requirements.txt\nscikit_learn==1.9.1\n    # via x\n"
    )
    assert lock_pins(text) == {"rq": "2.6.1", "scikit-learn": "1.9.1"}
    assert unhashed(text) == ["scikit_learn==1.9.1"]


@pytest.mark.parametrize("source", sorted(LOCKS))
def test_every_requirement_is_pinned_in_its_lock(source):
    lock = REPO / LOCKS[source]
    assert lock.is_file(), f"{LOCKS[source]} is missing: run scripts/lock.sh"
    problems = disagreements(requirements(REPO / source), lock_pins(lock.read_text()))
    assert not problems, f"{source} and {LOCKS[source]} disagree (run scripts/lock.sh): {problems}"


@pytest.mark.parametrize("lock", sorted(LOCKS.values()))
def test_every_pin_has_hashes_and_no_machine_paths(lock):
    text = (REPO / lock).read_text()
    assert lock_pins(text), "no pins"
    assert unhashed(text) == []
    # index and find-links options are a machine's pip configuration, not the project's
    assert not re.search(r"^\s*--(index-url|extra-index-url|find-links)|file://", text, re.M)


def test_the_dev_lock_keeps_the_runtime_versions():
    runtime = lock_pins((REPO / "requirements.lock").read_text())
    dev = lock_pins((REPO / "requirements-dev.lock").read_text())
    assert {name: dev.get(name) for name in runtime} == runtime


def test_the_label_studio_lock_is_the_harness_version():
    pins = lock_pins((REPO / "requirements-label-studio.lock").read_text())
    common = (REPO / "scripts" / "lib" / "common.sh").read_text()
    assert pins["label-studio"] == lslocal.LABEL_STUDIO_VERSION
    assert f'LABEL_STUDIO_VERSION="{lslocal.LABEL_STUDIO_VERSION}"' in common
    # sentry-sdk 3 rejects the options Label Studio 1.23 passes to its init()
    assert int(pins["sentry-sdk"].split(".")[0]) == 2


def _bash_hash(path: Path) -> str:
    result = subprocess.run(
        ["bash", "-c", 'source scripts/lib/common.sh && _requirements_hash "$1"', "-", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def test_the_harness_keys_a_venv_as_the_shell_scripts_do(tmp_path):
    sample = tmp_path / "sample.lock"
    sample.write_text(
        "# header\nrq==2.6.1 \\\n    --hash=sha256:ab  # note\n\n  \npkg @ https://x/p.tgz#sha256=1\n"
    )
    for path in (sample, lslocal.LS_LOCK, REPO / "requirements.lock"):
        assert lslocal.requirements_hash(path) == _bash_hash(path), path


def test_the_label_studio_venv_follows_its_lock(tmp_path, monkeypatch):
    monkeypatch.delenv("LS_VENV_DIR", raising=False)
    monkeypatch.setenv("AL_CACHE_DIR", str(tmp_path))
    key = lslocal.requirements_hash(lslocal.LS_LOCK)
    assert lslocal.default_ls_venv_dir() == tmp_path / f"venv-label-studio-1.23.2-{key}"
    changed = tmp_path / "changed.lock"
    changed.write_text(lslocal.LS_LOCK.read_text() + "six==1.17.0 --hash=sha256:ab\n")
    assert lslocal.requirements_hash(changed) != key
