"""Runs beside the detections: each prompt version once, offline evaluations and optimizations (contract C)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from intentsite import contract

from .store import experiment_id_get, tracking_client

PROMPT_STATE_ARTIFACT = "prompt_version.json"


def prompt_version_log(*, version: str, model_name: str, description: dict[str, Any]) -> str:
    """Record a prompt version once: a run in `intent_prompt_versions` with its full state as JSON."""
    from mlflow.entities import ViewType

    client = tracking_client()
    experiment_id = experiment_id_get(contract.PROMPT_VERSIONS_EXPERIMENT)
    found = client.search_runs([experiment_id], filter_string=f"tags.{contract.PROMPT_VERSION} = '{version}'",
                               run_view_type=ViewType.ALL, max_results=1)
    if found:
        return found[0].info.run_id
    run = client.create_run(experiment_id, run_name=f"prompt-{version}",
                            tags={contract.PROMPT_VERSION: version, contract.MODEL_NAME: model_name,
                                  "backend": str(description.get("backend", ""))})
    client.log_dict(run.info.run_id, description, PROMPT_STATE_ARTIFACT)
    client.set_terminated(run.info.run_id, status=contract.RUN_FINISHED)
    return run.info.run_id


def evaluation_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """Contract C's metrics from an `EvaluationReport.summary()` (OOS recall only when OOS was evaluated)."""
    metrics = {
        contract.IN_SCOPE_ACCURACY: summary["in_scope_accuracy"],
        contract.MACRO_F1: summary["macro_f1"],
        contract.LATENCY_P50_MS: summary["latency_ms_p50"],
        contract.EXAMPLES: summary["examples"],
    }
    if summary.get("oos_recall") is not None:
        metrics[contract.OOS_RECALL] = summary["oos_recall"]
    for name in (contract.ECE, contract.BRIER):
        if summary.get(name) is not None:
            metrics[name] = summary[name]
    return metrics


def experiment_run_log(
    *,
    experiment: str,
    run_name: str,
    tags: dict[str, str],
    params: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
    dicts: dict[str, Any] | None = None,
    figures: dict[str, Any] | None = None,
    files: dict[str, str | Path] | None = None,
    status: str = contract.RUN_FINISHED,
) -> str:
    """Log one finished run (an evaluation, an optimization) with its artifacts; returns its run id.

    `dicts` are logged as JSON artifacts, `figures` (matplotlib) as pictures, `files` copied under the
    given artifact directory ("" for the root).
    """
    from mlflow.entities import Metric, Param, RunTag

    client = tracking_client()
    experiment_id = experiment_id_get(experiment)
    run = client.create_run(experiment_id, run_name=run_name, tags={key: str(value) for key, value in tags.items()})
    run_id = run.info.run_id
    try:
        now = int(time.time() * 1000)
        client.log_batch(
            run_id,
            metrics=[Metric(key, float(value), now, 0) for key, value in (metrics or {}).items()],
            params=[Param(key, str(value)[:6000]) for key, value in (params or {}).items()],
            tags=[RunTag(key, str(value)) for key, value in tags.items()],
        )
        for name, content in (dicts or {}).items():
            client.log_dict(run_id, content, name)
        for name, figure in (figures or {}).items():
            client.log_figure(run_id, figure, name)
        for directory, path in (files or {}).items():
            client.log_artifact(run_id, str(path), directory or None)
    except Exception:
        client.set_terminated(run_id, status=contract.RUN_FAILED)
        raise
    client.set_terminated(run_id, status=status)
    return run_id


def prompt_experiment_run_sync(
    *,
    run_id: str,
    name: str,
    tags: dict[str, str],
    params: dict[str, Any],
    metrics: dict[str, float],
    step: int,
    ended_status: str = "",
    results: dict[str, Any] | None = None,
) -> str:
    """A live prompt experiment's run in `intent_experiments`: made at its start (params once), its metrics logged at
    each evaluation (`step`: its runs so far), its tags kept current, ended with `ended_status` (FINISHED, KILLED for a
    rollback) and the final results as JSON. Returns the run's id."""
    from mlflow.entities import Metric, Param, RunTag

    client = tracking_client()
    if not run_id:
        run = client.create_run(experiment_id_get(contract.PROMPT_EXPERIMENTS_EXPERIMENT), run_name=f"experiment-{name}",
                                tags={contract.EXPERIMENT: name, contract.RUN_KIND: "prompt_experiment"})
        run_id = run.info.run_id
        client.log_batch(run_id, params=[Param(key, str(value)[:6000]) for key, value in params.items()])
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(key, float(value), now, step) for key, value in metrics.items()],
                     tags=[RunTag(key, str(value)[:5000]) for key, value in tags.items()])
    if ended_status:
        if results is not None:
            client.log_dict(run_id, results, "results.json")
        client.set_terminated(run_id, status=ended_status)
    return run_id
