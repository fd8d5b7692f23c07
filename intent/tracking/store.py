"""MLflow tracking of detections: the contract's names, and the one module of `intent` that talks to MLflow.

Besides the detection runs (issue 3): users' feedback on a run (contract B, `run_feedback_log`), and the
offline evaluation and optimization runs (contract C, `experiment_run_log`).

To add a metric, tag or param: add a constant below and one line in `run_payload_build`. The payload
is plain JSON (it waits in the outbox table); `run_log` turns it into one MLflow run with
`MlflowClient` and explicit run ids (never the fluent, thread-local API).

`mlflow` itself is imported lazily, inside the functions that do I/O: web and Celery parent
processes import this module but never touch MLflow before they fork.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dspy
from django.conf import settings

from intentsite import contract
from intentsite.sqlite import sqlalchemy_sqlite_tune
from intentsite.uris import uri_display

from .program import Detection, DetectionInput
from .redaction import message_redact

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

logger = logging.getLogger(__name__)

# The contract's names (`intentsite.contract`) this module writes; what only this module knows:
PROMPT_STATE_ARTIFACT = "prompt_version.json"


def run_payload_build(
    *,
    request_id: str,
    request: DetectionInput,
    detection: Detection,
    started_at_ms: int,
) -> dict[str, Any]:
    """The MLflow run of one detection, as plain JSON."""
    tags = {
        contract.USER_ROLE: request.user_role,
        contract.CURRENT_MODULE: request.current_module,
        contract.CURRENT_TAB: request.current_tab,
        contract.DETECTED_INTENT: detection.intent,
        contract.DSPY_VERSION: dspy.__version__,
        contract.PROMPT_VERSION: detection.prompt_version,
        contract.REQUEST_ID: request_id,
        contract.STATUS: detection.status,
        contract.FALLBACK_USED: str(detection.fallback_used).lower(),
        contract.ANSWERED_BY: detection.answered_by,
    }
    if detection.error_category:
        tags[contract.ERROR_CATEGORY] = detection.error_category
        tags[contract.ERROR_TYPE] = detection.error_type or ""
    if settings.INTENT_LOG_MESSAGES:
        tags[contract.MESSAGE] = message_redact(request.message)
    metrics = {
        contract.CONFIDENCE_SCORE: detection.confidence,
        contract.RESPONSE_TIME_MS: detection.response_time_ms,
        contract.TEMPLATE_MATCH_RATE: 1.0 if (detection.workflow_template or detection.agent_template) else 0.0,
        contract.AVAILABLE_WORKFLOW_TEMPLATES: float(detection.available_workflow_templates),
        contract.AVAILABLE_AGENT_TEMPLATES: float(detection.available_agent_templates),
    }
    for key, name in (("prompt_tokens", contract.PROMPT_TOKENS), ("completion_tokens", contract.COMPLETION_TOKENS),
                      ("cost_usd", contract.COST_USD)):
        if key in detection.lm_usage:
            metrics[name] = float(detection.lm_usage[key])
    params = {
        contract.MODEL_NAME: detection.model_name,
        contract.MESSAGE_LENGTH: str(len(request.message)),
        contract.MESSAGE_WORD_COUNT: str(len(request.message.split())),
        contract.REQUIRES_WORKFLOW: str(detection.requires_workflow).lower(),
        contract.CATEGORY_SOURCE: detection.category_source,
    }
    return {
        "start_time": started_at_ms,
        "end_time": started_at_ms + max(1, round(detection.response_time_ms)),
        "status": contract.RUN_FINISHED if detection.status == contract.STATUS_SUCCESS else contract.RUN_FAILED,
        "tags": tags,
        "params": params,
        "metrics": metrics,
    }


# --- Talking to MLflow ---------------------------------------------------------------------------


class TrackingPermanentError(Exception):
    """MLflow refused the payload itself: retrying cannot help."""


def tracking_uri_display(uri: str | None = None) -> str:
    """The tracking URI with any credentials removed."""
    return uri_display(uri or settings.MLFLOW_TRACKING_URI)


def _sqlite_path(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///"))
    return None


_clients: dict[tuple[int, str], MlflowClient] = {}
_clients_lock = threading.Lock()


def tracking_client(uri: str | None = None) -> MlflowClient:
    """One MlflowClient per process and URI, created after fork, on first use.

    A fresh SQLite store is created under an exclusive file lock: several processes running MLflow's
    migrations on one new file at once corrupt it.
    """
    uri = uri or settings.MLFLOW_TRACKING_URI
    key = (os.getpid(), uri)
    client = _clients.get(key)
    if client is not None:
        return client
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            from mlflow.tracking import MlflowClient

            path = _sqlite_path(uri)
            if path is not None:
                sqlalchemy_sqlite_tune()
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(f"{path}.init.lock", "w") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX)
                    client = MlflowClient(tracking_uri=uri)
                    client.search_experiments(max_results=1)  # creates/migrates the schema, under the lock
            else:
                client = MlflowClient(tracking_uri=uri)
            _clients[key] = client
    return client


@functools.cache
def _experiment_ids() -> dict[tuple[str, str], tuple[str, float]]:
    return {}


# A process looks its experiment up again this often (seconds): after `recreate_experiments --reset`
# the name points at a new experiment, and every process follows within this long, without a restart.
EXPERIMENT_RECHECK_S = 60.0


def experiment_id_get(name: str | None = None, *, uri: str | None = None) -> str:
    """The experiment's id, creating it (or restoring it, if deleted) on first use; looked up again every
    `EXPERIMENT_RECHECK_S`, so a process follows an experiment that was reset under its name."""
    from mlflow.exceptions import MlflowException

    name = name or settings.MLFLOW_EXPERIMENT_NAME
    uri = uri or settings.MLFLOW_TRACKING_URI
    cache = _experiment_ids()
    cached = cache.get((uri, name))
    if cached is not None and time.monotonic() - cached[1] < EXPERIMENT_RECHECK_S:
        return cached[0]
    client = tracking_client(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            experiment_id = client.create_experiment(name, artifact_location=_artifact_location(uri, name))
        except MlflowException:  # another process created it first
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
            experiment_id = experiment.experiment_id
    else:
        experiment_id = experiment.experiment_id
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment_id)
    cache[(uri, name)] = (experiment_id, time.monotonic())
    return experiment_id


def experiment_cache_clear() -> None:
    _experiment_ids().clear()
    _experiment_artifact_locations().clear()
    _bulk_stores.clear()


def _artifact_location(uri: str, name: str) -> str | None:
    return contract.artifact_location(tracking_uri=uri, artifact_root=settings.MLFLOW_ARTIFACT_ROOT, experiment=name)


def store_init(*, uri: str | None = None) -> str:
    """Create (or migrate) the store and the detection experiment: run once, before workers start."""
    return experiment_id_get(uri=uri)


@dataclass(frozen=True)
class LoggedRun:
    run_id: str
    created: bool  # False when an earlier attempt had already made the run


def run_log(*, payload: dict[str, Any], known_run_id: str = "", search_first: bool = False,
            on_created=None) -> LoggedRun:
    """Log one detection as one MLflow run, idempotently.

    `known_run_id` (saved by an earlier attempt) or, with `search_first`, a search on the
    `request_id` tag finds a run an interrupted attempt left behind, so a retry completes that run
    instead of making a second one. `on_created(run_id)` is called as soon as the run exists, so the
    caller can save its id before anything else can fail.
    """
    from mlflow.entities import Metric, Param, RunStatus, ViewType
    from mlflow.exceptions import MlflowException

    client = tracking_client()
    experiment_id = experiment_id_get()
    request_id = payload["tags"][contract.REQUEST_ID]
    run_id = known_run_id
    if not run_id and search_first:
        found = client.search_runs(
            [experiment_id], filter_string=f"tags.{contract.REQUEST_ID} = '{request_id}'",
            run_view_type=ViewType.ALL, max_results=1,
        )
        run_id = found[0].info.run_id if found else ""
    created = False
    try:
        if run_id:
            run = client.get_run(run_id)
            if RunStatus.is_terminated(RunStatus.from_string(run.info.status)):
                return LoggedRun(run_id=run_id, created=False)
        else:
            run = client.create_run(experiment_id, start_time=payload["start_time"], tags=payload["tags"])
            run_id, created = run.info.run_id, True
            if on_created is not None:
                on_created(run_id)
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


# --- Bulk path for database stores --------------------------------------------------------------
#
# MlflowClient spends ~10-25 ms of ORM work per run (three calls, ~30 statements). For a store that is
# a database (sqlite:, postgresql:, mysql:), a batch of runs is written in ONE transaction with MLflow's
# own table definitions (mlflow.store.tracking.dbmodels), and only when the store's schema revision is
# the one the installed MLflow defines, so the rows are exactly what its client would have written.
# The run id is the request id (a UUID4, as MLflow's own ids are): a retry of a batch that committed
# finds its runs by primary key and writes nothing twice. The client path stays the reference: tests
# read every run back with MlflowClient.


def bulk_store(uri: str | None = None):
    """MLflow's SqlAlchemyStore behind the tracking URI when the bulk path may write it, else None."""
    uri = uri or settings.MLFLOW_TRACKING_URI
    cached = _bulk_stores.get((os.getpid(), uri))
    if cached is not None or (os.getpid(), uri) in _bulk_stores:
        return cached
    store = None
    if settings.TRACKING_BULK_WRITES and uri.split(":", 1)[0].split("+", 1)[0] in {"sqlite", "postgresql", "mysql"}:
        from mlflow.store.db.utils import _get_latest_schema_revision, _get_schema_version
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        candidate = tracking_client(uri)._tracking_client.store
        if isinstance(candidate, SqlAlchemyStore):
            revision, expected = _get_schema_version(candidate.engine), _get_latest_schema_revision()
            if revision == expected:
                store = candidate
            else:
                logger.warning("MLflow schema %s is not %s: logging runs one by one through the client",
                               revision, expected)
    _bulk_stores[(os.getpid(), uri)] = store
    return store


_bulk_stores: dict[tuple[int, str], Any] = {}


def run_id_for(request_id: str) -> str:
    import uuid

    return uuid.UUID(request_id).hex


@dataclass(frozen=True)
class BulkResult:
    run_ids: dict[str, str]  # request id -> run id, for the runs this call wrote or found complete
    client_made: set[str]  # request ids whose run an earlier attempt made through the client


def runs_log_bulk(*, payloads: list[dict[str, Any]], retried: set[str] = frozenset()) -> BulkResult:
    """Write these detections' runs in one transaction.

    For the `retried` request ids, a run an earlier attempt made through the client (with a random
    id) is looked up by its `request_id` tag; such a run is left for the client path to complete
    (`client_made`) instead of being written twice.
    """
    from mlflow.entities import LifecycleStage, SourceType
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME
    from sqlalchemy import insert, select

    store = bulk_store()
    if store is None:
        raise RuntimeError("The tracking store does not take bulk writes")
    experiment_id = experiment_id_get()
    artifact_root = _experiment_artifact_locations().get(experiment_id)
    if artifact_root is None:
        artifact_root = tracking_client().get_experiment(experiment_id).artifact_location
        _experiment_artifact_locations()[experiment_id] = artifact_root
    run_ids = {payload["tags"][contract.REQUEST_ID]: run_id_for(payload["tags"][contract.REQUEST_ID]) for payload in payloads}
    with store.ManagedSessionMaker(read_only=False) as session:
        client_made: set[str] = set()
        if retried:
            for run_id, request_id in session.execute(
                select(SqlTag.run_uuid, SqlTag.value).where(SqlTag.key == contract.REQUEST_ID, SqlTag.value.in_(list(retried)))
            ):
                if run_id != run_ids[request_id]:
                    client_made.add(request_id)
                    run_ids.pop(request_id)
        existing = set(
            session.execute(select(SqlRun.run_uuid).where(SqlRun.run_uuid.in_(list(run_ids.values())))).scalars()
        )
        runs, tags, params, metrics = [], [], [], []
        for payload in payloads:
            run_id = run_ids.get(payload["tags"][contract.REQUEST_ID])
            if run_id is None or run_id in existing:
                continue
            name = f"detect-{run_id[:8]}"
            runs.append({
                "run_uuid": run_id, "name": name, "experiment_id": int(experiment_id),
                "artifact_uri": f"{artifact_root.rstrip('/')}/{run_id}/artifacts",
                "source_type": SourceType.to_string(SourceType.UNKNOWN), "source_name": "", "entry_point_name": "",
                "user_id": "unknown",  # what MlflowClient.create_run stores without an mlflow.user tag
                "status": payload["status"], "start_time": payload["start_time"],
                "end_time": payload["end_time"], "deleted_time": None, "source_version": "",
                "lifecycle_stage": LifecycleStage.ACTIVE,
            })
            for key, value in {**payload["tags"], MLFLOW_RUN_NAME: name}.items():
                tags.append({"key": key, "value": str(value), "run_uuid": run_id})
            for key, value in payload["params"].items():
                params.append({"key": key, "value": str(value), "run_uuid": run_id})
            for key, value in payload["metrics"].items():
                metrics.append({"key": key, "value": float(value), "timestamp": payload["end_time"], "step": 0,
                                "is_nan": False, "run_uuid": run_id})
        if runs:
            session.execute(insert(SqlRun.__table__), runs)
            session.execute(insert(SqlTag.__table__), tags)
            if params:
                session.execute(insert(SqlParam.__table__), params)
            if metrics:
                session.execute(insert(SqlMetric.__table__), metrics)
                session.execute(insert(SqlLatestMetric.__table__), metrics)
    return BulkResult(run_ids=run_ids, client_made=client_made)


@functools.cache
def _experiment_artifact_locations() -> dict[str, str]:
    return {}


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


# --- Feedback on a detection run (contract B) -----------------------------------------------------


def run_feedback_log(*, run_id: str, expected_intent: str, is_correct: bool, comment: str, timestamp_ms: int) -> None:
    """Write a user's feedback on a detection's run; idempotent (a retry writes the same values).

    The metric's timestamp is the feedback's own time, so a newer feedback is always MLflow's latest
    value. A feedback without comment removes the comment an earlier one left.
    """
    from mlflow.entities import Metric, RunTag
    from mlflow.exceptions import MlflowException

    client = tracking_client()
    try:
        run = client.get_run(run_id)
        tags = [RunTag(contract.EXPECTED_INTENT, expected_intent)]
        if comment:
            tags.append(RunTag(contract.FEEDBACK_COMMENT, comment[:contract.FEEDBACK_COMMENT_MAX]))
        client.log_batch(run_id, metrics=[Metric(contract.IS_CORRECT, 1.0 if is_correct else 0.0, timestamp_ms, 0)],
                         tags=tags)
        if not comment and contract.FEEDBACK_COMMENT in run.data.tags:
            client.delete_tag(run_id, contract.FEEDBACK_COMMENT)
    except MlflowException as exc:
        if exc.error_code in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"):
            raise TrackingPermanentError(str(exc)) from exc
        raise


# --- Offline evaluation and optimization runs (contract C: names in `intentsite.contract`) -------------


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
