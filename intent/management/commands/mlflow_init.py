"""Create (or migrate) the MLflow store and the detection experiment, once, before workers start."""

from django.conf import settings
from django.core.management.base import BaseCommand

from intent import tracking


class Command(BaseCommand):
    help = "Initialise the MLflow store and experiment (run once, by one process, before starting workers)."

    def handle(self, *args, **options):
        experiment_id = tracking.store_init()
        self.stdout.write(
            f"MLflow store ready at {tracking.tracking_uri_display()}; experiment "
            f"{settings.MLFLOW_EXPERIMENT_NAME!r} has id {experiment_id}."
        )
