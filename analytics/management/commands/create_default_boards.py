"""The service's default boards ("Support team: banking module", "Model owner: LM health"), shared with all staff."""

from django.core.management.base import BaseCommand

from analytics.boards.services import default_boards_create


class Command(BaseCommand):
    help = "Create the default boards, shared with all staff (each once, by name)."

    def handle(self, *args, **options):
        self.stdout.write(f"{default_boards_create()} default board(s) created.")
