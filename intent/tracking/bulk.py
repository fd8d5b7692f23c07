"""The bulk writer: a batch of detection runs in ONE transaction of a database store, with MLflow's own tables.

MlflowClient spends ~10-25 ms of ORM work per run (three calls, ~30 statements). For a store that is a database
(sqlite:, postgresql:, mysql:), a batch of runs is written with MLflow's own table definitions
(mlflow.store.tracking.dbmodels), and only when the store's schema revision is the one the installed MLflow
defines (`store.bulk_store`), so the rows are exactly what its client would have written. The run id is the
request id (a UUID4, as MLflow's own ids are): a retry of a batch that committed finds its runs by primary key and
writes nothing twice. The traces of the sampled detections go in the same transaction (`trace_bulk`). The client
path (`tracking.client`) stays the reference: tests read every run back with
MlflowClient.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from intentsite import contract

from .payload import run_name_for
from .store import bulk_store, experiment_artifact_location, experiment_id_get
from .trace_bulk import trace_rows_add
from .traces import trace_batch

logger = logging.getLogger(__name__)


def run_id_for(request_id: str) -> str:
    return uuid.UUID(request_id).hex


@dataclass(frozen=True)
class BulkResult:
    run_ids: dict[str, str]  # request id -> run id, for the runs this call wrote or found complete
    client_made: set[str]  # request ids whose run an earlier attempt made through the client
    traced: set[str] = field(default_factory=set)  # request ids whose trace went in with their run (or was there)


def runs_log_bulk(*, payloads: list[dict[str, Any]], retried: set[str] = frozenset()) -> BulkResult:
    """Write these detections' runs in one transaction.

    For the `retried` request ids, a run an earlier attempt made through the client (with a random
    id) is looked up by its `request_id` tag; such a run is left for the client path to complete
    (`client_made`) instead of being written twice.
    """
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag
    from sqlalchemy import insert, select

    store = bulk_store()
    if store is None:
        raise RuntimeError("The tracking store does not take bulk writes")
    experiment_id = experiment_id_get()
    artifact_root = experiment_artifact_location(experiment_id)
    run_ids = {payload["tags"][contract.REQUEST_ID]: run_id_for(payload["tags"][contract.REQUEST_ID])
               for payload in payloads}
    with store.ManagedSessionMaker(read_only=False) as session:
        client_made: set[str] = set()
        if retried:
            for run_id, request_id in session.execute(
                select(SqlTag.run_uuid, SqlTag.value).where(SqlTag.key == contract.REQUEST_ID,
                                                            SqlTag.value.in_(list(retried)))
            ):
                if run_id != run_ids[request_id]:
                    client_made.add(request_id)
                    run_ids.pop(request_id)
        existing = set(
            session.execute(select(SqlRun.run_uuid).where(SqlRun.run_uuid.in_(list(run_ids.values())))).scalars()
        )
        rows = _Rows()
        for payload in payloads:
            run_id = run_ids.get(payload["tags"][contract.REQUEST_ID])
            if run_id is not None and run_id not in existing:
                rows.add(payload, run_id=run_id, experiment_id=experiment_id, artifact_root=artifact_root)
        for table, values in ((SqlRun, rows.runs), (SqlTag, rows.tags), (SqlParam, rows.params),
                              (SqlMetric, rows.metrics), (SqlLatestMetric, rows.metrics)):
            if values:
                session.execute(insert(table.__table__), values)
        try:
            with session.begin_nested():  # a savepoint: traces are diagnostics, they never hold the runs back
                traced = _traces_add(session, store, experiment_id, payloads, run_ids)
        except Exception:  # noqa: BLE001 - the runs commit; `traces_log` tries these traces again after
            logger.warning("Could not write traces with their runs", exc_info=True)
            traced = set()
    return BulkResult(run_ids=run_ids, client_made=client_made, traced=traced)


def _traces_add(session, store, experiment_id: str, payloads: list[dict[str, Any]],
                run_ids: dict[str, str]) -> set[str]:
    """The traces of the sampled detections, in the runs' transaction: a run and its trace commit together. Returns
    the request ids whose trace is in the store now (none when MLflow's trace rollups are on: `traces_log` then)."""
    written = [payload for payload in payloads if payload["tags"][contract.REQUEST_ID] in run_ids]
    spans, metadata = trace_batch(logged=[(payload, run_ids[payload["tags"][contract.REQUEST_ID]])
                                          for payload in written])
    if not metadata or trace_rows_add(session=session, store=store, experiment_id=experiment_id, spans=spans,
                                      metadata=metadata) is None:
        return set()
    return {payload["tags"][contract.REQUEST_ID] for payload in written if payload.get("trace")}


@dataclass
class _Rows:
    """The rows of MLflow's tables for a batch of runs, as `MlflowClient` would have written them."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    tags: list[dict[str, Any]] = field(default_factory=list)
    params: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)

    def add(self, payload: dict[str, Any], *, run_id: str, experiment_id: str, artifact_root: str) -> None:
        from mlflow.entities import LifecycleStage, SourceType
        from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

        name = run_name_for(payload["tags"][contract.REQUEST_ID])
        self.runs.append({
            "run_uuid": run_id, "name": name, "experiment_id": int(experiment_id),
            "artifact_uri": f"{artifact_root.rstrip('/')}/{run_id}/artifacts",
            "source_type": SourceType.to_string(SourceType.UNKNOWN), "source_name": "", "entry_point_name": "",
            "user_id": "unknown",  # what MlflowClient.create_run stores without an mlflow.user tag
            "status": payload["status"], "start_time": payload["start_time"],
            "end_time": payload["end_time"], "deleted_time": None, "source_version": "",
            "lifecycle_stage": LifecycleStage.ACTIVE,
        })
        for key, value in {**payload["tags"], MLFLOW_RUN_NAME: name}.items():
            self.tags.append({"key": key, "value": str(value), "run_uuid": run_id})
        for key, value in payload["params"].items():
            self.params.append({"key": key, "value": str(value), "run_uuid": run_id})
        for key, value in payload["metrics"].items():
            self.metrics.append({"key": key, "value": float(value), "timestamp": payload["end_time"], "step": 0,
                                 "is_nan": False, "run_uuid": run_id})
