"""Optimize the configured program on labelled data (a DSPy optimizer, or the local model's refit), save it as
a prompt version, and track the run in MLflow's `intent_optimization` experiment."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from intent.program.evaluation import DatasetFormatError, dataset_read
from intent.program.optimization import OPTIMIZERS, OptimizationError
from intent.services.optimization import prompt_program_optimize


class Command(BaseCommand):
    help = ("Compile the DSPy program with an optimizer on the training split against the configured LM "
            "(INTENT_LM=local: refit the local model and re-choose its out-of-scope threshold), score it before "
            "and after on the validation split, save it and log the run in `intent_optimization`.")

    def add_arguments(self, parser):
        parser.add_argument("--dataset", type=Path, required=True,
                            help="CLINC150 JSON (splits as keys), or CSV/JSONL of message,intent with a split column.")
        parser.add_argument("--optimizer", choices=OPTIMIZERS, default="bootstrap",
                            help="DSPy optimizer for the LM backend (ignored by the local backend).")
        parser.add_argument("--train-split", default="train")
        parser.add_argument("--val-split", default="val")
        parser.add_argument("--limit", type=int, default=None, help="Use the first N examples of each split.")
        parser.add_argument("--max-demos", type=int, default=4, help="Few-shot demos per predictor.")
        parser.add_argument("--num-threads", type=int, default=1, help="Threads for MIPROv2's evaluations.")

    def handle(self, *args, **options):
        limit = options["limit"]
        if limit is not None and limit < 1:
            raise CommandError("--limit must be >= 1")
        if options["train_split"] == options["val_split"]:
            raise CommandError("--train-split and --val-split must differ")
        try:
            train = dataset_read(options["dataset"], split=options["train_split"], require_split=True)
            val = dataset_read(options["dataset"], split=options["val_split"], require_split=True)
        except DatasetFormatError as exc:
            raise CommandError(str(exc)) from exc
        if limit:
            train, val = train[:limit], val[:limit]
        try:
            outcome = prompt_program_optimize(
                train=train, val=val, optimizer=options["optimizer"], dataset=options["dataset"],
                max_demos=options["max_demos"], num_threads=options["num_threads"],
                progress=lambda items: tqdm(items, desc="scoring on val", unit="q", disable=None),
            )
        except OptimizationError as exc:
            raise CommandError(str(exc)) from exc
        result = outcome.result
        self.stdout.write(
            f"optimizer={result.optimizer} model={outcome.model_name} train={len(train)} val={len(val)}\n"
            f"score_before={result.score_before:.2%} score_after={result.score_after:.2%} "
            f"(val accuracy, out-of-scope included)\n"
            f"base_prompt_version={outcome.base_prompt_version} prompt_version={outcome.prompt_version}\n"
            f"saved={outcome.program_path}\nmlflow_run_id={outcome.run_id} (experiment intent_optimization)\n"
            f"activate with: python manage.py activate_prompt_version {outcome.prompt_version}"
        )
