"""Bring the analytics mirror up to date with MLflow by hand, with a progress bar."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from analytics.services import runs_sync


class Command(BaseCommand):
    help = "Sync the ORM mirror of MLflow runs (incremental; --full re-reads every run and rebuilds the rollups)."

    def add_arguments(self, parser):
        parser.add_argument("--full", action="store_true", help="Read every run, reconcile, recompute all rollups.")
        parser.add_argument("--experiment", metavar="NAME", help="Experiment (default: MLFLOW_EXPERIMENT_NAME).")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar (logs, CI).")

    def handle(self, *args, **options):
        bar = None if options["no_progress"] else tqdm(unit="run", file=self.stderr._out,
                                                     dynamic_ncols=True)

        def progress(done: int, total: int | None) -> None:
            if bar is not None:
                bar.total = total
                bar.update(done - bar.n)

        try:
            result = runs_sync(experiment_name=options["experiment"], full=options["full"], progress=progress)
        finally:
            if bar is not None:
                bar.close()
        if result.skipped:
            raise CommandError(result.summary())
        self.stdout.write(result.summary())
