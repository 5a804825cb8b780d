"""The retraining cadence: how long an automatic round waits after the last one."""

import pytest

from backend.cadence import automatic_round_gap_s, automatic_round_wait_s
from backend.settings import Settings, SettingsError


def test_the_gap_is_the_larger_of_the_minimum_and_the_scaled_duration():
    assert automatic_round_gap_s(10.0, min_interval_s=60, duration_factor=1.0) == 60.0
    assert automatic_round_gap_s(400.0, min_interval_s=60, duration_factor=1.0) == 400.0
    assert automatic_round_gap_s(400.0, min_interval_s=60, duration_factor=0.5) == 200.0
    assert automatic_round_gap_s(400.0, min_interval_s=60, duration_factor=0.0) == 60.0
    assert automatic_round_gap_s(None, min_interval_s=60, duration_factor=2.0) == 60.0
    assert automatic_round_gap_s(-5.0, min_interval_s=0, duration_factor=2.0) == 0.0


def test_no_round_yet_means_no_wait():
    assert automatic_round_wait_s(1000.0, None, None, 60, 1.0) == 0.0


@pytest.mark.parametrize(
    "now, expected",
    [
        (1000.0, 300.0),  # just finished: the whole gap (the 300 s round, factor 1)
        (1100.0, 200.0),
        (1299.5, 0.5),
        (1300.0, 0.0),  # the gap is over
        (5000.0, 0.0),
    ],
)
def test_the_wait_counts_down_from_the_end_of_the_last_round(now, expected):
    assert automatic_round_wait_s(now, 1000.0, 300.0, 60, 1.0) == pytest.approx(expected)


def test_a_round_that_seems_to_end_in_the_future_waits_one_gap_at_most():
    # another machine's clock ahead by an hour
    assert automatic_round_wait_s(1000.0, 4600.0, 30.0, 60, 1.0) == 60.0


def test_zero_settings_turn_the_cadence_off():
    assert automatic_round_wait_s(1000.0, 1000.0, 300.0, 0, 0.0) == 0.0


def test_settings_defaults_and_validation():
    settings = Settings.from_env({})
    assert settings.retrain_min_interval_s == 60.0 and settings.retrain_duration_factor == 1.0
    parsed = Settings.from_env({"RETRAIN_MIN_INTERVAL_S": "2.5", "RETRAIN_DURATION_FACTOR": "0"})
    assert parsed.retrain_min_interval_s == 2.5 and parsed.retrain_duration_factor == 0.0
    for name in ("RETRAIN_MIN_INTERVAL_S", "RETRAIN_DURATION_FACTOR"):
        with pytest.raises(SettingsError, match=name):
            Settings.from_env({name: "-1"})
