"""The RQ worker that runs training jobs: ``python -m backend.worker [--burst]``."""

from __future__ import annotations

import argparse
import logging

from rq import Worker

from backend import logs, queueing
from backend.settings import Settings

log = logging.getLogger(__name__)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    logs.configure(settings.log_level)
    conn = queueing.redis_connection(settings)
    if settings.reconcile_interval_s > 0:
        from backend.reconcile import Reconciler

        Reconciler(settings, conn).start()
    worker = Worker([queueing.training_queue(settings, conn)], connection=conn)
    log.info(
        "worker listening on queue %r (model dir %s, device %s)",
        settings.queue_name,
        settings.model_dir,
        settings.device,
    )
    # the scheduler starts automatic rounds that waited for the retraining cadence
    # (queueing.defer_training): every worker offers, the one holding its lock runs it
    worker.work(burst=args.burst, logging_level=settings.log_level.upper(), with_scheduler=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
