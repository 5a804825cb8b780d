"""The simulated active-learning benchmark (benchmarks/al_benchmark.py): metrics, a tiny real run,
resume, and the cifar10-paper preset on fake data."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmarks import al_benchmark as bench
from benchmarks.al_benchmark import BenchConfig, Benchmark, aubc, labels_to_reach, parse_strategy

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- metrics by hand


def test_aubc_matches_hand_computed_values():
    # Trapezoids: (0.5+0.7)/2*100 + (0.7+0.9)/2*100 = 140, over a range of 200 -> 0.7.
    assert aubc([100, 200, 300], [0.5, 0.7, 0.9]) == pytest.approx(0.7)
    # Uneven spacing: (0.6+0.8)/2*10 + (0.8+1.0)/2*30 = 7 + 27 = 34, over 40 -> 0.85.
    assert aubc([10, 20, 50], [0.6, 0.8, 1.0]) == pytest.approx(0.85)
    assert aubc([10, 20], [0.4, 0.4]) == pytest.approx(0.4)  # flat curve: its value
    assert aubc([10], [0.3]) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        aubc([1, 2], [0.5])


def test_labels_to_reach_matches_hand_computed_values():
    budgets, acc = [100, 200, 300], [0.5, 0.7, 0.9]
    assert labels_to_reach(budgets, acc, 0.8) == pytest.approx(250.0)  # halfway 200 -> 300
    assert labels_to_reach(budgets, acc, 0.75) == pytest.approx(225.0)
    assert labels_to_reach(budgets, acc, 0.7) == pytest.approx(200.0)  # exactly on a point
    assert labels_to_reach(budgets, acc, 0.4) == pytest.approx(100.0)  # already at the start
    assert labels_to_reach(budgets, acc, 0.95) is None  # never reached
    # First crossing counts, even if the curve dips later.
    assert labels_to_reach([1, 2, 3, 4], [0.1, 0.9, 0.5, 1.0], 0.5) == pytest.approx(1.5)


def test_parse_strategy_overrides():
    assert parse_strategy("margin") == ("margin", {})
    assert parse_strategy("learning_loss_v2") == ("learning_loss_v2", {"lpm_loss": "v2"})
    assert parse_strategy("learning_loss@lpm_loss=mse,lpm_weight=0.5") == (
        "learning_loss",
        {"lpm_loss": "mse", "lpm_weight": 0.5},
    )
    with pytest.raises(ValueError):
        parse_strategy("nope")
    with pytest.raises(ValueError):
        parse_strategy("margin@not_a_field=1")


# ----------------------------------------------------------------------------- a tiny real run


def tiny_config(**changes) -> BenchConfig:
    values = dict(
        dataset="digits",
        test_size=200,
        pool_limit=400,
        image_size=8,
        small_cnn_width=4,
        initial=20,
        query=20,
        cycles=2,
        auto_target_steps=15,
        strategies=("random", "learning_loss"),
        seeds=(0,),
        pool_subsample=300,
        device="cpu",
    )
    values.update(changes)
    return BenchConfig(**values)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "tiny"
    messages: list[str] = []
    started = time.monotonic()
    results = Benchmark(tiny_config(), out, messages.append).run()
    return out, results, messages, time.monotonic() - started


def test_tiny_run_completes_quickly_and_writes_outputs(tiny_run):
    out, results, messages, seconds = tiny_run
    assert seconds < 60, f"tiny benchmark took {seconds:.0f} s"
    for name in ("results.json", "results.md", "learning_curve.png"):
        assert (out / name).is_file(), name
    assert (out / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    data = json.loads((out / "results.json").read_text())
    assert data["budgets"] == [20, 40]
    assert set(data["summary"]) == {"random", "learning_loss"}
    assert data["full_reference"]["n_labeled"] == 400
    for spec in ("random", "learning_loss"):
        run = data["runs"][spec]["0"]
        cycles = run["cycles"]
        assert [c["n_labeled"] for c in cycles] == [20, 40]
        assert len(cycles[0]["queried"]) == 20 and cycles[1]["queried"] == []
        for c in cycles:
            assert 0.0 <= c["accuracy"] <= 1.0
            assert c["lpm_spearman"] is None or -1.0 <= c["lpm_spearman"] <= 1.0
            assert c["train_seconds"] > 0
        summary = data["summary"][spec]
        assert 0.0 <= summary["aubc_mean"] <= 1.0
        assert summary["aubc_mean"] == pytest.approx(aubc([20, 40], [c["accuracy"] for c in cycles]))
    # Paired seeds: both strategies start from the same labeled set and the same cycle-0 model.
    r, ll = data["runs"]["random"]["0"]["cycles"][0], data["runs"]["learning_loss"]["0"]["cycles"][0]
    assert r["accuracy"] == ll["accuracy"]
    assert r["queried"] != ll["queried"]
    # Queried items are new: no index labeled twice.
    queried = r["queried"]
    initial = bench.initial_indices(400, 20, 0).tolist()
    assert not set(queried) & set(initial)

    md = (out / "results.md").read_text()
    assert "| random |" in md and "| learning_loss |" in md and "AUBC" in md
    assert any("cycle 2/2" in m for m in messages)


def test_rerun_skips_completed_cycles(tiny_run, monkeypatch):
    out, results, _, _ = tiny_run
    calls = []
    real_train = bench.train
    monkeypatch.setattr(bench, "train", lambda *a, **k: calls.append(1) or real_train(*a, **k))

    messages: list[str] = []
    again = Benchmark(tiny_config(), out, messages.append).run()
    assert calls == [], "nothing should be retrained"
    assert sum("skipped" in m for m in messages) == 2
    assert again["summary"]["random"]["aubc_mean"] == results["summary"]["random"]["aubc_mean"]

    # Drop the last cycle of one run: a rerun trains exactly that cycle and gets the same numbers.
    path = out / "runs" / "learning_loss" / "seed0.json"
    run = json.loads(path.read_text())
    last = run["cycles"].pop()
    path.write_text(json.dumps(run))
    messages.clear()
    Benchmark(tiny_config(), out, messages.append).run()
    assert len(calls) == 1
    assert any("resuming at cycle 2/2" in m for m in messages)
    redone = json.loads(path.read_text())["cycles"][-1]
    assert redone["accuracy"] == last["accuracy"]  # deterministic on CPU for a seed


def test_changed_settings_are_refused(tiny_run):
    out, _, _, _ = tiny_run
    with pytest.raises(RuntimeError, match="different settings"):
        Benchmark(tiny_config(query=10), out, lambda m: None).run()


def test_report_without_matplotlib_writes_the_tables_and_says_why_no_plot(
    tiny_run, tmp_path, monkeypatch, capsys
):
    # matplotlib is a development tool (requirements-dev.txt), not in the backend's own venv
    out, results, _, _ = tiny_run
    copy = tmp_path / "tiny"
    shutil.copytree(out / "runs", copy / "runs")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what `import matplotlib` meets without it
    messages: list[str] = []
    again = Benchmark(tiny_config(), copy, messages.append).report()
    assert again["summary"]["random"]["aubc_mean"] == results["summary"]["random"]["aubc_mean"]
    assert (copy / "results.json").is_file() and (copy / "results.md").is_file()
    assert not (copy / "learning_curve.png").exists()
    assert "matplotlib is not installed" in capsys.readouterr().err
    assert messages[-1].endswith("results.md")


def test_warm_start_runs(tmp_path):
    cfg = tiny_config(warm_start=True, strategies=("margin",), reference=False, cycles=3)
    results = Benchmark(cfg, tmp_path / "warm", lambda m: None).run()
    assert [c["n_labeled"] for c in results["runs"]["margin"]["0"]["cycles"]] == [20, 40, 60]
    assert (tmp_path / "warm" / "state" / "margin" / "seed0.pt").is_file()


def test_cifar10_paper_preset_runs_on_fake_data(tmp_path):
    args = bench.parse_args(
        [
            "--preset",
            "cifar10-paper",
            "--fake-data",
            "--fake-size",
            "60",
            "--test-size",
            "20",
            "--initial",
            "10",
            "--query",
            "10",
            "--cycles",
            "2",
            "--epochs",
            "1",
            "--num-seeds",
            "1",
            "--strategies",
            "learning_loss,hybrid",
            "--pool-subsample",
            "40",
            "--no-reference",
            "--device",
            "cpu",
        ]
    )
    cfg = bench.build_config(args)
    # The paper's recipe is kept; only the sizes were overridden.
    assert (cfg.backbone, cfg.image_size, cfg.channels, cfg.batch_size, cfg.lr) == (
        "cifar_resnet18",
        32,
        3,
        128,
        0.1,
    )
    assert (cfg.lr_milestone_fraction, cfg.detach_fraction, cfg.lpm_weight, cfg.margin) == (
        0.8,
        0.6,
        1.0,
        1.0,
    )
    assert bench.PRESETS["cifar10-paper"]["epochs"] == 200 and bench.PRESETS["cifar10-paper"]["cycles"] == 10
    results = Benchmark(cfg, tmp_path / "cifar", lambda m: None).run()
    assert set(results["summary"]) == {"learning_loss", "hybrid"}
    assert (tmp_path / "cifar" / "learning_curve.png").is_file()


def test_selfsup_runs_start_every_training_from_weights_learned_once_on_the_pool(tmp_path):
    cfg = tiny_config(strategies=("margin",), reference=False, selfsup_steps=2)
    assert cfg.fingerprint() != tiny_config(strategies=("margin",), reference=False).fingerprint()
    messages: list[str] = []
    bench_run = Benchmark(cfg, tmp_path / "ssl", messages.append)
    first = bench_run.model_config()
    assert first.pretrained_weights and Path(first.pretrained_weights).is_file()
    assert sum("self-supervised weights: 2 steps on 400 pool images" in m for m in messages) == 1
    assert bench_run.model_config() == first  # learned once
    results = bench_run.run()
    assert [c["n_labeled"] for c in results["runs"]["margin"]["0"]["cycles"]] == [20, 40]
    assert sum("self-supervised weights" in m for m in messages) == 1
