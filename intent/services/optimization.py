"""Optimizing the configured program on labelled data, and saving it as a prompt version.

The optimization itself is Django-free (`intent.program.optimization`); this module picks the
configured backend, saves the result under `INTENT_PROGRAM_DIR/<prompt_version>.json|.joblib`,
registers the `PromptVersion`, and tracks the run in the `intent_optimization` experiment (contract C).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import dspy
from django.conf import settings

from intentsite import contract

from .. import tracking
from ..detectors import detector_get
from ..program import IntentDetector
from ..program.evaluation import LabelledExample, per_intent_report
from ..program.files import write_atomically
from ..program.optimization import OptimizationResult, lm_program_optimize, local_model_optimize
from .prompt_versions import prompt_version_register, prompt_version_saved_register

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OptimizationOutcome:
    result: OptimizationResult
    base_prompt_version: str
    prompt_version: str
    model_name: str
    program_path: Path
    run_id: str


def prompt_program_optimize(
    *,
    train: list[LabelledExample],
    val: list[LabelledExample],
    optimizer: str,
    dataset: Path,
    max_demos: int = 4,
    num_threads: int = 1,
    sample: dict[str, int] | None = None,
    progress: Callable[[Iterable], Iterable] = lambda items: items,
) -> OptimizationOutcome:
    """Optimize the configured detector's program (LM: a DSPy optimizer; local: refit + threshold), save it,
    register its prompt version (not active), and log the run in `intent_optimization`, tagged `improved`
    (strictly better on val). `sample`: how train and val were sampled (limit, seed), logged as params."""
    base = detector_get()
    prompt_version_register(detector=base)
    directory = Path(settings.INTENT_PROGRAM_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    if base.lm is not None:
        result = lm_program_optimize(
            catalog=base.catalog, lm=base.lm, adapter=base.adapter, optimizer=optimizer, train=train, val=val,
            base_program=base.program, max_demos=max_demos, num_threads=num_threads, progress=progress,
        )
        optimized = IntentDetector(catalog=base.catalog, local_model=base.local.model, lm_settings=base.lm_settings,
                                   adapter=base.adapter, program=result.program)
        path = directory / f"{optimized.prompt_version}.json"
        write_atomically(path, lambda tmp: result.program.save(tmp, save_program=False), suffix=".json")
        state = json.loads(path.read_text())
    else:
        result = local_model_optimize(catalog=base.catalog, base_model=base.local.model, train=train, val=val,
                                      progress=progress)
        optimized = IntentDetector(catalog=base.catalog, local_model=result.local_model)
        path = directory / f"{optimized.prompt_version}.joblib"
        write_atomically(path, result.local_model.save, suffix=".joblib")
        state = optimized.version_description
    prompt_version_saved_register(detector=optimized, path=path, base_version=base.prompt_version)
    run_id = _optimization_run_log(
        result=result, base=base, optimized=optimized, dataset=dataset, state=state,
        params={"train_examples": len(train), "val_examples": len(val),
                **{f"sample.{key}": value for key, value in (sample or {}).items()}},
    )
    return OptimizationOutcome(result=result, base_prompt_version=base.prompt_version,
                               prompt_version=optimized.prompt_version, model_name=optimized.model_name,
                               program_path=path, run_id=run_id)


def _optimization_run_log(*, result: OptimizationResult, base: IntentDetector, optimized: IntentDetector,
                          dataset: Path, state: dict, params: dict) -> str:
    """The optimization's run (contract C): scores before and after, the optimizer's params, the saved state."""
    metrics = {contract.SCORE_BEFORE: result.score_before, contract.SCORE_AFTER: result.score_after}
    for suffix, report in (("before", result.before), ("after", result.after)):
        for name, value in tracking.evaluation_metrics(report.summary()).items():
            metrics[f"{name}_{suffix}"] = value
    return tracking.experiment_run_log(
        experiment=contract.OPTIMIZATION_EXPERIMENT,
        run_name=f"optimize-{result.optimizer}-{optimized.prompt_version}",
        tags={
            contract.PROMPT_VERSION: optimized.prompt_version,
            contract.BASE_PROMPT_VERSION: base.prompt_version,
            contract.OPTIMIZER: result.optimizer,
            contract.MODEL_NAME: optimized.model_name,
            contract.RUN_KIND: "optimization",
            contract.DATASET: Path(dataset).name,
            contract.CATALOG_VERSION: base.catalog.version,
            contract.IMPROVED: str(result.improved).lower(),
        },
        params={**{f"optimizer.{key}": value for key, value in result.params.items()},
                "dspy_version": dspy.__version__, **{f"result.{key}": value for key, value in result.notes.items()},
                **params},
        metrics=metrics,
        dicts={
            contract.PROGRAM_STATE_ARTIFACT: state,
            "val_report_before.json": per_intent_report(result.before),
            "val_report_after.json": per_intent_report(result.after),
        },
    )
