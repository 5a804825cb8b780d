import re
import runpy
from pathlib import Path

import pytest

from backend.settings import Settings, SettingsError


def test_defaults_are_valid_and_documented():
    settings = Settings.from_env({})
    assert settings.port == 9090
    assert settings.strategy
    import dataclasses

    for f in dataclasses.fields(Settings):
        assert f.metadata.get("doc"), f"{f.name} has no documentation"


def test_environment_values_are_parsed_by_type():
    settings = Settings.from_env(
        {
            "PORT": "9191",
            "LABEL_STUDIO_URL": "http://ls:8080/",
            "MODEL_DIR": "/tmp/m",
            "SET_UNCERTAINTY_SAMPLING": "yes",
            "ALLOWED_IMAGE_HOSTS": "a.example, b.example:81",
            "LABEL_STUDIO_TIMEOUT_S": "2.5",
            "PRETRAINED_WEIGHTS": "/w.pt",
        }
    )
    assert settings.port == 9191
    assert settings.label_studio_url == "http://ls:8080"
    assert settings.model_dir == Path("/tmp/m")
    assert settings.set_uncertainty_sampling is True
    assert settings.allowed_image_hosts == ("a.example", "b.example:81")
    assert settings.label_studio_timeout_s == 2.5
    assert settings.pretrained_weights == Path("/w.pt")


@pytest.mark.parametrize(
    "env, needle",
    [
        ({"PORT": "abc"}, "PORT"),
        ({"LABEL_STUDIO_URL": "ftp://x"}, "LABEL_STUDIO_URL"),
        ({"PREDICTION_CHUNK_SIZE": "0"}, "PREDICTION_CHUNK_SIZE"),
        ({"BASIC_AUTH_USER": "u"}, "BASIC_AUTH"),
        ({"LPM_LOSS": "hinge"}, "LPM_LOSS"),
        ({"FEATURE_SHARD_IMAGES": "-1"}, "FEATURE_SHARD_IMAGES"),
        ({"SET_UNCERTAINTY_SAMPLING": "maybe"}, "SET_UNCERTAINTY_SAMPLING"),
    ],
)
def test_bad_values_name_the_variable(env, needle):
    with pytest.raises(SettingsError, match=needle):
        Settings.from_env(env)


def test_secrets_are_masked_in_description():
    settings = Settings.from_env(
        {"LABEL_STUDIO_API_KEY": "secret-token-123", "BASIC_AUTH_USER": "u", "BASIC_AUTH_PASS": "p4ss"}
    )
    text = repr(settings) + str(settings.describe())
    assert "secret-token-123" not in text and "p4ss" not in text
    assert settings.describe()["label_studio_api_key"] == "***"


def test_settings_doc_holds_the_generated_table():
    # docs/settings.md's table is scripts/settings_table.py's output: it names every setting with
    # the text of backend/settings.py, and fails here while the two disagree
    repo = Path(__file__).resolve().parents[3]
    generator = runpy.run_path(str(repo / "scripts" / "settings_table.py"))
    documented = generator["documented_table"](generator["SETTINGS_DOC"].read_text())
    missing = [env for env in Settings.env_names().values() if f"| `{env}` |" not in documented]
    assert not missing, f"docs/settings.md lacks settings: {missing}"
    assert documented == generator["table"](), (
        "docs/settings.md is out of date: run scripts/python.sh scripts/settings_table.py --write"
    )


def test_readme_names_only_real_settings_and_links_the_table():
    # the README shows the settings an operator touches and links the full table
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = readme.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    shown = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)`", section, re.M))
    assert len(shown) >= 10, "the README's settings table is gone: the pattern is stale"
    assert not shown - set(Settings.env_names().values()) - {"HOST"}, shown
    assert "(docs/settings.md)" in section


def test_unknown_strategy_is_refused_with_the_known_names():
    with pytest.raises(SettingsError, match=r"STRATEGY='margn_diverse' is unknown.*margin_diverse"):
        Settings.from_env({"STRATEGY": "margn_diverse"})
    assert Settings.from_env({"STRATEGY": "coreset"}).strategy == "coreset"


def test_a_strategy_name_must_match_the_training_it_stands_for():
    # learning_loss_v2 ranks exactly like learning_loss; it means "with LPM_LOSS=v2".
    with pytest.raises(SettingsError, match="LPM_LOSS=v2"):
        Settings.from_env({"STRATEGY": "learning_loss_v2"})
    assert Settings.from_env({"STRATEGY": "learning_loss_v2", "LPM_LOSS": "v2"}).lpm_loss == "v2"


def test_settings_validation_does_not_import_torch():
    # A fresh interpreter: the check every entry point runs first must not pay for torch.
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from backend.settings import Settings, SettingsError\n"
        "Settings.from_env({'STRATEGY': 'margin_diverse'})\n"
        "try:\n"
        "    Settings.from_env({'STRATEGY': 'nope'})\n"
        "    raise SystemExit('unknown STRATEGY accepted')\n"
        "except SettingsError:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    root = Path(__file__).resolve().parents[3]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_docker_entrypoint_check_refuses_an_unknown_strategy():
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[3]
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "STRATEGY": "margn_diverse",
    }
    result = subprocess.run(
        ["bash", str(root / "docker" / "entrypoint.sh"), "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "STRATEGY='margn_diverse' is unknown" in result.stderr
    env["STRATEGY"] = "margin_diverse"
    assert (
        subprocess.run(
            ["bash", str(root / "docker" / "entrypoint.sh"), "check"],
            env=env,
            capture_output=True,
            timeout=120,
        ).returncode
        == 0
    )
