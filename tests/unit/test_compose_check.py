"""Checks of scripts/compose_check.sh and scripts/compose_check.py that need no Docker engine.

The script itself (build, up, a round, scale, restart, down + up) needs a Docker engine, ~15 GB of
disk and minutes, so it is not part of scripts/test.sh; these tests keep the parts it derives from
the repository honest: the images it makes stand-ins for are the ones the Dockerfiles and the
compose file name, and every .env key it rewrites exists.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "compose_check.sh"
compose_check = pytest.importorskip("scripts.compose_check")


def test_stand_ins_are_made_for_exactly_the_images_the_stack_names():
    out = subprocess.run(["bash", str(SCRIPT), "images"], capture_output=True, text=True,
                         timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    named = out.stdout.split()
    dockerfile_bases = {m.group(1) for path in ("Dockerfile", "Dockerfile.rq-dashboard")
                        for m in re.finditer(r"^ARG PYTHON_IMAGE=(\S+)$",
                                             (REPO / "docker" / path).read_text(), re.M)}
    compose = yaml.safe_load((REPO / "docker" / "docker-compose.yml").read_text())
    built = {s["image"] for s in compose["services"].values() if "build" in s}
    pulled = {s["image"] for s in compose["services"].values() if "build" not in s} - built
    assert len(named) == 3 and all(named)
    assert set(named) == dockerfile_bases | pulled


def test_every_env_key_the_check_rewrites_exists_in_the_example():
    example = (REPO / "docker" / ".env.example").read_text()
    keys = set(re.findall(r"\^([A-Z_]+)=", SCRIPT.read_text()))
    assert {"LABEL_STUDIO_PORT", "BACKEND_PORT", "LABEL_STUDIO_PASSWORD"} <= keys
    for key in keys:
        assert re.search(rf"^{key}=", example, re.M), f"compose_check.sh rewrites {key}, not in .env.example"


def test_the_check_is_not_part_of_the_test_suite():
    assert "compose_check" not in (REPO / "scripts" / "test.sh").read_text()


@pytest.mark.parametrize("ref, key", [
    ("/data/upload/3/1a2b3c4d-digits-00012.png", "digits-00012.png"),
    ("/data/local-files/?d=compose-check-digits/digits-00012.png", "digits-00012.png"),
])
def test_image_key_maps_both_task_kinds_to_the_rendered_file(ref, key):
    assert compose_check._image_key({"data": {"image": ref}}) == key


def test_shellcheck_accepts_the_script():
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck is not installed here")
    result = subprocess.run(["shellcheck", "-x", str(SCRIPT)], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
