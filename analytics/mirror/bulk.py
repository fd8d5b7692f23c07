"""Bulk writes at the speed the mirror needs: `INSERT ... ON CONFLICT (...) DO UPDATE ... WHERE <a column
differs>` (SQLite ≥ 3.24 and PostgreSQL share the syntax): SQLite runs it with `executemany`; PostgreSQL
gets the rows by COPY into a temporary table and upserts them in one statement. The database compares
each incoming row with the stored one, so unchanged rows are neither rewritten nor counted.

`bulk_create(update_conflicts=True)` does the same in SQL, but on SQLite Django caps a statement at 999
parameters (22 rows of a 45-column mirrored run) and prepares every value through the field layers:
measured here at ~1,500 rows/s for `MirroredRun`, several times slower than this. Values are adapted
with the backend's own adapters (`connection.ops`, JSONField's `get_db_prep_save`), so what lands in the
table is what the ORM would have written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from django.conf import settings
from django.db import connection, models

from ..models.mirror import SketchField


def ids_per_query() -> int:
    """Values one `IN (...)` may hold: SQLite's bound parameters are few."""
    return 900 if connection.vendor == "sqlite" else 10_000


def chunked(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _adapter(field: models.Field) -> Callable[[Any], Any] | None:
    ops = connection.ops
    if isinstance(field, models.DateTimeField):
        if connection.vendor == "sqlite" and settings.USE_TZ and connection.timezone == UTC:
            return sqlite_utc_datetime
        return ops.adapt_datetimefield_value
    if isinstance(field, models.DateField):
        return ops.adapt_datefield_value
    if isinstance(field, SketchField):
        return field.get_prep_value
    if isinstance(field, models.JSONField):
        if connection.vendor == "sqlite":
            return lambda value: json_text(value, encoder=field.encoder)
        return lambda value: ops.adapt_json_value(value, field.encoder)
    return None  # str, int, float, bool and None go to the driver as they are


def json_text(value: Any, *, encoder: type[json.JSONEncoder] | None = None) -> str:
    """A JSON column's text on SQLite: sorted keys, so that equal dicts are equal text (the upsert's change
    test compares text), and compact, unescaped UTF-8: what SQLite's `json_group_object` writes for the
    same strings, so that rows built in SQL by the attached sync compare equal to rows built here."""
    return json.dumps(value, cls=encoder, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sqlite_utc_datetime(value: datetime) -> str:
    """What `ops.adapt_datetimefield_value` stores for an aware datetime on SQLite with a UTC connection
    ("2026-11-20 00:00:01.001000", naive UTC), without its time zone machinery (several times faster)."""
    if value.tzinfo is UTC:
        return value.isoformat(" ")[:-6]  # drop "+00:00"
    return str(value.astimezone(UTC).replace(tzinfo=None))


def rows_upsert(*, model: type[models.Model], rows: Sequence[dict[str, Any]], fields: Sequence[str],
                conflict: str | Sequence[str] | None = None, update: Sequence[str] = (),
                compare: Sequence[str] = ()) -> int:
    """Insert `rows` (dicts holding every name in `fields`) into `model`'s table; with `conflict` (the
    column(s) of a unique constraint), a row that exists already gets the `update` columns instead, and with `compare`, only if
    one of those columns differs (NULL-safe). Returns how many rows were inserted or updated."""
    if not rows:
        return 0
    meta = model._meta
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    columns = [meta.get_field(name) for name in fields]
    tail = _conflict_tail(meta, conflict=conflict, update=update, compare=compare)
    values_of = itemgetter(*fields)
    adapted = [(index, adapt) for index, adapt in enumerate(map(_adapter, columns)) if adapt is not None]
    params = []
    for row in rows:
        values = list(values_of(row))
        for index, adapt in adapted:
            if values[index] is not None:
                values[index] = adapt(values[index])
        params.append(values)
    if connection.vendor == "postgresql":
        return _postgres_copy_upsert(meta.db_table, [f.column for f in columns], params, sql_tail=tail)
    sql = (f"INSERT INTO {table} ({', '.join(quote(f.column) for f in columns)}) "
           f"VALUES ({', '.join(['%s'] * len(columns))}){tail}")
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)  # in-process SQLite: no round trip per row
        return cursor.rowcount


def _conflict_tail(meta, *, conflict: str | Sequence[str] | None, update: Sequence[str], compare: Sequence[str]) -> str:
    """` ON CONFLICT (...) DO UPDATE SET ... [WHERE <a compared column differs>]`, or '' without `conflict`."""
    if not conflict:
        return ""
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    column = {name: quote(meta.get_field(name).column) for name in (*update, *compare)}
    unique = [conflict] if isinstance(conflict, str) else list(conflict)
    tail = (f" ON CONFLICT ({', '.join(quote(meta.get_field(name).column) for name in unique)}) DO UPDATE SET "
            + ", ".join(f"{column[name]} = EXCLUDED.{column[name]}" for name in update))
    if compare:
        differs = "IS DISTINCT FROM" if connection.vendor == "postgresql" else "IS NOT"
        tail += " WHERE " + " OR ".join(f"{table}.{column[name]} {differs} EXCLUDED.{column[name]}"
                                        for name in compare)
    return tail


def rows_upsert_select(*, model: type[models.Model], fields: Sequence[str], expressions: dict[str, str],
                       from_where: str, with_sql: str = "", params: Sequence[Any] = (), conflict: str | Sequence[str],
                       update: Sequence[str] = (), compare: Sequence[str] = (),
                       returning: Sequence[str] = ()) -> list[tuple]:
    """`rows_upsert` for rows the database builds itself: `[with_sql] INSERT INTO <model> (fields) SELECT <the
    fields' expressions> <from_where> ON CONFLICT ...`, on SQLite (qmark `params`, in the caller's transaction).
    Returns the `returning` columns of every row inserted or updated (SQLite ≥ 3.35), as SQLite stores them."""
    meta = model._meta
    quote = connection.ops.quote_name
    names = ", ".join(quote(meta.get_field(name).column) for name in fields)
    sql = (f"{with_sql} INSERT INTO {quote(meta.db_table)} ({names}) SELECT {', '.join(expressions[name] for name in fields)} "
           f"{from_where}{_conflict_tail(meta, conflict=conflict, update=update, compare=compare)}")
    if returning:  # `+column`: the value as stored (a date as text), not run through the driver's converters
        sql += " RETURNING " + ", ".join("+" + quote(meta.get_field(name).column) for name in returning)
    connection.ensure_connection()
    cursor = connection.connection.cursor()  # the driver's own: the SQL is SQLite's, placeholders included
    try:
        return cursor.execute(sql, list(params)).fetchall()
    finally:
        cursor.close()


def _postgres_copy_upsert(table: str, columns: list[str], params: list[list[Any]], *, sql_tail: str) -> int:
    """COPY the rows into a temporary table, then one INSERT ... SELECT: set-based on the server, ~10x
    faster than a statement per row. Runs on Django's connection, so in the caller's transaction."""
    import psycopg

    quote = connection.ops.quote_name
    names = ", ".join(quote(column) for column in columns)
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        if not sql_tail:
            with cursor.copy(f"COPY {quote(table)} ({names}) FROM STDIN") as copy:
                for values in params:
                    copy.write_row(values)
            return len(params)
        incoming = quote(f"{table}_incoming")
        cursor.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS {incoming} ON COMMIT DROP AS "
                       f"SELECT {names} FROM {quote(table)} WITH NO DATA")
        cursor.execute(f"DELETE FROM {incoming}")
        with cursor.copy(f"COPY {incoming} ({names}) FROM STDIN") as copy:
            for values in params:
                copy.write_row(values)
        cursor.execute(f"INSERT INTO {quote(table)} ({names}) SELECT {names} FROM {incoming}{sql_tail}")
        return cursor.rowcount
