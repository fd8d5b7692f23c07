"""Offline evaluation of the configured detector on a labelled set, tracked as one MLflow run (contract C)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from intentsite import contract

from .. import tracking
from ..detectors import detector_get
from ..program import DetectionInput, IntentDetector
from ..program.evaluation import (
    EvaluationReport,
    LabelledExample,
    confusion_figure,
    evaluate,
    per_intent_report,
)
from .prompt_versions import prompt_version_register


@dataclass(frozen=True)
class EvaluationResult:
    report: EvaluationReport
    model_name: str
    prompt_version: str
    catalog_version: str
    catalog_source: str
    run_id: str | None  # None when not tracked


def detector_evaluate(
    *,
    examples: list[LabelledExample],
    dataset: Path,
    split: str,
    detector: IntentDetector | None = None,
    track: bool = True,
    sample: dict[str, int] | None = None,
    progress: Callable[[Iterable], Iterable] = lambda items: items,
) -> EvaluationResult:
    """Run the detector (the configured one by default) over the examples; log the run in `intent_evaluation`
    (`sample`: how the examples were sampled, e.g. limit and seed, logged as params)."""
    detector = detector or detector_get()
    prompt_version_register(detector=detector)  # the run is tagged with its version: keep what the version means
    report = evaluate(lambda message: _answer(detector.detect(DetectionInput(message=message))), examples,
                      progress=progress)
    run_id = None
    if track:
        run_id = evaluation_run_log(report=report, detector=detector, dataset=dataset, split=split, sample=sample)
    return EvaluationResult(report=report, model_name=detector.model_name, prompt_version=detector.prompt_version,
                            catalog_version=detector.catalog.version, catalog_source=detector.catalog.source,
                            run_id=run_id)


def _answer(detection) -> tuple[str, float]:
    return detection.intent, detection.confidence


def evaluation_run_log(*, report: EvaluationReport, detector: IntentDetector, dataset: Path, split: str,
                       sample: dict[str, int] | None = None) -> str:
    return tracking.experiment_run_log(
        experiment=contract.EVALUATION_EXPERIMENT,
        run_name=f"eval-{detector.prompt_version}-{Path(dataset).stem}",
        tags={
            contract.PROMPT_VERSION: detector.prompt_version,
            contract.MODEL_NAME: detector.model_name,
            contract.DATASET: Path(dataset).name,
            contract.SPLIT: split,
            contract.RUN_KIND: "evaluation",
            contract.CATALOG_VERSION: detector.catalog.version,
        },
        params={f"sample.{key}": value for key, value in (sample or {}).items()},
        metrics=tracking.evaluation_metrics(report.summary()),
        dicts={contract.PER_INTENT_REPORT_ARTIFACT: per_intent_report(report)},
        figures={contract.CONFUSION_MATRIX_ARTIFACT: confusion_figure(report.labels, report.predictions)},
    )
