"""Create missing MLflow experiments and restore deleted ones (or, with --reset, start them anew)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from analytics.mirror.experiments import experiments_recreate
from analytics.mirror.sources.base import MlflowSourceError, MlflowSourceUnavailable


class Command(BaseCommand):
    help = ("Create the MLflow experiments intentsite writes to when missing and restore deleted ones; "
            "--reset deletes each existing one (renamed aside, runs orphaned) and creates it anew.")

    def add_arguments(self, parser):
        parser.add_argument("--reset", action="store_true",
                            help="Put every existing experiment aside (renamed, deleted) and create it anew.")

    def handle(self, *args, **options):
        try:
            result = experiments_recreate(reset=options["reset"])
        except (MlflowSourceUnavailable, MlflowSourceError) as exc:
            raise CommandError(f"MLflow: {exc}") from exc
        self.stdout.write(result.summary())
