"""Checks of scripts/compose_check.py (and the Label Studio side it drives, scripts/lib/compose_round.py)
that need no Docker engine.

The check itself (build, up, a round, scale, restart, down + up) needs a Docker engine, ~15 GB of
disk and minutes, so it is not part of scripts/test.sh; these tests keep the parts it derives from
the repository honest: the images it makes stand-ins for are the ones the Dockerfiles and the
compose file name, every .env key it rewrites exists, and its pure helpers do what it relies on.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scripts import compose_check
from scripts.dev import standin_images
from scripts.lib import compose_round

REPO = Path(__file__).resolve().parents[2]


def test_stand_ins_are_made_for_exactly_the_images_the_stack_names():
    out = subprocess.run(
        [sys.executable, "scripts/compose_check.py", "images"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 0, out.stderr
    named = out.stdout.split()
    dockerfile_bases = {
        m.group(1)
        for path in ("Dockerfile", "Dockerfile.rq-dashboard")
        for m in re.finditer(r"^ARG PYTHON_IMAGE=(\S+)$", (REPO / "docker" / path).read_text(), re.M)
    }
    compose = yaml.safe_load((REPO / "docker" / "docker-compose.yml").read_text())
    built = {s["image"] for s in compose["services"].values() if "build" in s}
    pulled = {s["image"] for s in compose["services"].values() if "build" not in s} - built
    assert len(named) == 3 and all(named)
    assert set(named) == dockerfile_bases | pulled


def test_every_env_key_the_check_rewrites_exists_in_the_example(tmp_path):
    example = (REPO / "docker" / ".env.example").read_text()
    values = compose_check.env_values(tmp_path, 18080, 19090, "secret-pw", {"COMPOSE_CHECK_TRAIN_STEPS": "7"})
    assert {"LABEL_STUDIO_PORT", "BACKEND_PORT", "LABEL_STUDIO_PASSWORD"} <= set(values)
    for key in values:
        assert re.search(rf"^{key}=", example, re.M), f"compose_check.py rewrites {key}, not in .env.example"
    written = compose_check.rewrite_env(example, values)
    assert compose_check.env_value(written, "TRAIN_STEPS") == "7"
    assert compose_check.env_value(written, "RQ_DASHBOARD_PORT") == str(19090 + 91)
    assert compose_check.env_value(written, "LOCAL_FILES_HOST_DIR") == str(tmp_path / "local-files")
    changed = [(a, b) for a, b in zip(example.splitlines(), written.splitlines(), strict=False) if a != b]
    assert {b.split("=", 1)[0] for _, b in changed} <= set(values)
    assert len(written.splitlines()) == len(example.splitlines())


def test_env_value_reads_the_last_assignment_and_nothing_else():
    text = "A=1\n# A=commented\nAB=2\nA=3\n"
    assert compose_check.env_value(text, "A") == "3"
    assert compose_check.env_value(text, "B") == ""


def test_builds_go_on_the_host_network_unless_told_otherwise():
    host = yaml.safe_load(compose_check.build_override("host"))
    assert {name: s["build"]["network"] for name, s in host["services"].items()} == {
        "backend": "host",
        "rq-dashboard": "host",
    }
    assert yaml.safe_load(compose_check.build_override(""))["services"] == {}


def test_health_summary_waits_for_every_container_to_be_healthy():
    healthy = {"Name": "a", "State": "running", "Health": "healthy"}
    starting = {"Name": "b", "State": "running", "Health": "starting"}
    assert (
        compose_check.health_summary(json.dumps(healthy) + "\n" + json.dumps(healthy))
        == "healthy: 2 containers"
    )
    assert compose_check.health_summary(json.dumps([healthy, starting])) == "waiting: b=starting"
    assert compose_check.health_summary("").startswith("waiting")


def test_the_engine_always_runs_first_and_unknown_stages_are_refused():
    assert compose_check.planned_stages([]) == list(compose_check.STAGES)
    assert compose_check.planned_stages(["up", "round"]) == ["engine", "up", "round"]
    with pytest.raises(compose_check.Failed, match="unknown stage"):
        compose_check.planned_stages(["bogus"])


def test_the_stand_in_pip_conf_names_the_served_indexes():
    text = standin_images.pip_conf_text(["http://127.0.0.1:38711/simple/"], ["http://127.0.0.1:38712/"])
    assert "extra-index-url = http://127.0.0.1:38711/simple/\n" in text
    assert "find-links = http://127.0.0.1:38712/\n" in text
    assert "extra-index-url" not in standin_images.pip_conf_text([], [])


def test_the_stand_in_builder_stays_out_of_the_product_path():
    # only a failed pull reaches for the development-only stand-ins
    code = "import sys, scripts.compose_check; print(sorted(m for m in sys.modules if m.startswith('scripts.dev')))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert not (REPO / "scripts" / "compose_check.sh").exists()


def test_the_check_is_not_part_of_the_test_suite():
    assert "compose_check" not in (REPO / "scripts" / "test.sh").read_text()


@pytest.mark.parametrize(
    "ref, key",
    [
        ("/data/upload/3/1a2b3c4d-digits-00012.png", "digits-00012.png"),
        ("/data/local-files/?d=compose-check-digits/digits-00012.png", "digits-00012.png"),
    ],
)
def test_image_key_maps_both_task_kinds_to_the_rendered_file(ref, key):
    assert compose_round._image_key({"data": {"image": ref}}) == key
