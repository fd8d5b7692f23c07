"""The client writer: one detection run at a time through `MlflowClient`, for any store.

Explicit run ids (never the fluent, thread-local API); what an interrupted attempt left is completed, not made
twice."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from intentsite import contract

from .payload import run_name_for
from .store import TrackingPermanentError, experiment_id_get, tracking_client


@dataclass(frozen=True)
class LoggedRun:
    run_id: str
    created: bool  # False when an earlier attempt had already made the run


def run_id_find(*, request_id: str) -> str:
    """The id of the detection run with this request id ("" when there is none), deleted runs included."""
    from mlflow.entities import ViewType

    found = tracking_client().search_runs(
        [experiment_id_get()], filter_string=f"tags.{contract.REQUEST_ID} = '{request_id}'",
        run_view_type=ViewType.ALL, max_results=1,
    )
    return found[0].info.run_id if found else ""


def run_log(*, payload: dict[str, Any], known_run_id: str = "", search_first: bool = False) -> LoggedRun:
    """Log one detection as one MLflow run, idempotently.

    `known_run_id` (saved by an earlier attempt) or, with `search_first`, a search on the
    `request_id` tag finds a run an interrupted attempt left behind, so a retry completes that run
    instead of making a second one. Three calls for a new run (create with its tags, a batch of metrics and
    params, terminate): the smallest number MLflow's REST API allows. Thread-safe: the caller may keep several
    runs in flight.
    """
    from mlflow.entities import Metric, Param, RunStatus
    from mlflow.exceptions import MlflowException

    client = tracking_client()
    experiment_id = experiment_id_get()
    request_id = payload["tags"][contract.REQUEST_ID]
    run_id = known_run_id
    if not run_id and search_first:
        run_id = run_id_find(request_id=request_id)
    created = False
    try:
        if run_id:
            run = client.get_run(run_id)
            if RunStatus.is_terminated(RunStatus.from_string(run.info.status)):
                return LoggedRun(run_id=run_id, created=False)
        else:
            run = client.create_run(experiment_id, start_time=payload["start_time"], tags=payload["tags"],
                                    run_name=run_name_for(request_id))
            run_id, created = run.info.run_id, True
        timestamp = payload["end_time"]
        client.log_batch(
            run_id,
            metrics=[Metric(key, float(value), timestamp, 0) for key, value in payload["metrics"].items()],
            params=[Param(key, str(value)) for key, value in payload["params"].items()],
        )
        client.set_terminated(run_id, status=payload["status"], end_time=payload["end_time"])
    except MlflowException as exc:
        if exc.error_code == "INVALID_PARAMETER_VALUE":
            raise TrackingPermanentError(str(exc)) from exc
        raise
    return LoggedRun(run_id=run_id, created=created)
