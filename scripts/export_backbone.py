"""Save the backbone of a project's published model as a pretrained file for other projects.

    MODEL_DIR=./data/models scripts/python.sh scripts/export_backbone.py --project 3 --out a.pt
    scripts/python.sh scripts/export_backbone.py --checkpoint path/to/version.pt --out a.pt

A backbone trained on labeled images of one domain is a better start for a related project than
self-supervision on its pool (docs/results.md, domain suite, `transfer_*` rows). The file holds the
backbone only (no head, no loss prediction module), in the layout ``PRETRAINED_WEIGHTS`` loads;
the other project needs the same ``BACKBONE`` (the printed line says which).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backend.model_store import ModelStore
from backend.settings import Settings, SettingsError
from model.checkpoint import CheckpointError, load_checkpoint
from model.networks import backbone_state_dict
from model.self_supervised import save_pretrained


def checkpoint_of(project: int, model_dir: Path) -> Path:
    """The published trained checkpoint of ``project`` (ValueError when there is none)."""
    published = ModelStore(model_dir).published(project)
    if published is None:
        raise ValueError(f"project {project} has no published model under {model_dir}")
    if published.cold_start:
        raise ValueError(
            f"project {project}'s published version {published.version} is a "
            "cold-start ranking: no model was trained yet"
        )
    return published.path


def export(checkpoint: Path, out: Path) -> str:
    """Write ``checkpoint``'s backbone to ``out``; returns the settings line that uses it."""
    loaded = load_checkpoint(checkpoint)
    if loaded.metrics.get("mode") == "frozen":
        # a frozen round trains only the head: its backbone is the one the round started from
        print(
            "note: this version was trained in frozen mode, so its backbone was not trained on "
            "the project's labels (it is the self-supervised or pretrained backbone it started "
            "from); a version trained after more than FROZEN_MAX_LABELS labels carries them",
            file=sys.stderr,
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    save_pretrained(backbone_state_dict(loaded.model), out)
    return f"BACKBONE={loaded.model_config.backbone} PRETRAINED_WEIGHTS={out.resolve()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--project", type=int, help="Label Studio project id (its published model)")
    source.add_argument("--checkpoint", type=Path, help="a model version file")
    parser.add_argument(
        "--model-dir", type=Path, help="the backend's MODEL_DIR (default: as the backend reads it)"
    )
    parser.add_argument("--out", type=Path, required=True, help="the pretrained file to write")
    args = parser.parse_args(argv)
    try:
        checkpoint = args.checkpoint or checkpoint_of(
            args.project, args.model_dir or Settings.from_env().model_dir
        )
        print(export(checkpoint, args.out))
    except (ValueError, CheckpointError, SettingsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
