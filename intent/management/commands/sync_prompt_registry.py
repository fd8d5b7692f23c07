"""Bring MLflow's registry along by hand: what a worker does after each activation or experiment change."""

from django.core.management.base import BaseCommand

from intent.services.prompt_versions import prompt_registry_sync


class Command(BaseCommand):
    help = ("Register the prompt versions in play as versions of MLflow's registered model `intent-detector` and point "
            "its aliases: `production` at the version answering now, `candidate` at a running experiment's variant.")

    def handle(self, *args, **options):
        for alias, version in prompt_registry_sync().items():
            self.stdout.write(f"{alias}: {version}")
