"""A round's progress: the status callback it reports to and the seconds its phases took."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from backend.constants import PROGRESS_STATUS_INTERVAL_S, RoundPhase

StatusCallback = Callable[..., None]


class RoundRun:
    """One round's progress: the status callback it reports to and the seconds its steps took."""

    def __init__(self, status: StatusCallback):
        self.status = status
        self.timings: dict[str, float] = {}
        self.started = time.monotonic()

    @contextmanager
    def phase(self, timing: str | None = None, phase: RoundPhase | None = None, **fields) -> Iterator[None]:
        """Announce ``phase`` (with ``fields``) in the status, then time the block as
        ``timings[timing]`` (a block that raises ends the round: nothing is recorded)."""
        if phase is not None:
            self.status(phase=phase, **fields)
        started = time.monotonic()
        yield
        if timing is not None:
            self.timings[timing] = time.monotonic() - started

    def training_progress(self) -> Callable[[dict], None]:
        return self.throttled_progress(RoundPhase.TRAINING, "training_progress")

    def throttled_progress(self, phase: RoundPhase, field_name: str) -> Callable[[dict], None]:
        """A progress callback that shows its latest ``info`` as ``field_name`` in the status."""
        last = [0.0]

        def report_progress(info: dict) -> None:
            if time.monotonic() - last[0] >= PROGRESS_STATUS_INTERVAL_S:  # throttle Redis writes
                last[0] = time.monotonic()
                self.status(phase=phase, **{field_name: info})

        return report_progress

    def scoring_progress(self, phase: RoundPhase = RoundPhase.SCORING) -> Callable[[int, int], None]:
        def report_progress(done: int, total: int) -> None:
            self.status(phase=phase, scoring_progress={"done": done, "total": total})

        return report_progress

    def timings_summary(self) -> dict[str, float]:
        """Every timing so far and the round's total, in seconds (for the round's summary)."""
        self.timings["total_s"] = time.monotonic() - self.started
        return {k: round(v, 2) for k, v in self.timings.items()}
