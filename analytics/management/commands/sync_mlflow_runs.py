"""Bring the analytics mirror up to date with MLflow by hand, with a progress bar."""

from __future__ import annotations

import logging
from contextlib import nullcontext

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from analytics.mirror.sync import runs_sync

SYNC_LOGGER = "analytics.mirror.sync"


class Command(BaseCommand):
    help = "Sync the ORM mirror of MLflow runs (incremental; --full re-reads every run and rebuilds the rollups)."

    def add_arguments(self, parser):
        parser.add_argument("--full", action="store_true", help="Read every run, reconcile, recompute all rollups.")
        parser.add_argument("--experiment", metavar="NAME", help="Experiment (default: MLFLOW_EXPERIMENT_NAME).")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar (logs, CI).")

    def handle(self, *args, **options):
        bar = None if options["no_progress"] else tqdm(unit="run", file=self.stderr._out, dynamic_ncols=True)

        def progress(done: int, total: int | None) -> None:
            if bar is not None:
                bar.total = total
                bar.update(done - bar.n)

        # The command prints the result itself: the sync's own summary line (for the worker's log) would say it
        # twice. Warnings still show, above the bar rather than through it.
        sync_logger = logging.getLogger(SYNC_LOGGER)
        level = sync_logger.level
        sync_logger.setLevel(logging.WARNING)
        try:
            with logging_redirect_tqdm() if bar is not None else nullcontext():
                result = runs_sync(experiment_name=options["experiment"], full=options["full"], progress=progress)
        finally:
            sync_logger.setLevel(level)
            if bar is not None:
                bar.close()
        if result.skipped:
            raise CommandError(result.summary())
        self.stdout.write(result.summary())
