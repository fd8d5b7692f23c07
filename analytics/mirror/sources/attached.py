"""The attached path: a SQLite store read inside the mirror's own SQLite connection (ATTACH), for the mirror's
SQL to build rows from without a round trip through Python. The reader knows MLflow's tables; the cursor and the
SQL that writes the mirror are the caller's."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from typing import Any

from .base import MlflowSourceUnavailable, SourceRun
from .sql import SqlRunSource


class AttachedRunSource(SqlRunSource):
    """A SQLite store mirrored into a SQLite database: the caller hands over a cursor of its own connection, the
    store is ATTACHed to it read-only, and each page of runs is loaded into temporary tables there, from which
    the caller's SQL (`analytics.mirror.mapping.attached_select`: the mapping of `mirror_row_build` written in
    SQL; tests hold the two equal) builds the mirrored rows. Python sees only run ids (`bench/sync.py`: 1.9x the
    SQL path's full sync).

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

        self.execute(cursor, f"UPDATE {self.PAGE_TABLE} AS p SET tags = {sorted_object('tags')}, "
                              f"params = {sorted_object('params')}")

    def page_digest(self, *, cursor, version: int) -> None:
        """Digest every run of the page from what the mirror reads of it (run columns, tags, params, latest
        metrics with their step and time), so that runs whose mirrored row carries the same digest can be
        left out (`page_drop_unchanged`): re-reading the overlap window then costs little more than the read."""
        schema = self.attach(cursor)

        def digest(*parts: Any) -> str:
            return hashlib.blake2b(repr((version, *parts)).encode(), digest_size=16).hexdigest()

        cursor.connection.create_function("analytics_run_digest", 4, digest, deterministic=True)
        self.execute(cursor, f"""UPDATE {self.PAGE_TABLE} AS p SET digest = analytics_run_digest(
            (SELECT r.experiment_id || '|' || r.status || '|' || r.lifecycle_stage || '|' || COALESCE(r.start_time, '')
                    || '|' || COALESCE(r.end_time, '') FROM {schema}.runs AS r WHERE r.run_uuid = p.run_uuid),
            p.tags, p.params,
            (SELECT group_concat(metric, ';') FROM (SELECT "key" || '=' || printf('%!.17g', value) || ',' || is_nan
                    || ',' || step || ',' || timestamp AS metric FROM {schema}.latest_metrics AS x
                    WHERE x.run_uuid = p.run_uuid ORDER BY "key")))""")

    def execute(self, cursor, sql: str, params: Iterable[Any] = ()) -> Any:
        try:
            return cursor.execute(sql, tuple(params))
        except self._errors() as exc:  # the store locked or gone
            raise MlflowSourceUnavailable(f"{type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _errors() -> tuple[type[Exception], ...]:
        import sqlite3

        return (sqlite3.OperationalError,)
