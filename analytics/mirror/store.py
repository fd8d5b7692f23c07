"""The MLflow store as a whole, for the app's operations: is it there and does it hold the experiment (health), and
the experiments' maintenance (recreate, restore, reset). The MLflow calls of analytics besides the readers."""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from intentsite.contract import LIFECYCLE_ACTIVE
from intentsite.uris import uri_display, uri_secrets_scrub

from .sources import run_source_get
from .sources.base import SQL_SCHEMES, MlflowSourceUnavailable
from .sources.client import ClientRunSource, client_get
from .sources.sql import SqlRunSource


def tracking_uri_display(uri: str | None = None) -> str:
    """The tracking URI with any user name, password or token removed."""
    return uri_display(uri or settings.MLFLOW_TRACKING_URI)


@dataclass(frozen=True)
class MlflowProbe:
    reachable: bool
    experiment_present: bool  # the experiment exists and is not deleted
    error: str | None = None


_CREDENTIALS = re.compile(r"//[^/@\s]+@")


def _within(timeout_s: float, function, *args: Any) -> Any:
    """`function(*args)`, or TimeoutError once `timeout_s` has passed (the call is left to finish in a
    daemon thread): whatever a driver does with a black-holed host, the caller gets an answer in time."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = function(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="mlflow-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {timeout_s:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _lifecycle_over_http(uri: str, name: str, timeout_s: float) -> str | None:
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    # Once more, at once, on a connection reset or refused (a server's keep-alive closing, a worker recycling):
    # one such error is not an MLflow that is down. The whole probe stays within its budget.
    response = http_request(get_default_host_creds(uri), "/api/2.0/mlflow/experiments/get-by-name", "GET",
                            params={"experiment_name": name}, max_retries=1, backoff_factor=0, retry_codes=frozenset(),
                            timeout=timeout_s)
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):  # a proxy or another server answering: not MLflow
        raise MlflowSourceUnavailable(f"HTTP {response.status_code} without MLflow's JSON: {response.text[:200]!r}")
    if response.status_code == 404 and body.get("error_code") == "RESOURCE_DOES_NOT_EXIST":
        return None
    if response.status_code != 200 or "experiment" not in body:
        raise MlflowSourceUnavailable(f"HTTP {response.status_code}: {response.text[:200]}")
    return body["experiment"]["lifecycle_stage"]


def _lifecycle_over_sql(uri: str, name: str, timeout_s: float) -> str | None:
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    if uri.startswith("sqlite:"):
        path = uri.split(":///", 1)[1] if ":///" in uri else ""
        if not path or not os.path.exists(path):
            raise MlflowSourceUnavailable(f"the MLflow store {path or uri!r} does not exist")
        # Read-only by construction: a health check never creates or migrates a store.
        engine = sqlalchemy.create_engine(f"sqlite:///file:{path}?mode=ro&uri=true", poolclass=NullPool,
                                          connect_args={"timeout": timeout_s})
    else:
        engine = sqlalchemy.create_engine(uri, poolclass=NullPool, connect_args={"connect_timeout": max(1, int(timeout_s))})
    try:
        with engine.connect() as conn:
            stages = conn.execute(sqlalchemy.text("SELECT lifecycle_stage FROM experiments WHERE name = :name"),
                                  {"name": name}).scalars().all()
    finally:
        engine.dispose()
    if not stages:
        return None
    return LIFECYCLE_ACTIVE if LIFECYCLE_ACTIVE in stages else stages[0]


def _lifecycle_over_client(uri: str, name: str, timeout_s: float) -> str | None:
    experiment = client_get(uri).get_experiment_by_name(name)
    return None if experiment is None else experiment.lifecycle_stage


def mlflow_modules_warm(uri: str | None = None) -> None:
    """Import what `mlflow_probe` needs for this URI, outside any probe's budget: the first probe of a fresh web
    process otherwise spends 2-3 s of its 3 s importing MLflow, and reports a healthy server as down."""
    uri = uri or settings.MLFLOW_TRACKING_URI
    if uri.startswith(("http://", "https://")):
        import mlflow.utils.credentials
        import mlflow.utils.rest_utils  # noqa: F401
    elif uri.startswith(SQL_SCHEMES):
        import sqlalchemy  # noqa: F401
    else:
        import mlflow.tracking  # noqa: F401


def mlflow_probe(*, experiment_name: str, uri: str | None = None, timeout_s: float = 3.0) -> MlflowProbe:
    """Can MLflow be read, and does it hold `experiment_name` (not deleted)? Answers within about
    `timeout_s` seconds whatever the store: an `http://` server is asked once, without retries; a
    database store is read with a short connect timeout (a missing SQLite file is unreachable, not created)."""
    uri = uri or settings.MLFLOW_TRACKING_URI
    if uri.startswith(("http://", "https://")):
        probe = _lifecycle_over_http
    elif uri.startswith(SQL_SCHEMES):
        probe = _lifecycle_over_sql
    else:
        probe = _lifecycle_over_client
    try:
        lifecycle = _within(timeout_s, probe, uri, experiment_name, timeout_s)
    except Exception as exc:  # noqa: BLE001 - any failure means: not reachable, and why
        # Drivers quote the URL they tried: keep its credentials out of the report.
        error = _CREDENTIALS.sub("//", uri_secrets_scrub(f"{type(exc).__name__}: {exc}", uri))
        return MlflowProbe(reachable=False, experiment_present=False, error=error[:500])
    return MlflowProbe(reachable=True, experiment_present=lifecycle == LIFECYCLE_ACTIVE)


@dataclass(frozen=True)
class ExperimentInfo:
    experiment_id: str
    name: str
    lifecycle: str
    artifact_location: str


def _client_call(uri: str | None, method: str, *args: Any, **kwargs: Any) -> Any:
    return ClientRunSource(uri or settings.MLFLOW_TRACKING_URI)._call(method, *args, **kwargs)


def experiment_get(*, name: str, uri: str | None = None) -> ExperimentInfo | None:
    """The experiment of that name, deleted or not; None when MLflow has none."""
    experiment = _client_call(uri, "get_experiment_by_name", name)
    if experiment is None:
        return None
    return ExperimentInfo(experiment_id=str(experiment.experiment_id), name=experiment.name,
                          lifecycle=experiment.lifecycle_stage, artifact_location=experiment.artifact_location or "")


def experiment_create(*, name: str, artifact_location: str | None = None, uri: str | None = None) -> str:
    return str(_client_call(uri, "create_experiment", name, artifact_location=artifact_location))


def experiment_restore(*, experiment_id: str, uri: str | None = None) -> None:
    """Undelete an experiment (MLflow marks all its runs active again)."""
    _client_call(uri, "restore_experiment", experiment_id)


def experiment_rename(*, experiment_id: str, new_name: str, uri: str | None = None) -> None:
    """Rename an active experiment (MLflow refuses to rename a deleted one)."""
    _client_call(uri, "rename_experiment", experiment_id, new_name)


def experiment_delete(*, experiment_id: str, uri: str | None = None) -> None:
    """Soft-delete an experiment and its runs (`mlflow gc` would remove them for good)."""
    _client_call(uri, "delete_experiment", experiment_id)


def experiment_active_runs_count(*, experiment_id: str, uri: str | None = None) -> int:
    """How many runs of the experiment are not deleted: one COUNT on a database store the SQL path can
    read, else the client's pages counted."""
    uri = uri or settings.MLFLOW_TRACKING_URI
    source = run_source_get(uri=uri, attachable=False)
    if isinstance(source, SqlRunSource):
        return int(source._rows("SELECT COUNT(*) FROM runs WHERE experiment_id = ? AND lifecycle_stage = ?",
                                int(experiment_id), LIFECYCLE_ACTIVE)[0][0])
    from mlflow.entities import ViewType

    count, token = 0, None
    while True:
        page = _client_call(uri, "search_runs", [experiment_id], run_view_type=ViewType.ACTIVE_ONLY,
                            max_results=50_000, page_token=token)
        count += len(page)
        token = page.token
        if not token:
            return count


def experiment_archive_name(*, name: str, experiment_id: str) -> str:
    """The name an experiment gets when a reset puts it aside (MLflow will not create a second experiment
    with the name of a deleted one, so the old one must give its name up)."""
    return f"{name}.reset-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{experiment_id}"
