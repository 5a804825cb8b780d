"""Every Label Studio this repository starts (demo, tests, benchmarks) gets the prediction import
flag that keeps a push linear; a caller can still switch it off (benchmarks/push_cost.py does)."""

from pathlib import Path

from scripts.lib import lslocal

FLAG = "fflag_fix_back_4620_memory_efficient_predictions_import_08012025_short"


def test_the_memory_efficient_prediction_import_is_on_by_default():
    env = lslocal.offline_environment(Path("data"), Path("files"))
    assert lslocal.PREDICTIONS_IMPORT_FLAG == FLAG and env[FLAG] == "true"


def test_a_caller_can_start_a_stock_label_studio():
    env = lslocal.offline_environment(Path("data"), Path("files"), {FLAG: "false"})
    assert env[FLAG] == "false"
