"""Reading runs back from MLflow for the mirror: the one module of `analytics` that talks to MLflow.

Two ways to read, one result (a list of `SourceRun`, plain data):

- `ClientRunSource`: `MlflowClient.search_runs` (any tracking URI, `http://` servers included), paged
  with `page_token`, ordered by start time, `ViewType.ALL` so deleted runs are seen too. The reference.
- `SqlRunSource`: for `sqlite:` / `postgresql:` / `mysql:` stores, MLflow's own tables read in bulk
  with SQLAlchemy (runs, tags, params, latest_metrics, experiments). That schema is MLflow's private
  business, so it is used only when the store's alembic revision is the one MLflow 3.17.2 creates
  (`MLFLOW_SCHEMA_REVISION`); otherwise the client path is used. Tests hold both paths to the same mirror.

`mlflow` and `sqlalchemy` are imported lazily, and clients and engines are made per process on first use:
a Celery parent imports this module but never touches MLflow before it forks.
The names of the tracking contract are duplicated here on purpose: `analytics` does not import `intent`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.conf import settings

logger = logging.getLogger(__name__)

# --- The tracking contract (same names as intent/tracking.py) ------------------------------------
# Metrics
CONFIDENCE_SCORE = "confidence_score"
RESPONSE_TIME_MS = "response_time_ms"
TEMPLATE_MATCH_RATE = "template_match_rate"
AVAILABLE_WORKFLOW_TEMPLATES = "available_workflow_templates"
AVAILABLE_AGENT_TEMPLATES = "available_agent_templates"
PROMPT_TOKENS = "prompt_tokens"
COMPLETION_TOKENS = "completion_tokens"
COST_USD = "cost_usd"
# Tags
USER_ROLE = "user_role"
CURRENT_MODULE = "current_module"
CURRENT_TAB = "current_tab"
DETECTED_INTENT = "detected_intent"
DSPY_VERSION = "dspy_version"
PROMPT_VERSION = "prompt_version"
REQUEST_ID = "request_id"
STATUS = "status"
FALLBACK_USED = "fallback_used"
ERROR_CATEGORY = "error_category"
ERROR_TYPE = "error_type"
# Feedback (contract B): written on a detection run after the fact
EXPECTED_INTENT = "expected_intent"  # tag
IS_CORRECT = "is_correct"  # metric, 1.0 / 0.0
# Params
MODEL_NAME = "model_name"
MESSAGE_LENGTH = "message_length"
MESSAGE_WORD_COUNT = "message_word_count"
REQUIRES_WORKFLOW = "requires_workflow"
CATEGORY_SOURCE = "category_source"
# Values
STATUS_ERROR = "error"
STATUS_SUCCESS = "success"
OUT_OF_SCOPE = "out_of_scope"
RUN_FINISHED = "FINISHED"
RUN_FAILED = "FAILED"
RUN_RUNNING = "RUNNING"
RUN_SCHEDULED = "SCHEDULED"
UNFINISHED_STATUSES = (RUN_RUNNING, RUN_SCHEDULED)
LIFECYCLE_ACTIVE = "active"
LIFECYCLE_DELETED = "deleted"

# The alembic revision of a store created or migrated by MLflow 3.17.2: the schema the SQL path reads.
MLFLOW_SCHEMA_REVISION = "dc11669786a5"
SQL_SCHEMES = ("sqlite:", "postgresql", "mysql")
# MLflow error codes that mean "try again later".
TRANSIENT_ERROR_CODES = frozenset({"TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR", "REQUEST_LIMIT_EXCEEDED",
                                   "DEADLINE_EXCEEDED", "ABORTED"})
IN_CHUNK = 10_000  # run ids per `IN (...)` (under SQLite's 250 k and Postgres' 65 k parameter limits)
RUN_COLUMNS = "run_uuid, experiment_id, status, lifecycle_stage, COALESCE(start_time, 0), end_time"
SCAN_PAGES = 10  # pages of run rows per scan of MLflow's runs table


class MlflowSourceUnavailable(Exception):
    """MLflow cannot be read right now (connection refused, database locked, 5xx): retry later."""


class MlflowSourceError(Exception):
    """MLflow answered, but not with what the mirror can use: retrying will not help."""


@dataclass(slots=True)
class SourceRun:
    """One MLflow run as the mirror sees it: times in ms since the epoch, latest metric values."""

    run_id: str
    experiment_id: str
    status: str
    lifecycle: str
    start_time: int
    end_time: int | None
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


class RunSource(Protocol):
    kind: str

    def experiment_id_get(self, name: str) -> str | None: ...

    def runs_count(self, *, experiment_id: str, since_ms: int | None) -> int | None: ...

    def runs_read(self, *, experiment_id: str, since_ms: int | None, page_size: int) -> Iterator[list[SourceRun]]: ...

    def runs_get(self, *, experiment_id: str, run_ids: Iterable[str]) -> list[SourceRun]: ...

    def run_ids_list(self, *, experiment_id: str) -> dict[str, str]: ...


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- The client path --------------------------------------------------------------------------------

_clients: dict[tuple[int, str], Any] = {}
_engines: dict[tuple[int, str], Any] = {}
_lock = threading.Lock()


def _client(uri: str):
    key = (os.getpid(), uri)
    client = _clients.get(key)
    if client is None:
        from mlflow.tracking import MlflowClient

        with _lock:
            client = _clients.setdefault(key, MlflowClient(tracking_uri=uri))
    return client


def _mlflow_errors_translated(exc: Exception) -> Exception:
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        if exc.error_code in TRANSIENT_ERROR_CODES:
            return MlflowSourceUnavailable(str(exc))
        return MlflowSourceError(str(exc))
    if _is_transient_sql_error(exc) or isinstance(exc, OSError):
        return MlflowSourceUnavailable(f"{type(exc).__name__}: {exc}")
    return exc


def _is_transient_sql_error(exc: Exception) -> bool:
    from sqlalchemy.exc import DBAPIError, OperationalError

    return isinstance(exc, OperationalError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated)


class ClientRunSource:
    """Reads through `MlflowClient`: works with every tracking URI; about 0.5 ms per run."""

    kind = "client"

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def _call(self, method: str, *args, **kwargs):
        try:
            return getattr(_client(self.uri), method)(*args, **kwargs)
        except Exception as exc:
            translated = _mlflow_errors_translated(exc)
            if translated is exc:
                raise
            raise translated from exc

    def experiment_id_get(self, name: str) -> str | None:
        experiment = self._call("get_experiment_by_name", name)
        return None if experiment is None else str(experiment.experiment_id)

    def runs_count(self, *, experiment_id: str, since_ms: int | None) -> int | None:
        return None  # MLflow's API has no count; progress bars go without a total

    def _search(self, experiment_id: str, filter_string: str, page_size: int) -> Iterator[list[Any]]:
        from mlflow.entities import ViewType

        token = None
        while True:
            page = self._call(
                "search_runs", [experiment_id], filter_string=filter_string, run_view_type=ViewType.ALL,
                max_results=page_size, order_by=["attributes.start_time ASC"], page_token=token,
            )
            if page:
                yield list(page)
            token = page.token
            if not token:
                return

    def runs_read(self, *, experiment_id: str, since_ms: int | None, page_size: int) -> Iterator[list[SourceRun]]:
        filter_string = "" if since_ms is None else f"attributes.start_time >= {int(since_ms)}"
        for page in self._search(experiment_id, filter_string, min(page_size, 50_000)):
            yield [_source_run(run) for run in page]

    def runs_get(self, *, experiment_id: str, run_ids: Iterable[str]) -> list[SourceRun]:
        found: list[SourceRun] = []
        for chunk in _chunks(sorted(set(run_ids)), 100):
            quoted = ", ".join(f"'{run_id}'" for run_id in chunk if run_id.isalnum())
            if not quoted:
                continue
            for page in self._search(experiment_id, f"attributes.run_id IN ({quoted})", 1000):
                found.extend(_source_run(run) for run in page)
        return found

    def run_ids_list(self, *, experiment_id: str) -> dict[str, str]:
        # The API cannot list ids alone: this reads every run (the reconcile is periodic for that reason).
        return {run.info.run_id: run.info.lifecycle_stage
                for page in self._search(experiment_id, "", 50_000) for run in page}


def _source_run(run) -> SourceRun:
    info, data = run.info, run.data
    return SourceRun(
        run_id=info.run_id, experiment_id=str(info.experiment_id), status=info.status,
        lifecycle=info.lifecycle_stage, start_time=int(info.start_time or 0),
        end_time=None if info.end_time is None else int(info.end_time),
        tags=dict(data.tags), params=dict(data.params), metrics=dict(data.metrics),
    )


# --- The SQL fast path --------------------------------------------------------------------------------

def _engine(uri: str):
    key = (os.getpid(), uri)
    engine = _engines.get(key)
    if engine is None:
        import sqlalchemy

        kwargs: dict[str, Any] = {}
        if uri.startswith("sqlite:"):
            kwargs["connect_args"] = {"timeout": 20}
        created = sqlalchemy.create_engine(uri, pool_pre_ping=not uri.startswith("sqlite:"), **kwargs)
        if uri.startswith("sqlite:"):
            @sqlalchemy.event.listens_for(created, "connect")
            def _read_only(dbapi_connection, _record):  # the mirror never writes MLflow's store
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA query_only=1")
                cursor.execute("PRAGMA mmap_size=2147418112")  # page reads without a syscall each (2 GB, the cap)
                cursor.execute("PRAGMA cache_size=-65536")
                cursor.close()
        with _lock:
            engine = _engines.setdefault(key, created)
    return engine


def sql_schema_revision(uri: str) -> str | None:
    """The store's alembic revision, or None when it cannot be read."""
    import sqlalchemy

    try:
        with _engine(uri).connect() as conn:
            return conn.execute(sqlalchemy.text("SELECT version_num FROM alembic_version")).scalar()
    except Exception as exc:  # noqa: BLE001 - any failure means: do not use the SQL path
        logger.info("MLflow store %s cannot be read with SQL (%s): using the client path", _display(uri), exc)
        return None


class SqlRunSource:
    """Reads MLflow's tables directly: runs in keyset pages, their tags/params/latest metrics by id.

    Each page is its own short read (no transaction held across pages), so writers of a SQLite store
    are never blocked for long.
    """

    kind = "sql"

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def _rows(self, sql: str, *params: Any) -> list[tuple]:
        """Run one query through the driver itself (SQLAlchemy's row layer costs more than the query).
        `sql` uses `?` placeholders; `IN (??)` expands to one placeholder per item of a list param."""
        engine = _engine(self.uri)
        flat: list[Any] = []
        for param in params:
            if isinstance(param, list):
                sql = sql.replace("(??)", f"({', '.join('?' * len(param))})", 1)
                flat.extend(param)
            else:
                flat.append(param)
        if engine.dialect.paramstyle != "qmark":
            sql = sql.replace("?", "%s")
        connection = engine.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute(sql, flat)
            return cursor.fetchall()
        except engine.dialect.loaded_dbapi.OperationalError as exc:  # locked, unreachable, restarting
            raise MlflowSourceUnavailable(f"{type(exc).__name__}: {exc}") from exc
        finally:
            connection.close()  # back to the pool, rolled back

    def experiment_id_get(self, name: str) -> str | None:
        rows = self._rows("SELECT experiment_id FROM experiments WHERE name = ? AND workspace = 'default'", name)
        return str(rows[0][0]) if rows else None

    def runs_count(self, *, experiment_id: str, since_ms: int | None) -> int | None:
        since = -(2**62) if since_ms is None else int(since_ms)
        return self._rows("SELECT COUNT(*) FROM runs WHERE experiment_id = ? AND COALESCE(start_time, 0) >= ?",
                          int(experiment_id), since)[0][0]

    def runs_read(self, *, experiment_id: str, since_ms: int | None, page_size: int) -> Iterator[list[SourceRun]]:
        # Keyset pagination on (start_time, run_uuid): stable while runs arrive, unlike an offset. MLflow
        # has no index on start_time, so each query scans the runs table: it fetches the (narrow) run rows
        # of several pages at once, and their tags, params and metrics page by page.
        cursor = (-(2**62) if since_ms is None else int(since_ms), "")
        batch = page_size * SCAN_PAGES
        while True:
            rows = self._rows(
                f"SELECT {RUN_COLUMNS} FROM runs WHERE experiment_id = ? AND (COALESCE(start_time, 0) > ? "
                "OR (COALESCE(start_time, 0) = ? AND run_uuid > ?)) ORDER BY COALESCE(start_time, 0), run_uuid LIMIT ?",
                int(experiment_id), cursor[0], cursor[0], cursor[1], batch,
            )
            for start in range(0, len(rows), page_size):
                yield self._complete(rows[start : start + page_size])
            if len(rows) < batch:
                return
            cursor = (rows[-1][4], rows[-1][0])

    def runs_get(self, *, experiment_id: str, run_ids: Iterable[str]) -> list[SourceRun]:
        found: list[SourceRun] = []
        for chunk in _chunks(sorted(set(run_ids)), IN_CHUNK):
            rows = self._rows(f"SELECT {RUN_COLUMNS} FROM runs WHERE experiment_id = ? AND run_uuid IN (??)",
                              int(experiment_id), chunk)
            if rows:
                found.extend(self._complete(rows))
        return found

    def run_ids_list(self, *, experiment_id: str) -> dict[str, str]:
        return dict(self._rows("SELECT run_uuid, lifecycle_stage FROM runs WHERE experiment_id = ?",
                               int(experiment_id)))

    def _complete(self, rows: list[tuple]) -> list[SourceRun]:
        """Add tags, params and latest metrics. Tags and params come aggregated to one JSON object per
        run by the database: ~17 rows per run cost more in Python than the database spends finding them."""
        runs = {
            row[0]: SourceRun(run_id=row[0], experiment_id=str(row[1]), status=row[2], lifecycle=row[3],
                              start_time=int(row[4]), end_time=None if row[5] is None else int(row[5]))
            for row in rows
        }
        aggregate = "json_group_object" if self.uri.startswith("sqlite:") else "json_object_agg"
        for chunk in _chunks(list(runs), IN_CHUNK):
            for attribute in ("tags", "params"):
                for run_id, values in self._rows(
                    f'SELECT run_uuid, {aggregate}("key", value) FROM {attribute} WHERE run_uuid IN (??) '
                    "GROUP BY run_uuid", chunk,
                ):
                    setattr(runs[run_id], attribute, json.loads(values) if isinstance(values, str) else values)
            # Metrics come as rows: SQLite's JSON (and printf) cannot render every double exactly.
            for run_id, key, value, is_nan in self._rows(
                'SELECT run_uuid, "key", value, is_nan FROM latest_metrics WHERE run_uuid IN (??)', chunk
            ):
                runs[run_id].metrics[key] = float("nan") if is_nan else float(value)
        return list(runs.values())


# --- Choosing a source --------------------------------------------------------------------------------

def _display(uri: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.username or parts.password:
        netloc = parts.hostname or ""
        if parts.port:
            netloc = f"{netloc}:{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return uri


def run_source_get(*, uri: str | None = None, kind: str | None = None) -> RunSource:
    """The source for this tracking URI. `kind`: `auto` (SQL when the store's schema is the known one,
    else the client), `client` or `sql` (fails if the SQL path cannot be used)."""
    uri = uri or settings.MLFLOW_TRACKING_URI
    kind = kind or settings.ANALYTICS_SYNC_SOURCE
    if kind == "client":
        return ClientRunSource(uri)
    if kind not in {"auto", "sql"}:
        raise ValueError(f"ANALYTICS_SYNC_SOURCE must be auto, client or sql, not {kind!r}")
    if uri.startswith(SQL_SCHEMES):
        revision = sql_schema_revision(uri)
        if revision == MLFLOW_SCHEMA_REVISION:
            return SqlRunSource(uri)
        if revision is not None:
            logger.warning("MLflow store schema is %s, not %s (MLflow 3.17.2): reading through the client",
                           revision, MLFLOW_SCHEMA_REVISION)
    if kind == "sql":
        raise MlflowSourceError(f"The SQL fast path cannot read {_display(uri)}")
    return ClientRunSource(uri)


def sources_reset() -> None:
    """Forget this process's clients and engines (tests switch stores)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _clients.clear()


# --- Health: is MLflow there, and is the experiment? ----------------------------------------------------

def tracking_uri_display(uri: str | None = None) -> str:
    """The tracking URI with any user name, password or token removed."""
    return _display(uri or settings.MLFLOW_TRACKING_URI)


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

    response = http_request(get_default_host_creds(uri), "/api/2.0/mlflow/experiments/get-by-name", "GET",
                            params={"experiment_name": name}, max_retries=0, timeout=timeout_s)
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
    experiment = _client(uri).get_experiment_by_name(name)
    return None if experiment is None else experiment.lifecycle_stage


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
        error = _CREDENTIALS.sub("//", f"{type(exc).__name__}: {exc}".replace(uri, _display(uri)))
        return MlflowProbe(reachable=False, experiment_present=False, error=error[:500])
    return MlflowProbe(reachable=True, experiment_present=lifecycle == LIFECYCLE_ACTIVE)


# --- Experiment maintenance (recreate, restore, reset) -------------------------------------------------

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
    source = run_source_get(uri=uri)
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
