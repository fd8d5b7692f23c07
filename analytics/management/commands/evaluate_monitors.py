"""python manage.py evaluate_monitors: evaluate every enabled monitor once (what beat does every minute)."""

from django.core.management.base import BaseCommand

from analytics.monitors.services import monitors_evaluate


class Command(BaseCommand):
    help = "Evaluate every enabled monitor once; record and notify each state change."

    def handle(self, *args, **options) -> None:
        result = monitors_evaluate()
        states = ", ".join(f"{count} {state}" for state, count in sorted(result.states.items())) or "none"
        self.stdout.write(f"Evaluated {result.evaluated} monitor(s) in {result.seconds * 1000:.0f} ms "
                          f"({result.rows_read} rollup rows read): {states}; {result.changed} changed, "
                          f"{result.renotified} re-notified.")
