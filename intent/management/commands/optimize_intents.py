"""Optimize the configured program on labelled data (a DSPy optimizer, or the local model's refit), save it as
a prompt version, and track the run in MLflow's `intent_optimization` experiment."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from intent.program.evaluation import DatasetFormatError, dataset_read, examples_sample, sample_description
from intent.program.optimization import OPTIMIZERS, OptimizationError, correct
from intent.services.optimization import prompt_program_optimize


class Command(BaseCommand):
    help = ("Compile the DSPy program with an optimizer on the training split against the configured LM "
            "(INTENT_LM=local: refit the local model and re-choose its out-of-scope threshold), score it before "
            "and after on the validation split, save it and log the run in `intent_optimization`. Activation "
            "is suggested only when it scored strictly better on val.")

    def add_arguments(self, parser):
        parser.add_argument("--dataset", type=Path, required=True,
                            help="CLINC150 JSON (splits as keys), or CSV/JSONL of message,intent with a split column.")
        parser.add_argument("--optimizer", choices=OPTIMIZERS, default="bootstrap",
                            help="DSPy optimizer for the LM backend (ignored by the local backend).")
        parser.add_argument("--train-split", default="train")
        parser.add_argument("--val-split", default="val")
        parser.add_argument("--limit", type=int, default=None, metavar="N",
                            help="Use a sample of N examples of each split, stratified by intent (out-of-scope is "
                                 "a stratum of its own; proportional shares, every intent at least once when N >= "
                                 "the number of intents), drawn with --seed. N >= a split: the whole split.")
        parser.add_argument("--seed", type=int, default=0, help="Seed of the --limit samples (default 0).")
        parser.add_argument("--max-demos", type=int, default=4, help="Few-shot demos per predictor.")
        parser.add_argument("--num-threads", type=int, default=1, help="Threads for MIPROv2's evaluations.")

    def handle(self, *args, **options):
        limit, seed = options["limit"], options["seed"]
        if limit is not None and limit < 1:
            raise CommandError("--limit must be >= 1")
        if options["train_split"] == options["val_split"]:
            raise CommandError("--train-split and --val-split must differ")
        try:
            train = dataset_read(options["dataset"], split=options["train_split"], require_split=True)
            val = dataset_read(options["dataset"], split=options["val_split"], require_split=True)
        except DatasetFormatError as exc:
            raise CommandError(str(exc)) from exc
        if limit is not None:
            samples = {"train": examples_sample(train, limit=limit, seed=seed),
                       "val": examples_sample(val, limit=limit, seed=seed)}
            for name, population in (("train", train), ("val", val)):
                self.stdout.write(f"{name} {sample_description(population, samples[name], limit=limit, seed=seed)}")
            train, val = samples["train"], samples["val"]
        try:
            outcome = prompt_program_optimize(
                train=train, val=val, optimizer=options["optimizer"], dataset=options["dataset"],
                max_demos=options["max_demos"], num_threads=options["num_threads"],
                sample={"limit": limit, "seed": seed} if limit is not None else None,
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
            f"saved={outcome.program_path}\nmlflow_run_id={outcome.run_id} (experiment intent_optimization)"
        )
        before = f"{result.score_before:.2%} ({correct(result.before):,} of {len(val):,} right)"
        after = f"{result.score_after:.2%} ({correct(result.after):,} of {len(val):,} right)"
        if result.improved:
            self.stdout.write(
                f"The optimized program scored better on val: {after} > {before} (before).\n"
                f"activate with: python manage.py activate_prompt_version {outcome.prompt_version}"
            )
            return
        if correct(result.after) == correct(result.before):
            verdict = f"The optimized program scored the same on val: {after}, as before; no gain."
        else:
            verdict = f"The optimized program scored worse on val: {after} < {before} (before)."
        self.stdout.write(
            f"{verdict} Not suggesting activation; it is saved as prompt version {outcome.prompt_version} "
            f"and can still be activated by hand."
        )
