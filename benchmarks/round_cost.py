"""What a training round costs in each training mode, on a project of N tasks (default 10,000).

Runs the backend's own round (``backend.pipeline.run_training_round``) twice per mode against an
in-process Label Studio stand-in that serves generated PNGs (the HTTP path and a real Label Studio
are measured by the e2e tests and the load test; this isolates training + scoring). The second
round is the steady state: images (and, in frozen mode, pooled features) are cached.

Modes compared:
- ``full-before``: the recipe shipped before the few-label work (paper augmentation, SGD, 600
  steps) training the whole network, then scoring every image;
- ``full``: today's full-training default (2,000 steps);
- ``frozen``: a pretrained backbone (a local state_dict file made here) with cached pooled features.

    scripts/python.sh benchmarks/round_cost.py --tasks 10000 --labels 100
Writes ``benchmarks/results/round-cost.md``.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from PIL import Image

from backend.ls_client import LabelStudioClient
from backend.model_store import ModelStore
from backend.pipeline import run_training_round
from backend.settings import Settings
from model.config import ModelConfig
from model.networks import build_classifier

REPO_ROOT = Path(__file__).resolve().parents[1]

LABEL_CONFIG = """<View><Image name="image" value="$image"/>
<Choices name="label" toName="image" choice="single"><Choice value="a"/><Choice value="b"/>
<Choice value="c"/><Choice value="d"/></Choices></View>"""
CLASSES = ("a", "b", "c", "d")
PROJECT = 1


def png(task_id: int) -> bytes:
    rng = np.random.default_rng(task_id)
    kind = task_id % 4
    a = rng.integers(0, 60, (48, 48, 3)).astype(np.uint8)
    a[:, :, kind % 3] += 120
    if kind == 3:
        a[::3] = 255
    out = io.BytesIO()
    Image.fromarray(a).save(out, format="PNG")
    return out.getvalue()


class StandInLabelStudio:
    """The LabelStudioClient calls a round makes, answered in process."""

    def __init__(self, n_tasks: int, n_labeled: int):
        self.tasks = [
            {
                "id": i,
                "data": {"image": f"/data/upload/{PROJECT}/{i}.png"},
                "annotations": (
                    [
                        {
                            "id": i,
                            "result": [
                                {
                                    "from_name": "label",
                                    "to_name": "image",
                                    "type": "choices",
                                    "value": {"choices": [CLASSES[i % 4]]},
                                }
                            ],
                        }
                    ]
                    if i <= n_labeled
                    else []
                ),
            }
            for i in range(1, n_tasks + 1)
        ]
        self.views: list[dict] = []

    def get_project(self, project_id):
        return {"id": project_id, "label_config": LABEL_CONFIG}

    def iter_tasks(self, project_id):
        return iter(self.tasks)

    def image_downloader(self, allowed_hosts=(), local_files_root=None, **retry):
        return self  # serves the images itself (fetch_image_bytes)

    def fetch_image_bytes(self, url, *, task_id, max_bytes, timeout_s):
        return png(task_id)

    def import_predictions(self, project_id, items):
        return len(items)

    def patch_project(self, project_id, data):
        return data

    def list_views(self, project_id):
        return self.views

    def create_view(self, project_id, data):
        self.views.append({"id": len(self.views) + 1, "data": data})
        return self.views[-1]

    def update_view(self, view_id, project_id, data):
        return {"id": view_id, "data": data}

    def get_json(self, path):
        return {}

    def delete_model_version(self, project_id, version):
        return None


def run_mode(name: str, settings: Settings, client: StandInLabelStudio) -> list[dict]:
    store = ModelStore(settings.model_dir, settings.keep_model_versions)
    rounds = []
    for _ in range(2):
        started = time.monotonic()
        summary = run_training_round(
            settings, PROJECT, lambda **kw: None, store=store, client=cast(LabelStudioClient, client)
        ).to_dict()  # duck-typed stand-in
        timings = summary["timings_s"]
        rounds.append(
            {
                "mode": name,
                "wall_s": round(time.monotonic() - started, 1),
                "train_s": timings.get("train_s"),
                "features_s": timings.get("features_s", 0.0),
                "score_s": timings.get("score_s"),
                "features_extracted": summary["metrics"].get("features_extracted"),
            }
        )
    return rounds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--labels", type=int, default=100)
    parser.add_argument("--modes", default="full-before,full,frozen")
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "round-cost.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    client = StandInLabelStudio(args.tasks, args.labels)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        backbone = root / "backbone.pt"
        torch.save(build_classifier(ModelConfig(), num_classes=4).state_dict(), backbone)
        base: dict[str, Any] = dict(
            device="cpu", image_cache_dir=root / "images", query_batch_size=50, retrain_after_annotations=0
        )
        modes: dict[str, dict[str, Any]] = {
            "full-before": dict(
                train_mode="full", augment_policy="crop_flip", input_norm="dataset", train_steps=600
            ),
            "full": dict(train_mode="full"),
            "frozen": dict(train_mode="frozen", pretrained_weights=backbone),
        }
        for name in args.modes.split(","):
            settings = Settings(model_dir=root / name, **base, **modes[name])
            for record in run_mode(name, settings, client):
                rows.append(record)
                print(record, flush=True)
    lines = [
        f"Round cost on {args.tasks:,} tasks with {args.labels} labels, one CPU thread "
        f"(`python benchmarks/round_cost.py --tasks {args.tasks} --labels {args.labels}`); "
        "round 2 has every image (and, frozen, every feature row) cached.",
        "",
        "| mode | round | train s | feature extraction s | score s | train + features + score s | images through the backbone |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rows):
        total = (r["train_s"] or 0) + (r["features_s"] or 0) + (r["score_s"] or 0)
        extracted = r["features_extracted"] if r["features_extracted"] is not None else args.tasks
        lines.append(
            f"| {r['mode']} | {i % 2 + 1} | {r['train_s']} | {r['features_s']} | {r['score_s']} | "
            f"{total:.1f} | {extracted} |"
        )
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
