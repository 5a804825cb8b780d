"""When an automatic round may start: the retraining cadence follows what a round costs.

A round on a big project takes minutes; retraining every RETRAIN_AFTER_ANNOTATIONS annotations
would then run rounds back to back, with a backlog of triggers that never drains. So an automatic
round (annotation count, reconciler drift, or the follow-up of one of those) starts no sooner than
``max(RETRAIN_MIN_INTERVAL_S, RETRAIN_DURATION_FACTOR x the last round's duration)`` after the
last round finished. Start Training (and a labeling-config change) never waits. Pure: the clock
and the last round's figures are passed in.
"""

from __future__ import annotations


def automatic_round_gap_s(
    last_duration_s: float | None, min_interval_s: float, duration_factor: float
) -> float:
    """The least time between the end of a round and the start of the next automatic one."""
    duration = max(float(last_duration_s or 0.0), 0.0)
    return max(float(min_interval_s), duration * float(duration_factor), 0.0)


def automatic_round_wait_s(
    now_s: float,
    last_finished_s: float | None,
    last_duration_s: float | None,
    min_interval_s: float,
    duration_factor: float,
) -> float:
    """Seconds an automatic round must still wait (0.0: it may start now).

    No finished round yet: no wait. A last end in the future (a clock set back, another machine's
    clock) never makes the wait longer than one gap.
    """
    if last_finished_s is None:
        return 0.0
    gap = automatic_round_gap_s(last_duration_s, min_interval_s, duration_factor)
    elapsed = float(now_s) - float(last_finished_s)
    return min(max(gap - elapsed, 0.0), gap)
