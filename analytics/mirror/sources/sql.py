"""The SQL path: MLflow's own tables (runs, tags, params, latest_metrics, experiments) read in bulk, for `sqlite:`,
`postgresql:` and `mysql:` stores. That schema is MLflow's private business: it is read only when the store's alembic
revision is the one MLflow 3.17.2 creates (`MLFLOW_SCHEMA_REVISION`); tests hold this path to the client's."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from intentsite.uris import uri_display

from .base import IN_CHUNK, MlflowSourceUnavailable, SourceRun, chunks

logger = logging.getLogger(__name__)

RUN_COLUMNS = "run_uuid, experiment_id, status, lifecycle_stage, COALESCE(start_time, 0), end_time"
SCAN_PAGES = 10  # pages of run rows per scan of MLflow's runs table
_engines: dict[tuple[int, str], Any] = {}
_lock = threading.Lock()


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
        for chunk in chunks(sorted(set(run_ids)), IN_CHUNK):
            rows = self._rows(f"SELECT {RUN_COLUMNS} FROM runs WHERE experiment_id = ? AND run_uuid IN (??)",
                              int(experiment_id), chunk)
            if rows:
                found.extend(self._page(rows))
        return found

    def run_ids_list(self, *, experiment_id: str, since_ms: int | None = None) -> dict[str, str]:
        if since_ms is None:
            return dict(self._rows("SELECT run_uuid, lifecycle_stage FROM runs WHERE experiment_id = ?",
                                   int(experiment_id)))
        return dict(self._rows("SELECT run_uuid, lifecycle_stage FROM runs WHERE experiment_id = ? "
                               "AND COALESCE(start_time, 0) >= ?", int(experiment_id), int(since_ms)))

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
        for chunk in chunks(list(runs), IN_CHUNK):
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


def engines_reset() -> None:
    """Dispose of this process's engines (tests switch stores)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
