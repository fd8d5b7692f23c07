"""The mapping from an MLflow run to its mirrored row, defined once (from `intentsite.contract`) and rendered twice:
in Python (`mirror_row_build`, for the client and SQL readers) and in SQL (`attached_select`, for the attached
one, which builds rows inside SQLite). Tests hold the two to the same stored text, edge cases included.

A contract value goes to its typed column when it fits it (a text within its length, a boolean, a 32-bit integer,
a finite number); otherwise the column stays empty and the value stays, as it came, in the JSON column of its
kind (`tags`, `params`, `metrics`), with every name outside the contract: nothing MLflow holds is lost.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from intentsite import contract
from intentsite.contract import LIFECYCLE_ACTIVE, RUN_FAILED, STATUS_ERROR, STATUS_SUCCESS

from ..models import MirroredRun
from .bulk import json_text
from .sketch import sketch_key, sql_key
from .sources.attached import AttachedRunSource
from .sources.base import SourceRun

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The contract's fields the mirror types (each in the column of its name), and `status` (read for `is_error`).
TYPED = tuple(field for field in contract.FIELDS if field.column)
SQL_TAGS = tuple(field for field in contract.FIELDS if field.source == contract.TAG
                 and (field.column or field.kind == "status"))
SQL_PARAMS = tuple(field for field in TYPED if field.source == contract.PARAM)
SQL_METRICS = tuple(field for field in TYPED if field.source == contract.METRIC)

# What the sync writes and compares (feedback's `expected_intent` / `is_correct` included).
SYNCED_FIELDS = tuple(f.name for f in MirroredRun._meta.concrete_fields if f.name not in {"id", "mirrored_at"})
WRITTEN_FIELDS = (*SYNCED_FIELDS, "mirrored_at")
UPDATE_FIELDS = [name for name in WRITTEN_FIELDS if name != "run_id"]
COMPARED_FIELDS = [name for name in SYNCED_FIELDS if name != "run_id"]
# The attached path compares content only: the digests it computes are saved apart, so that a row differing by its
# digest alone is not rewritten nor counted as updated.
ATTACHED_COMPARED_FIELDS = [name for name in COMPARED_FIELDS if name != "source_digest"]

# Part of every source digest: bump it when the mapping changes, so that every row is compared (and rewritten)
# once by the next sync. 2: integers are ASCII digits within 32 bits; JSON columns are compact text (as SQLite
# writes them). 3: `answered_by`; latency_bucket is the key of the latency sketch (analytics.mirror.sketch).
MAPPING_VERSION = 3


# --- In Python -------------------------------------------------------------------------------------------------

INT32 = (-(2**31), 2**31 - 1)
INTEGER_TEXT = re.compile(r"-?[0-9]{1,10}")
BOOLEANS = {"true": True, "false": False, "True": True, "False": False}
FEEDBACK = {1.0: True, 0.0: False}


def _integer(value: str) -> int | None:
    """An integer param: up to 10 ASCII digits, optionally signed, within the column's 32 bits."""
    if INTEGER_TEXT.fullmatch(value) is None:
        return None
    number = int(value)
    return number if INT32[0] <= number <= INT32[1] else None


def _whole(value: float) -> int | None:
    """A metric holding an integer of the column's 32 bits (MLflow stores infinities as ±max float)."""
    return int(value) if math.isfinite(value) and INT32[0] <= value <= INT32[1] and value == int(value) else None


# kind -> (the column's value for a fitting value, or None when it does not fit; the column's value when missing)
_PYTHON: dict[str, Any] = {
    "text": (lambda field, value: value if len(value) <= field.max_length else None, ""),
    "optional_text": (lambda field, value: value if len(value) <= field.max_length else None, None),
    "boolean": (lambda field, value: BOOLEANS.get(value), None),
    "integer": (lambda field, value: _integer(value), None),
    "real": (lambda field, value: value if math.isfinite(value) else None, None),
    "whole": (lambda field, value: _whole(value), None),
    "feedback": (lambda field, value: FEEDBACK.get(value), None),
}


def source_digest(run: SourceRun) -> str:
    """Digest of everything `mirror_row_build` reads from a run. A mirrored row whose stored digest is the
    run's has nothing new: the sync skips it without building, sending or comparing it (re-reading the
    overlap window then costs little more than the read)."""
    canonical = repr((MAPPING_VERSION, run.experiment_id, run.status, run.lifecycle, run.start_time, run.end_time,
                      sorted(run.tags.items()), sorted(run.params.items()), sorted(run.metrics.items())))
    return hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()


def mirror_row_build(run: SourceRun, *, digest: str | None = None) -> dict[str, Any]:
    """The mirrored row of one MLflow run, as column values (every synced field). `digest`: the run's
    `source_digest`, if known already."""
    start = EPOCH + timedelta(milliseconds=run.start_time)
    values = {contract.TAG: dict(run.tags), contract.PARAM: dict(run.params), contract.METRIC: dict(run.metrics)}
    row: dict[str, Any] = {
        "source_digest": digest or source_digest(run),
        "run_id": run.run_id, "experiment_id": run.experiment_id, "status": run.status,
        "lifecycle": run.lifecycle, "start_time": start,
        "end_time": None if run.end_time is None else EPOCH + timedelta(milliseconds=run.end_time),
        "day": start.date(),
    }
    for field in TYPED:
        typed, missing = _PYTHON[field.kind]
        found = values[field.source]
        value = found.pop(field.name, None)
        row[field.name] = missing if value is None else typed(field, value)
        if row[field.name] is None and value is not None:  # does not fit: stays in the JSON column
            found[field.name] = value
            row[field.name] = missing
    tags = values[contract.TAG]
    status = tags.pop(contract.STATUS, None)
    row["is_error"] = status == STATUS_ERROR or run.status == RUN_FAILED
    if status not in (None, STATUS_ERROR, STATUS_SUCCESS):
        tags[contract.STATUS] = status
    row["tags"], row["params"] = tags, values[contract.PARAM]
    # JSON has no NaN: a NaN metric is mirrored as null.
    row["metrics"] = {key: value if math.isfinite(value) else None for key, value in values[contract.METRIC].items()}
    row["latency_bucket"] = sketch_key(row[contract.RESPONSE_TIME_MS])
    return row


# --- In SQL (SQLite) -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MirrorSelect:
    """The SELECT that builds mirrored rows inside the database: an SQL expression per mirror column, and the
    FROM ... WHERE clause (one row per active run left in the page)."""

    expressions: dict[str, str]
    from_where: str
    page_table: str  # the page's run ids (`run_uuid`), for the caller's own joins


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


def _values_table(*, source: AttachedRunSource, cursor, schema: str) -> None:
    """A copy of the page with, in columns, each contract tag and param picked out of its run's object once (the
    row's expressions read each several times: ~75 JSON lookups a run otherwise), the contract's metrics pivoted
    (as numbers: JSON would round them), and the JSON of any other metric."""
    metrics = SQL_METRICS
    page_ids = f"SELECT run_uuid FROM {source.PAGE_TABLE}"
    cases = " ".join(f"WHEN {_quoted(c.name)} THEN {_fits(c.kind, c.max_length, 'value')}" for c in metrics)
    picks = [(kind, column) for kind, columns in (("tags", SQL_TAGS), ("params", SQL_PARAMS)) for column in columns]
    picked = ", ".join(f"json_extract(p.{kind}, '$.\"{column.name}\"') AS \"{kind}:{column.name}\""
                       for kind, column in picks)
    pivot = "".join(f', MAX(CASE WHEN "key" = {_quoted(c.name)} AND NOT is_nan THEN value END) AS "metrics:{c.name}"'
                    for c in metrics)
    cursor.execute(f"DROP TABLE IF EXISTS {source.VALUES_TABLE}")
    source.execute(cursor, f"CREATE TABLE {source.VALUES_TABLE} AS SELECT p.*, {picked}, m.* FROM {source.PAGE_TABLE} AS p "
                          f"LEFT JOIN (SELECT run_uuid AS metrics_run{pivot}, MAX(NOT COALESCE(CASE \"key\" {cases} "
                          f"ELSE 0 END, 0)) AS metrics_other FROM {schema}.latest_metrics WHERE run_uuid IN ({page_ids}) "
                          "GROUP BY run_uuid) AS m ON m.metrics_run = p.run_uuid")
    # Metrics outside the contract (or not fitting their column): few, read as rows, JSON by Python.
    extra: dict[str, dict[str, float | None]] = {}
    for run_id, key, value, is_nan in source.execute(
            cursor, f'SELECT run_uuid, "key", value, is_nan FROM {schema}.latest_metrics WHERE run_uuid IN '
                    f'(SELECT run_uuid FROM {source.VALUES_TABLE} WHERE metrics_other) '
                    f'AND NOT COALESCE(CASE "key" {cases} ELSE 0 END, 0)').fetchall():
        number = float(value)
        extra.setdefault(run_id, {})[key] = None if is_nan or not math.isfinite(number) else number
    if extra:  # (the copy has no index: one for these updates)
        cursor.execute(f"CREATE INDEX {source.VALUES_TABLE}_run ON {source.VALUES_TABLE.split('.')[1]} (run_uuid)")
        cursor.executemany(f"UPDATE {source.VALUES_TABLE} SET metrics = ? WHERE run_uuid = ?",
                           [(json_text(values), run_id) for run_id, values in extra.items()])


def attached_select(*, source: AttachedRunSource, cursor) -> MirrorSelect:
    """The SELECT that builds, inside SQLite, the mirrored rows of the runs left in the attached source's page (after
    its `page_load`): `mirror_row_build` spelled in SQL."""
    schema = source.attach(cursor)
    tags, params, metrics = list(SQL_TAGS), list(SQL_PARAMS), list(SQL_METRICS)
    _values_table(source=source, cursor=cursor, schema=schema)

    def pick(kind: str, name: str) -> str:
        return f'p."{kind}:{name}"'

    def rest(kind: str, columns: list[contract.Field]) -> str:
        """The object without the names that went to their columns. (A path that cannot resolve, into a
        string value, removes nothing: the value that did not fit stays.)"""
        paths = ", ".join(
            f"CASE WHEN {_fits(c.kind, c.max_length, pick(kind, c.name))} THEN '$.\"{c.name}\"' "
            f"ELSE '$.\"{c.name}\".kept' END" for c in columns)
        return f"json_remove(p.{kind}, {paths})"

    # Tags and params: the contract's values typed from their columns, the rest of each object keeps its sorted
    # keys. Metrics: typed from their columns.
    expressions = {
        "run_id": "r.run_uuid", "experiment_id": "CAST(r.experiment_id AS TEXT)", "status": "r.status",
        "lifecycle": "r.lifecycle_stage", "start_time": _datetime_sql("COALESCE(r.start_time, 0)"),
        "end_time": f"CASE WHEN r.end_time IS NOT NULL THEN {_datetime_sql('r.end_time')} END",
        "day": "date((COALESCE(r.start_time, 0) - (COALESCE(r.start_time, 0) % 1000 + 1000) % 1000) / 1000, 'unixepoch')",
    }
    for kind, columns in (("tags", tags), ("params", params)):
        for column in columns:
            if column.kind != "status":
                expressions[column.name] = _typed(column.kind, column.max_length, pick(kind, column.name))
    for column in metrics:
        expressions[column.name] = _typed(column.kind, column.max_length, pick("metrics", column.name))
    status = next(c.name for c in tags if c.kind == "status")
    expressions["is_error"] = f"({pick('tags', status)} IS '{STATUS_ERROR}' OR r.status IS '{RUN_FAILED}')"
    expressions["tags"] = rest("tags", tags)
    expressions["params"] = rest("params", params)
    expressions["metrics"] = "COALESCE(p.metrics, '{}')"
    expressions["source_digest"] = "COALESCE(p.digest, '')"
    expressions["latency_bucket"] = sql_key(pick("metrics", contract.RESPONSE_TIME_MS))
    from_where = (f"FROM {source.VALUES_TABLE} AS p CROSS JOIN {schema}.runs AS r ON r.run_uuid = p.run_uuid "
                  f"WHERE r.lifecycle_stage = '{LIFECYCLE_ACTIVE}'")
    return MirrorSelect(expressions=expressions, from_where=from_where, page_table=source.PAGE_TABLE)
