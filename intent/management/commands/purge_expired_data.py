"""Remove what is past its retention now (beat does it daily): stored message text, detection details, mirrored raw
rows (rollups stay) and, with TRACKING_MLFLOW_RETENTION_DAYS, old detection runs and traces in MLflow."""

from django.conf import settings
from django.core.management.base import BaseCommand

from intent.services.retention import expired_data_purge

LABELS = {
    "message_texts": "stored message texts erased (older than INTENT_MESSAGE_RETENTION_DAYS={message})",
    "detection_details": "detection details deleted (older than ANALYTICS_RAW_RETENTION_DAYS={raw})",
    "mirrored_runs": "mirrored raw rows deleted, rollups kept (older than ANALYTICS_RAW_RETENTION_DAYS={raw})",
    "shadow_detections": "shadow candidates' answers deleted (older than ANALYTICS_RAW_RETENTION_DAYS={raw})",
    "mlflow_runs": "MLflow detection runs deleted (older than TRACKING_MLFLOW_RETENTION_DAYS={mlflow})",
    "mlflow_traces": "MLflow traces deleted (older than TRACKING_MLFLOW_RETENTION_DAYS={mlflow})",
}


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Count what would go; remove nothing.")

    def handle(self, *args, dry_run: bool, **options):
        removed = expired_data_purge(dry_run=dry_run)
        values = {"message": settings.INTENT_MESSAGE_RETENTION_DAYS, "raw": settings.ANALYTICS_RAW_RETENTION_DAYS or "off",
                  "mlflow": settings.TRACKING_MLFLOW_RETENTION_DAYS or "off"}
        prefix = "would go: " if dry_run else ""
        for kind, count in removed.items():
            if kind == "mlflow_traces" and dry_run:
                continue
            self.stdout.write(f"{prefix}{count:>9,} {LABELS[kind].format(**values)}")
