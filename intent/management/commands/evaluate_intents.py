"""Evaluate the configured detector on a labelled set and print its figures."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from intent.detectors import detector_get
from intent.program import DetectionInput
from intent.program.evaluation import DatasetFormatError, dataset_read, evaluate


class Command(BaseCommand):
    help = "Run the configured detector over a labelled set (CLINC150 JSON, CSV or JSONL of message,intent)."

    def add_arguments(self, parser):
        parser.add_argument("--dataset", type=Path, required=True)
        parser.add_argument("--split", default="test", help="CLINC150 split (its oos_<split> is added).")
        parser.add_argument("--limit", type=int, default=None, help="Evaluate the first N examples only.")

    def handle(self, *args, **options):
        try:
            examples = dataset_read(options["dataset"], split=options["split"])
        except DatasetFormatError as exc:
            raise CommandError(str(exc)) from exc
        if options["limit"]:
            examples = examples[: options["limit"]]
        detector = detector_get()
        report = evaluate(
            lambda message: detector.detect(DetectionInput(message=message)).intent,
            examples,
            progress=lambda items: tqdm(items, desc="evaluating", unit="q", disable=None),
        )
        oos = f"{report.oos_recall:.2%}" if report.oos_recall is not None else "n/a (no out-of-scope examples)"
        self.stdout.write(
            f"model={detector.model_name} prompt_version={detector.prompt_version} "
            f"catalog={detector.catalog.version} ({detector.catalog.source})\n"
            f"examples={report.examples} in_scope_accuracy={report.in_scope_accuracy:.2%} oos_recall={oos} "
            f"macro_f1={report.macro_f1:.3f} ms_per_query_p50={report.latency_ms_p50:.3f} "
            f"ms_per_query_mean={report.latency_ms_mean:.3f}"
        )
