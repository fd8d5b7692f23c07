"""What beat runs every EXPERIMENTS_EVALUATE_INTERVAL_S: each running experiment's results, a rollback when a
guardrail is breached, the decision recorded once the fixed horizon is reached, and its run in MLflow kept current.

Reads the rollups, which the sync keeps within seconds of the runs (a worker asks for a sync after logging), so a
variant failing its guardrail sends the traffic back to control within one evaluation and one assignment refresh.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from django.utils import timezone

from .. import tracking
from ..models import Experiment
from .results import experiment_results_get
from .services import EXPERIMENT_NOTIFY, after_commit_send, experiment_rollback

logger = logging.getLogger(__name__)
Status = Experiment.Status


@dataclass
class ExperimentsEvaluation:
    evaluated: int = 0
    rolled_back: list[str] = field(default_factory=list)
    decided: list[str] = field(default_factory=list)


def experiments_evaluate(*, track: bool = True) -> ExperimentsEvaluation:
    """Evaluate every running experiment once (`track`: also log its numbers to its MLflow run)."""
    outcome = ExperimentsEvaluation()
    for experiment in Experiment.objects.filter(status=Status.RUNNING).order_by("pk"):
        outcome.evaluated += 1
        results = experiment_results_get(experiment=experiment)
        breaches = [check for check in results["guardrails"] if check["breached"]]
        if breaches:
            reason = "; ".join(f"{b['variant']}: {b['guardrail']} {b['value']:.4g} > {b['limit']:g} ({b['why']}, "
                               f"{b['runs']} runs)" for b in breaches)
            experiment = experiment_rollback(experiment=experiment, reason=reason, breaches=breaches)
            outcome.rolled_back.append(experiment.name)
            logger.warning("Experiment %s rolled back: %s", experiment.name, reason)
        elif results["horizon"]["reached"] and not (experiment.decision or {}).get("decided_at"):
            verdict = results["decision"]
            decision = {**(experiment.decision or {}), "decided_at": timezone.now().isoformat(),
                        "state": verdict["state"], "reason": verdict["reason"],
                        "winner": verdict["variant"] if verdict["state"] == "winner" else None,
                        "adjusted_p_values": verdict["adjusted_p_values"]}
            Experiment.objects.filter(pk=experiment.pk, status=Status.RUNNING).update(decision=decision)
            experiment.decision = decision
            outcome.decided.append(experiment.name)
            after_commit_send(EXPERIMENT_NOTIFY, experiment.pk)
        if track:
            try:
                experiment_track(experiment=experiment, results=results)
            except Exception:  # noqa: BLE001 - MLflow away: the next evaluation logs again
                logger.warning("Could not log experiment %s to MLflow", experiment.name, exc_info=True)
    return outcome


def _metrics(results: dict[str, Any]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    primary = results["experiment"]["primary_metric"]
    for arm in results["arms"]:
        metrics[f"{arm['name']}.runs"] = arm["runs"]
        for name, estimate in arm["metrics"].items():
            if estimate["value"] is not None:
                metrics[f"{arm['name']}.{name}"] = estimate["value"]
        difference = (arm.get("difference") or {}).get(primary) or {}
        if difference.get("p_value") is not None:
            metrics[f"{arm['name']}.p_value"] = difference["p_value"]
    return metrics


def experiment_track(*, experiment: Experiment, results: dict[str, Any] | None = None) -> str:
    """Bring the experiment's run in `intent_experiments` up to date (made at the first call, ended with it)."""
    if experiment.status == Status.DRAFT:
        return ""
    results = results or experiment_results_get(experiment=experiment)
    ended = {Status.ROLLED_BACK: "KILLED", Status.STOPPED: "FINISHED", Status.PROMOTED: "FINISHED"}.get(
        experiment.status, "")
    run_id = tracking.prompt_experiment_run_sync(
        run_id=experiment.mlflow_run_id, name=experiment.name,
        tags={"status": experiment.status, "decision": results["decision"]["state"],
              "reason": (experiment.decision or {}).get("reason", "")},
        params={"mode": experiment.mode, "control": experiment.control, "variants": experiment.variants,
                "assignment": experiment.assignment, "primary_metric": experiment.primary_metric,
                "guardrails": experiment.guardrails, "min_runs_per_variant": experiment.min_runs_per_variant,
                "alpha": experiment.alpha, "scope": experiment.scope},
        metrics=_metrics(results), step=sum(arm["runs"] for arm in results["arms"]), ended_status=ended,
        results=_json(results) if ended else None,
    )
    if run_id != experiment.mlflow_run_id:
        Experiment.objects.filter(pk=experiment.pk).update(mlflow_run_id=run_id)
        experiment.mlflow_run_id = run_id
    return run_id


def _json(value: Any) -> Any:
    """The results as JSON (dates as text)."""
    import json

    from django.core.serializers.json import DjangoJSONEncoder

    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))
