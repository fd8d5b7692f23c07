"""Evaluate the configured detector on a labelled set, print its figures and log them to MLflow."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from intent.program.evaluation import DatasetFormatError, dataset_read, examples_sample, sample_description
from intent.services.evaluation import detector_evaluate


class Command(BaseCommand):
    help = ("Run the configured detector over a labelled set (CLINC150 JSON, CSV or JSONL of message,intent) "
            "and log one run in the MLflow experiment `intent_evaluation`.")

    def add_arguments(self, parser):
        parser.add_argument("--dataset", type=Path, required=True)
        parser.add_argument("--split", default="test", help="CLINC150 split (its oos_<split> is added).")
        parser.add_argument("--limit", type=int, default=None, metavar="N",
                            help="Evaluate a sample of N examples, stratified by intent (out-of-scope is a stratum "
                                 "of its own; proportional shares, every intent at least once when N >= the number "
                                 "of intents), drawn with --seed. N >= the dataset: the whole dataset.")
        parser.add_argument("--seed", type=int, default=0, help="Seed of the --limit sample (default 0).")
        parser.add_argument("--no-mlflow", action="store_true", help="Print the figures only; log no run.")

    def handle(self, *args, **options):
        if options["limit"] is not None and options["limit"] < 1:
            raise CommandError("--limit must be >= 1")
        dataset = options["dataset"]
        try:
            examples = dataset_read(dataset, split=options["split"])
        except DatasetFormatError as exc:
            raise CommandError(str(exc)) from exc
        if not examples:
            raise CommandError(f"{dataset}: no examples")
        sample = examples_sample(examples, limit=options["limit"], seed=options["seed"])
        if options["limit"] is not None:
            self.stdout.write(sample_description(examples, sample, limit=options["limit"], seed=options["seed"]))
        examples = sample
        is_clinc = Path(dataset).suffix.lower() not in {".csv", ".jsonl", ".ndjson"}
        result = detector_evaluate(
            examples=examples,
            dataset=dataset,
            split=options["split"] if is_clinc else "all",
            track=not options["no_mlflow"],
            sample={"limit": options["limit"], "seed": options["seed"]} if options["limit"] is not None else None,
            progress=lambda items: tqdm(items, desc="evaluating", unit="q", disable=None),
        )
        report = result.report
        oos = f"{report.oos_recall:.2%}" if report.oos_recall is not None else "n/a (no out-of-scope examples)"
        self.stdout.write(
            f"model={result.model_name} prompt_version={result.prompt_version} "
            f"catalog={result.catalog_version} ({result.catalog_source})\n"
            f"examples={report.examples} in_scope_accuracy={report.in_scope_accuracy:.2%} oos_recall={oos} "
            f"macro_f1={report.macro_f1:.3f} ms_per_query_p50={report.latency_ms_p50:.3f} "
            f"ms_per_query_mean={report.latency_ms_mean:.3f}"
        )
        if result.run_id:
            self.stdout.write(f"mlflow_run_id={result.run_id} (experiment intent_evaluation)")
