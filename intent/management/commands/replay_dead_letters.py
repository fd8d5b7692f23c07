"""Send tracking dead letters (records MLflow never took) to the workers again."""

from django.core.management.base import BaseCommand

from intent.services import detection_records_replay


class Command(BaseCommand):
    help = "Replay dead-lettered detection records into MLflow (all, or the given request ids)."

    def add_arguments(self, parser):
        parser.add_argument("request_ids", nargs="*", help="Only these request ids (default: all).")

    def handle(self, *args, **options):
        count = detection_records_replay(request_ids=options["request_ids"] or None)
        self.stdout.write(f"Replayed {count} dead letter(s); a worker logs them now.")
