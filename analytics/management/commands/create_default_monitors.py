"""python manage.py create_default_monitors: the monitors `make demo` starts with (idempotent)."""

from django.core.management.base import BaseCommand

from analytics.monitors.defaults import DEFAULT_MONITORS, monitors_create_defaults


class Command(BaseCommand):
    help = "Create the default monitors (error rate, p95 latency, fallbacks, out of scope, traffic, drift) if missing."

    def add_arguments(self, parser):
        parser.add_argument("--channel", action="append", dest="channels", metavar="URL",
                            help="A notification URL (apprise) for them; repeatable. Default: log://.")

    def handle(self, *args, **options) -> None:
        created = monitors_create_defaults(channels=options["channels"])
        self.stdout.write(f"{len(created)} of {len(DEFAULT_MONITORS)} default monitors created"
                          + (f": {', '.join(m.name for m in created)}" if created else " (they exist)"))
