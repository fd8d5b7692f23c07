"""Load an intent catalog into the database (default: the shipped CLINC150 demo catalog)."""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from intent.detectors import local_model_get
from intent.selectors import catalog_get
from intent.services import CatalogFormatError, catalog_load, catalog_read

DEFAULT_TEMPLATES = Path(__file__).resolve().parents[2] / "data" / "clinc150_templates.json"


class Command(BaseCommand):
    help = (
        "Load an intent catalog (CLINC150 data_full.json or intentsite's JSON format) and fit the local "
        "model for it. Idempotent: loading the same file again changes nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("--file", type=Path, default=settings.INTENT_CATALOG_PATH,
                            help="Catalog file (default: the shipped CLINC150 data).")
        parser.add_argument("--templates", type=Path, default=None,
                            help="Workflow/agent templates JSON (default for CLINC150: the shipped mapping).")
        parser.add_argument("--replace", action="store_true",
                            help="Deactivate categories and templates that are not in the file.")
        parser.add_argument("--no-fit", action="store_true", help="Do not fit the local model now.")

    def handle(self, *args, **options):
        templates = options["templates"]
        if templates is None and options["file"] == settings.INTENT_CATALOG_PATH:
            templates = DEFAULT_TEMPLATES
        try:
            catalog = catalog_read(path=options["file"], templates_path=templates)
            result = catalog_load(catalog=catalog, replace=options["replace"])
        except CatalogFormatError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"Catalog loaded: {result.categories_created} categories created, {result.categories_updated} updated, "
            f"{result.categories_deactivated} deactivated; {result.examples} examples; "
            f"{result.workflow_templates} workflow and {result.agent_templates} agent templates."
        )
        if not options["no_fit"]:
            active = catalog_get()
            local_model_get(catalog=active)
            self.stdout.write(f"Local model ready for catalog version {active.version}.")
