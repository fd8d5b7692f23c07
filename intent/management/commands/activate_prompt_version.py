"""Make a saved (optimized) prompt version the program every detector uses."""

from django.core.management.base import BaseCommand, CommandError

from intent.services import PromptVersionNotActivatable, prompt_version_activate, prompt_version_deactivate


class Command(BaseCommand):
    help = ("Activate the program saved for a prompt version (see optimize_intents); every process picks it up "
            "within INTENT_CATALOG_REFRESH_S. --default goes back to the default program.")

    def add_arguments(self, parser):
        parser.add_argument("version", nargs="?", help="The prompt_version hash.")
        parser.add_argument("--default", action="store_true", help="Deactivate: back to the default program.")

    def handle(self, *args, **options):
        if options["default"]:
            prompt_version_deactivate()
            self.stdout.write("The default program is active.")
            return
        if not options["version"]:
            raise CommandError("Give a prompt version hash, or --default")
        try:
            version = prompt_version_activate(version=options["version"])
        except PromptVersionNotActivatable as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Active prompt version: {version.version} ({version.model_name}, {version.program_path})")
