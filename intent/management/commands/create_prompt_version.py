"""Save a new local-model prompt version: the fitted model answering now, with another threshold or temperature."""

from django.core.management.base import BaseCommand, CommandError

from intent.services import PromptVersionNotActivatable
from intent.services.prompt_versions import local_prompt_version_create


class Command(BaseCommand):
    help = ("Save the local model answering now with another out-of-scope threshold and/or softmax temperature as a "
            "prompt version (a candidate for an experiment, or to activate). Prints its hash.")

    def add_arguments(self, parser):
        parser.add_argument("--oos-threshold", type=float, help="Top probability below which the answer is "
                                                                "out_of_scope (0-1; the default model's: 0.375).")
        parser.add_argument("--temperature", type=float, help="Softmax temperature (> 0; default model's: 0.158).")

    def handle(self, *args, **options):
        if options["oos_threshold"] is None and options["temperature"] is None:
            raise CommandError("Give --oos-threshold and/or --temperature")
        try:
            version = local_prompt_version_create(oos_threshold=options["oos_threshold"],
                                                  temperature=options["temperature"])
        except (PromptVersionNotActivatable, ValueError) as error:
            raise CommandError(str(error)) from error
        self.stdout.write(version.version)
