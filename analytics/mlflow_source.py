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
The names of the tracking contract come from `intentsite.contract`, as the intent app's do.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.conf import settings

from intentsite.uris import uri_display, uri_secrets_scrub

logger = logging.getLogger(__name__)

# Names and values of the tracking contract used here (`intentsite.contract` defines them all, once)
from intentsite.contract import (  # noqa: E402
    LIFECYCLE_ACTIVE,
    RUN_FAILED,
    STATUS_ERROR,
    STATUS_SUCCESS,
)

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

    def runs_read(self, *, experiment_id: str, since_ms: int | None, page_size: int,
                  position: dict[str, Any] | None = None, overlap_ms: int = 0) -> Iterator[list[SourceRun]]: ...

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

    position: dict[str, Any] | None = None  # the client path has no position in the store: it reads by time

    def runs_read(self, *, experiment_id: str, since_ms: int | None, page_size: int,
                  position: dict[str, Any] | None = None, overlap_ms: int = 0) -> Iterator[list[SourceRun]]:
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
        logger.info("MLflow store %s cannot be read with SQL (%s): using the client path", uri_display(uri), exc)
        return None


class SqlRunSource:
    """Reads MLflow's tables directly: runs in keyset pages, their tags/params/latest metrics by id.

    Each page is its own short read (no transaction held across pages), so writers of a SQLite store
    are never blocked for long.
    """

    kind = "sql"

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.position: dict[str, Any] | None = None  # after `runs_read`: where the next read may start

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

    def runs_read(self, *, experiment_id: str, since_ms: int | None, page_size: int,
                  position: dict[str, Any] | None = None, overlap_ms: int = 0) -> Iterator[list[SourceRun]]:
        """Pages of the runs that started at `since_ms` or later (all runs if None), in start-time order.

        Keyset pagination on (start_time, run_uuid): stable while runs arrive, unlike an offset. MLflow has no
        index on start_time, so a query scans the whole runs table; it fetches the (narrow) run rows of several
        pages at once, and their tags, params and metrics page by page.

        On a SQLite store, `position` (what `self.position` held after the previous read of this experiment)
        narrows the scan to the table's tail: SQLite numbers new rows after the highest rowid, so every run
        of the window (start time at `since_ms` or later) is either one the previous read saw, at a rowid it
        noted, or a run inserted since, above the highest rowid it noted. After the read, `self.position` holds
        the position for the next read, whose window starts `overlap_ms` before the newest start time seen (or
        at `since_ms`, whichever is later). A table whose highest rowid went down (a VACUUM after deletions
        renumbers rows) is scanned whole again. A run inserted under the rowid of a run that `mlflow gc`
        removed at that very moment would be missed here: the reconcile, which compares run ids, brings it."""
        floor = None
        sqlite = self.uri.startswith("sqlite:")
        top = self._rows("SELECT COALESCE(MAX(rowid), 0) FROM runs")[0][0] if sqlite else None
        here = {"store": uri_display(self.uri), "experiment_id": str(experiment_id)}
        if (sqlite and since_ms is not None and position and all(position.get(k) == v for k, v in here.items())
                and position.get("rowid_max", top + 1) <= top):
            floor = position.get("rowid_floor")
        columns = RUN_COLUMNS + (", rowid" if sqlite else "")
        tail = "" if floor is None else f" AND rowid >= {int(floor)}"
        cursor = (-(2**62) if since_ms is None else int(since_ms), "")
        batch = page_size  # a page first, so that its work can start; then several at a time
        window: deque[tuple[int, int]] = deque()  # (start time, rowid) of the runs the next window may hold
        newest = None
        while True:
            rows = self._rows(
                f"SELECT {columns} FROM runs WHERE experiment_id = ?{tail} AND (COALESCE(start_time, 0) > ? "
                "OR (COALESCE(start_time, 0) = ? AND run_uuid > ?)) ORDER BY COALESCE(start_time, 0), run_uuid LIMIT ?",
                int(experiment_id), cursor[0], cursor[0], cursor[1], batch,
            )
            if sqlite:
                for row in rows:
                    window.append((row[4], row[6]))
                    while window[0][0] < row[4] - overlap_ms:
                        window.popleft()
                if rows:
                    newest = rows[-1][4]
            for start in range(0, len(rows), page_size):
                yield self._page(rows[start : start + page_size])
            if len(rows) < batch:
                break
            cursor = (rows[-1][4], rows[-1][0])
            batch = page_size * SCAN_PAGES
        if sqlite:
            next_since = max(-(2**62) if since_ms is None else since_ms,
                             -(2**62) if newest is None else newest - overlap_ms)
            floor = min([rowid for start, rowid in window if start >= next_since] + [top + 1])
            self.position = here | {"rowid_floor": floor, "rowid_max": top}

    def runs_get(self, *, experiment_id: str, run_ids: Iterable[str]) -> list[SourceRun]:
        found: list[SourceRun] = []
        for chunk in _chunks(sorted(set(run_ids)), IN_CHUNK):
            rows = self._rows(f"SELECT {RUN_COLUMNS} FROM runs WHERE experiment_id = ? AND run_uuid IN (??)",
                              int(experiment_id), chunk)
            if rows:
                found.extend(self._page(rows))
        return found

    def run_ids_list(self, *, experiment_id: str) -> dict[str, str]:
        return dict(self._rows("SELECT run_uuid, lifecycle_stage FROM runs WHERE experiment_id = ?",
                               int(experiment_id)))

    def _page(self, rows: list[tuple]) -> list[SourceRun]:
        return self._complete(rows)

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


@dataclass(frozen=True)
class MirrorColumn:
    """How the mirror types one name of the tracking contract (`analytics.services.sync` holds the list):

    - `text`: a tag or param; '' when missing or longer than `max_length` (which then stays in the JSON);
    - `optional_text`: the same, NULL instead of '';
    - `boolean`: 'true' / 'True' -> 1, 'false' / 'False' -> 0, NULL otherwise (a value that is neither stays);
    - `integer`: a param of up to 10 ASCII digits, optionally signed, within a 32-bit integer;
    - `real`: a metric; NULL when NaN (which stays, as null);
    - `whole`: a metric holding an integer within 32 bits;
    - `feedback`: a metric 1.0 -> 1, 0.0 -> 0;
    - `status`: the tag `status`, read for `is_error`; 'error' and 'success' leave the JSON, others stay.
    """

    name: str
    kind: str
    max_length: int = 0


@dataclass(frozen=True)
class MirrorMapping:
    """The whole mapping from a run to its mirrored row, for SQL (`analytics.services.sync` defines it):
    the contract's tags, params and metrics with their kinds, `latency_key(column)`, the SQL of the latency
    sketch's bucket key, and `json_text(dict)`, which renders a JSON column exactly as the Python path does."""

    tags: tuple[MirrorColumn, ...]
    params: tuple[MirrorColumn, ...]
    metrics: tuple[MirrorColumn, ...]
    latency_metric: str
    latency_key: Callable[[str], str]
    json_text: Callable[[dict], str]


@dataclass(frozen=True)
class MirrorSelect:
    """The SELECT that builds mirrored rows inside the database: an SQL expression per mirror column, and the
    FROM ... WHERE clause (one row per active run left in the page)."""

    expressions: dict[str, str]
    from_where: str
    page_table: str  # the page's run ids (`run_uuid`), for the caller's own joins


INT32 = (-(2**31), 2**31 - 1)


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _fits(kind: str, max_length: int, value: str, is_nan: str = "is_nan") -> str:
    """SQL: does this value go into its typed column (else it stays in the JSON column)?"""
    if kind in {"text", "optional_text"}:
        return f"length({value}) <= {max_length}"
    if kind == "boolean":
        return f"{value} IN ('true', 'True', 'false', 'False')"
    if kind == "status":
        return f"{value} IN ('{STATUS_ERROR}', '{STATUS_SUCCESS}')"
    if kind == "integer":
        digits = f"substr({value}, 1 + ({value} GLOB '-*'))"
        return (f"({value} GLOB '[0-9]*' OR {value} GLOB '-[0-9]*') AND {digits} NOT GLOB '*[^0-9]*' "
                f"AND length({digits}) <= 10 AND CAST({value} AS INTEGER) BETWEEN {INT32[0]} AND {INT32[1]}")
    if kind == "real":
        return f"NOT {is_nan}"
    if kind == "whole":
        return (f"NOT {is_nan} AND {value} BETWEEN {INT32[0]} AND {INT32[1]} "
                f"AND {value} = CAST({value} AS INTEGER)")
    if kind == "feedback":
        return f"NOT {is_nan} AND {value} IN (0.0, 1.0)"
    raise ValueError(f"unknown mirror column kind {kind!r}")


def _typed(kind: str, max_length: int, value: str) -> str:
    """SQL: the typed column's value from the pivoted one (metrics arrive NULL when NaN)."""
    if kind == "text":
        return f"CASE WHEN {_fits(kind, max_length, value)} THEN {value} ELSE '' END"
    if kind == "optional_text":
        return f"CASE WHEN {_fits(kind, max_length, value)} THEN {value} END"
    if kind == "boolean":
        return f"CASE WHEN {value} IN ('true', 'True') THEN 1 WHEN {value} IN ('false', 'False') THEN 0 END"
    if kind == "integer":
        return f"CASE WHEN {_fits(kind, max_length, value)} THEN CAST({value} AS INTEGER) END"
    if kind == "real":
        return value
    if kind == "whole":
        return f"CASE WHEN {_fits(kind, max_length, value, is_nan='0')} THEN CAST({value} AS INTEGER) END"
    if kind == "feedback":
        return f"CASE {value} WHEN 1.0 THEN 1 WHEN 0.0 THEN 0 END"
    raise ValueError(f"no typed column for kind {kind!r}")


def _datetime_sql(ms: str) -> str:
    """SQL: ms since the epoch as Django stores an aware datetime on SQLite ('2026-11-20 00:00:01.001000',
    no fraction when it is zero)."""
    rest = f"(({ms}) % 1000 + 1000) % 1000"
    return (f"strftime('%Y-%m-%d %H:%M:%S', (({ms}) - {rest}) / 1000, 'unixepoch') "
            f"|| CASE WHEN {rest} THEN printf('.%03d000', {rest}) ELSE '' END")


class AttachedRunSource(SqlRunSource):
    """A SQLite store mirrored into a SQLite database: the store is ATTACHed, read-only, to the mirror's own
    connection, and each page of runs is turned into mirrored rows inside SQLite by one INSERT ... SELECT
    (`mirror_select`), with the mapping of `analytics.services.sync.mirror_row_build` written in SQL; tests
    hold the two equal. Python sees only run ids (`bench/sync.py`: 1.6x the SQL path's full sync).

    Metrics outside the contract are the exception: SQLite cannot print every double exactly, so they are
    read as rows and rendered to JSON by `json_text` in Python (runs rarely have any). A page's read holds a
    shared lock on the store until its transaction commits, as any reader does: a fraction of a second for
    an incremental sync, about a second for a full page of 10,000 runs; MLflow's writers wait that long.
    """

    kind = "attached"
    PAGE_TABLE = "temp.analytics_sync_page"
    VALUES_TABLE = "temp.analytics_sync_values"  # the page with the contract's tags and params in columns

    @property
    def path(self) -> str:
        return os.path.abspath(self.uri.split(":///", 1)[1])

    def _page(self, rows: list[tuple]) -> list[SourceRun]:
        # Only what the sync decides on (lifecycle, start time); the rows themselves are built in SQL.
        return [SourceRun(run_id=row[0], experiment_id=str(row[1]), status=row[2], lifecycle=row[3],
                          start_time=int(row[4]), end_time=None if row[5] is None else int(row[5])) for row in rows]

    def attach(self, cursor) -> str:
        """Attach the store to this connection (once; read-only), detaching stores attached before it when
        they are not in use. Returns the schema name it has there."""
        from urllib.parse import quote

        alias = "mlflow_" + hashlib.blake2b(self.path.encode(), digest_size=6).hexdigest()
        attached = [row[1] for row in cursor.execute("PRAGMA database_list").fetchall()]
        if alias not in attached:
            for other in attached:
                if other.startswith("mlflow_"):
                    try:
                        cursor.execute(f"DETACH DATABASE {other}")
                    except Exception:  # noqa: BLE001 - read in this transaction: it stays attached until later
                        pass
            if not os.path.exists(self.path):
                raise MlflowSourceUnavailable(f"the MLflow store {self.path!r} does not exist")
            cursor.execute(f"ATTACH DATABASE ? AS {alias}", (f"file:{quote(self.path)}?mode=ro",))
            # As for the SQL path's own connections: page reads without a syscall each, a bigger page cache.
            cursor.execute(f"PRAGMA {alias}.mmap_size=2147418112")
            cursor.execute(f"PRAGMA {alias}.cache_size=-65536")
        return alias

    def page_load(self, *, cursor, run_ids: list[str]) -> None:
        """Put the page's run ids in a temporary table, each with its tags and its params as one JSON object
        (keys sorted): what the digest and the rows are made of."""
        schema = self.attach(cursor)
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {self.PAGE_TABLE} (run_uuid TEXT PRIMARY KEY, tags TEXT, "
                       "params TEXT, metrics TEXT, digest TEXT)")
        cursor.execute(f"DELETE FROM {self.PAGE_TABLE}")
        # One statement for all the ids (not one per id: each would take the GIL back, which a busy thread holds).
        cursor.execute(f"INSERT INTO {self.PAGE_TABLE} (run_uuid) SELECT value FROM json_each(?)", (json.dumps(run_ids),))

        def sorted_object(table: str) -> str:
            return (f'(SELECT json_group_object("key", value) FROM (SELECT "key", value FROM {schema}.{table} AS x '
                    f'WHERE x.run_uuid = p.run_uuid ORDER BY "key"))')

        self._execute(cursor, f"UPDATE {self.PAGE_TABLE} AS p SET tags = {sorted_object('tags')}, "
                              f"params = {sorted_object('params')}")

    def page_digest(self, *, cursor, version: int) -> None:
        """Digest every run of the page from what the mirror reads of it (run columns, tags, params, latest
        metrics with their step and time), so that runs whose mirrored row carries the same digest can be
        left out (`page_drop_unchanged`): re-reading the overlap window then costs little more than the read."""
        schema = self.attach(cursor)

        def digest(*parts: Any) -> str:
            return hashlib.blake2b(repr((version, *parts)).encode(), digest_size=16).hexdigest()

        cursor.connection.create_function("analytics_run_digest", 4, digest, deterministic=True)
        self._execute(cursor, f"""UPDATE {self.PAGE_TABLE} AS p SET digest = analytics_run_digest(
            (SELECT r.experiment_id || '|' || r.status || '|' || r.lifecycle_stage || '|' || COALESCE(r.start_time, '')
                    || '|' || COALESCE(r.end_time, '') FROM {schema}.runs AS r WHERE r.run_uuid = p.run_uuid),
            p.tags, p.params,
            (SELECT group_concat(metric, ';') FROM (SELECT "key" || '=' || printf('%!.17g', value) || ',' || is_nan
                    || ',' || step || ',' || timestamp AS metric FROM {schema}.latest_metrics AS x
                    WHERE x.run_uuid = p.run_uuid ORDER BY "key")))""")

    def page_drop_unchanged(self, *, cursor, mirror_table: str) -> int:
        """Leave out of the page the runs whose mirrored row (in `mirror_table`) has the page's digest; returns
        how many."""
        cursor.execute(f"DELETE FROM {self.PAGE_TABLE} AS p WHERE digest = (SELECT m.source_digest FROM {mirror_table} "
                       "AS m WHERE m.run_id = p.run_uuid)")
        return cursor.rowcount

    def page_digests_save(self, *, cursor, mirror_table: str) -> None:
        """Give the mirrored rows of the page the page's digests (rows the upsert found equal kept theirs)."""
        digest = f"(SELECT p.digest FROM {self.PAGE_TABLE} AS p WHERE p.run_uuid = m.run_id)"
        # Driven by the page's ids (the unique run_id index), not by a scan of the mirror.
        cursor.execute(f"UPDATE {mirror_table} AS m SET source_digest = {digest} WHERE m.run_id IN (SELECT run_uuid "
                       f"FROM {self.PAGE_TABLE} WHERE digest IS NOT NULL) AND m.source_digest IS NOT {digest}")

    def _execute(self, cursor, sql: str, params: Iterable[Any] = ()) -> Any:
        try:
            return cursor.execute(sql, tuple(params))
        except self._errors() as exc:  # the store locked or gone
            raise MlflowSourceUnavailable(f"{type(exc).__name__}: {exc}") from exc

    def mirror_select(self, *, cursor, mapping: MirrorMapping) -> MirrorSelect:
        """The SELECT that builds the rows of the runs left in the page (after `page_load`)."""
        schema = self.attach(cursor)
        tags, params, metrics = list(mapping.tags), list(mapping.params), list(mapping.metrics)
        latency_metric, json_text = mapping.latency_metric, mapping.json_text
        page_ids = f"SELECT run_uuid FROM {self.PAGE_TABLE}"
        cases = " ".join(f"WHEN {_quoted(c.name)} THEN {_fits(c.kind, c.max_length, 'value')}" for c in metrics)
        # A copy of the page with, in columns, each contract tag and param picked out of its run's object once (the
        # row's expressions read each several times: ~75 JSON lookups a run otherwise), the contract's metrics
        # pivoted (as numbers: JSON would round them) and whether the run has any other metric.
        picks = [(source, column) for source, columns in (("tags", tags), ("params", params)) for column in columns]
        picked = ", ".join(f"json_extract(p.{source}, '$.\"{column.name}\"') AS \"{source}:{column.name}\""
                           for source, column in picks)
        pivot = "".join(f', MAX(CASE WHEN "key" = {_quoted(c.name)} AND NOT is_nan THEN value END) AS "metrics:{c.name}"'
                        for c in metrics)
        cursor.execute(f"DROP TABLE IF EXISTS {self.VALUES_TABLE}")
        self._execute(cursor, f"CREATE TABLE {self.VALUES_TABLE} AS SELECT p.*, {picked}, m.* FROM {self.PAGE_TABLE} AS p "
                              f"LEFT JOIN (SELECT run_uuid AS metrics_run{pivot}, MAX(NOT COALESCE(CASE \"key\" {cases} "
                              f"ELSE 0 END, 0)) AS metrics_other FROM {schema}.latest_metrics WHERE run_uuid IN ({page_ids}) "
                              "GROUP BY run_uuid) AS m ON m.metrics_run = p.run_uuid")
        # Metrics outside the contract (or not fitting their column): few, read as rows, JSON by Python.
        extra: dict[str, dict[str, float | None]] = {}
        for run_id, key, value, is_nan in self._execute(
                cursor, f'SELECT run_uuid, "key", value, is_nan FROM {schema}.latest_metrics WHERE run_uuid IN '
                        f'(SELECT run_uuid FROM {self.VALUES_TABLE} WHERE metrics_other) '
                        f'AND NOT COALESCE(CASE "key" {cases} ELSE 0 END, 0)').fetchall():
            number = float(value)
            extra.setdefault(run_id, {})[key] = None if is_nan or not math.isfinite(number) else number
        if extra:  # (the copy has no index: one for these updates)
            cursor.execute(f"CREATE INDEX {self.VALUES_TABLE}_run ON {self.VALUES_TABLE.split('.')[1]} (run_uuid)")
            cursor.executemany(f"UPDATE {self.VALUES_TABLE} SET metrics = ? WHERE run_uuid = ?",
                               [(json_text(values), run_id) for run_id, values in extra.items()])

        def pick(source: str, name: str) -> str:
            return f'p."{source}:{name}"'

        def rest(source: str, columns: list[MirrorColumn]) -> str:
            """The object without the names that went to their columns. (A path that cannot resolve, into a
            string value, removes nothing: the value that did not fit stays.)"""
            paths = ", ".join(
                f"CASE WHEN {_fits(c.kind, c.max_length, pick(source, c.name))} THEN '$.\"{c.name}\"' "
                f"ELSE '$.\"{c.name}\".kept' END" for c in columns)
            return f"json_remove(p.{source}, {paths})"

        # Tags and params: the contract's values typed from their columns, the rest of each object keeps its sorted
        # keys. Metrics: typed from their columns.
        expressions = {
            "run_id": "r.run_uuid", "experiment_id": "CAST(r.experiment_id AS TEXT)", "status": "r.status",
            "lifecycle": "r.lifecycle_stage", "start_time": _datetime_sql("COALESCE(r.start_time, 0)"),
            "end_time": f"CASE WHEN r.end_time IS NOT NULL THEN {_datetime_sql('r.end_time')} END",
            "day": "date((COALESCE(r.start_time, 0) - (COALESCE(r.start_time, 0) % 1000 + 1000) % 1000) / 1000, 'unixepoch')",
        }
        for source, columns in (("tags", tags), ("params", params)):
            for column in columns:
                if column.kind != "status":
                    expressions[column.name] = _typed(column.kind, column.max_length, pick(source, column.name))
        for column in metrics:
            expressions[column.name] = _typed(column.kind, column.max_length, pick("metrics", column.name))
        status = next(c.name for c in tags if c.kind == "status")
        expressions["is_error"] = f"({pick('tags', status)} IS '{STATUS_ERROR}' OR r.status IS '{RUN_FAILED}')"
        expressions["tags"] = rest("tags", tags)
        expressions["params"] = rest("params", params)
        expressions["metrics"] = "COALESCE(p.metrics, '{}')"
        expressions["source_digest"] = "COALESCE(p.digest, '')"
        expressions["latency_bucket"] = mapping.latency_key(pick("metrics", latency_metric))
        from_where = (f"FROM {self.VALUES_TABLE} AS p CROSS JOIN {schema}.runs AS r ON r.run_uuid = p.run_uuid "
                      f"WHERE r.lifecycle_stage = '{LIFECYCLE_ACTIVE}'")
        return MirrorSelect(expressions=expressions, from_where=from_where, page_table=self.PAGE_TABLE)

    @staticmethod
    def _errors() -> tuple[type[Exception], ...]:
        import sqlite3

        return (sqlite3.OperationalError,)


class PagesPrepared:
    """The pages of a long read (a full sync through `AttachedRunSource`), each with the name of a table that
    holds its mirrored rows, built ahead: worker threads read the next pages from the store and write their
    rows (`mirror_select`, without digests) into scratch databases while the caller upserts the page at hand
    from the table built for it. The work then runs on every core (SQLite lets go of the GIL while it works).

    Each worker has its own connection and scratch database (a temporary file, attached to the mirror's
    connection, where the caller reads one table while the worker builds the next) and drops its tables once
    the caller is past them. A page's read is one transaction of a worker's: a consistent read of the
    store, as on the caller's side. A context manager: leaving it stops the workers and removes the files."""

    def __init__(self, source: AttachedRunSource, pages: Iterable[list[SourceRun]], *, mapping: MirrorMapping,
                 columns: Iterable[str], workers: int = 2) -> None:
        self.source, self.pages, self.mapping, self.columns = source, pages, mapping, tuple(columns)
        self.worker_count = max(1, workers)
        self.folder = ""
        self.executor = None
        self.local = threading.local()
        self.connections: list[Any] = []  # each worker's sqlite3 connection (made in its thread)
        self.numbers = itertools.count()
        self.attached: set[str] = set()
        self.done_below = 0  # the caller is done with the pages numbered below this

    def __enter__(self) -> PagesPrepared:
        import tempfile
        from concurrent.futures import ThreadPoolExecutor

        self.folder = tempfile.mkdtemp(prefix="intentsite-sync-")
        self.executor = ThreadPoolExecutor(max_workers=self.worker_count, thread_name_prefix="mirror-pages")
        return self

    def __exit__(self, *exc_info: Any) -> None:
        from django.db import connection

        self.executor.shutdown(wait=True, cancel_futures=True)
        for alias in sorted(self.attached) if connection.connection is not None else ():
            try:
                connection.connection.execute(f"DETACH DATABASE {alias}")
            except Exception:  # noqa: BLE001 - still in use: it goes with the connection
                logger.warning("Mirror sync: scratch database %s stays attached until the connection closes", alias)
        self._remove()

    def _remove(self) -> None:
        """Close the workers' connections and remove the scratch databases."""
        import shutil

        for worker in self.connections:
            worker.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _pages(self) -> Iterator[list[SourceRun]]:
        """The pages, the first one cut in four: the caller waits for a quarter page's rows, not a page's."""
        pages = iter(self.pages)
        first = next(pages, None)
        if first is not None:
            size = -(-len(first) // 4)
            for start in range(0, len(first), size):
                yield first[start : start + size]
        yield from pages

    def __iter__(self) -> Iterator[tuple[list[SourceRun], str]]:
        pages = self._pages()
        pending: deque[tuple[int, list[SourceRun], Any]] = deque()
        submitted = 0

        def submit() -> None:
            nonlocal submitted
            page = next(pages, None)
            if page is not None:
                pending.append((submitted, page, self.executor.submit(self._build, submitted, page)))
                submitted += 1

        for _ in range(self.worker_count + 1):  # a page ahead per worker, and one waiting for the first free
            submit()
        while pending:
            number, page, future = pending.popleft()
            alias, path, table = future.result()
            self._attach(alias, path)
            self.done_below = number  # the pages before this one are written: their tables can go
            submit()
            yield page, f"{alias}.{table}"

    def _attach(self, alias: str, path: str) -> None:
        from urllib.parse import quote

        from django.db import connection

        if alias in self.attached:
            return
        connection.ensure_connection()
        attached = [row[1] for row in connection.connection.execute("PRAGMA database_list").fetchall()]
        if alias in attached:  # left by a sync that could not detach it
            connection.connection.execute(f"DETACH DATABASE {alias}")
        # Read-only: the mirror's transactions are IMMEDIATE (settings), which would take a write lock on every
        # database attached read-write, and the worker could not write its next page there.
        connection.connection.execute(f"ATTACH DATABASE ? AS {alias}", (f"file:{quote(path)}?mode=ro",))
        self.attached.add(alias)

    def _worker(self) -> Any:
        """This thread's connection to its scratch database."""
        import sqlite3
        from urllib.parse import quote

        if getattr(self.local, "connection", None) is None:
            index = next(self.numbers)  # atomic: two workers may start at once
            path = os.path.join(self.folder, f"pages-{index}.sqlite3")
            # WAL: the caller reads the worker's previous table while the worker writes the next (measured: 20 %
            # faster than no journal, where a table's commit waits for the caller's read of the one before).
            worker = sqlite3.connect(f"file:{quote(path)}", uri=True, isolation_level=None, check_same_thread=False,
                                     timeout=600)
            for pragma in ("journal_mode=WAL", "synchronous=OFF", "wal_autocheckpoint=10000", "temp_store=MEMORY",
                           "cache_size=-65536"):
                worker.execute(f"PRAGMA {pragma}")
            self.connections.append(worker)
            self.local.connection, self.local.alias, self.local.path = worker, f"analytics_sync_scratch_{index}", path
            self.local.tables = []
        return self.local.connection

    def _build(self, number: int, page: list[SourceRun]) -> tuple[str, str, str]:
        """In a worker: the page's mirrored rows, as the table `rows_<number>` of the worker's scratch database.
        Returns the database's alias and path, and the table's name."""
        worker = self._worker()
        cursor = worker.cursor()
        try:
            cursor.execute("BEGIN")
            for table in [table for table in self.local.tables if int(table.split("_")[1]) < self.done_below]:
                cursor.execute(f"DROP TABLE main.{table}")
                self.local.tables.remove(table)
            self.source.page_load(cursor=cursor, run_ids=[run.run_id for run in page if run.lifecycle == LIFECYCLE_ACTIVE])
            select = self.source.mirror_select(cursor=cursor, mapping=self.mapping)
            columns = ", ".join(f'{select.expressions[name]} AS "{name}"' for name in self.columns)
            self.source._execute(cursor, f"CREATE TABLE main.rows_{number} AS SELECT {columns} {select.from_where}")
            cursor.execute("COMMIT")
        except BaseException:
            if worker.in_transaction:
                worker.execute("ROLLBACK")
            raise
        finally:
            cursor.close()
        self.local.tables.append(f"rows_{number}")
        return self.local.alias, self.local.path, f"rows_{number}"


# --- Choosing a source --------------------------------------------------------------------------------

def _attachable(uri: str) -> bool:
    """A SQLite store file, mirrored into a SQLite database by a caller outside any transaction: the store
    can be attached to the mirror's connection. (Inside a transaction that has read it already, SQLite would
    go on showing the store as it was then, and the sync would miss what arrived since.)"""
    from django.db import connection

    path = uri.split(":///", 1)[1] if uri.startswith("sqlite:///") else ""
    return (connection.vendor == "sqlite" and not connection.in_atomic_block and bool(path)
            and path != ":memory:" and "?" not in path)


def run_source_get(*, uri: str | None = None, kind: str | None = None) -> RunSource:
    """The source for this tracking URI. `kind`: `auto` (the store's tables when its schema is the known one:
    attached to the mirror's SQLite database when both are SQLite files, else read with SQL; otherwise the
    client), `client`, `sql` or `attached` (these two fail when they cannot be used)."""
    uri = uri or settings.MLFLOW_TRACKING_URI
    kind = kind or settings.ANALYTICS_SYNC_SOURCE
    if kind == "client":
        return ClientRunSource(uri)
    if kind not in {"auto", "sql", "attached"}:
        raise ValueError(f"ANALYTICS_SYNC_SOURCE must be auto, client, sql or attached, not {kind!r}")
    if uri.startswith(SQL_SCHEMES):
        revision = sql_schema_revision(uri)
        if revision == MLFLOW_SCHEMA_REVISION:
            if kind in {"auto", "attached"} and _attachable(uri):
                return AttachedRunSource(uri)
            if kind != "attached":
                return SqlRunSource(uri)
        elif revision is not None:
            logger.warning("MLflow store schema is %s, not %s (MLflow 3.17.2): reading through the client",
                           revision, MLFLOW_SCHEMA_REVISION)
    if kind == "attached":
        raise MlflowSourceError(f"The attached path cannot read {uri_display(uri)}: it needs a SQLite store file of "
                                "MLflow 3.17.2's schema, a SQLite mirror, and a sync started outside a transaction")
    if kind == "sql":
        raise MlflowSourceError(f"The SQL fast path cannot read {uri_display(uri)}")
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
        error = _CREDENTIALS.sub("//", uri_secrets_scrub(f"{type(exc).__name__}: {exc}", uri))
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
