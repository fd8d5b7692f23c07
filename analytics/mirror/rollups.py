"""Daily rollups: recomputed wholesale, from the raw mirrored rows, for the days a sync touched.

Recomputing a whole day (delete its rows, insert the new ones, in one transaction) keeps the rollups
exactly equal to an aggregation of `MirroredRun`, whatever happened to the day's runs: added, updated,
deleted, moved. The database aggregates: one GROUP BY per dimension over the touched days.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import EmptyResultSet
from django.db import connection, transaction
from django.db.models import CharField, QuerySet
from django.db.models.functions import Cast
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from intentsite.contract import OUT_OF_SCOPE

from ..models import (
    COMPOUND_SEPARATOR,
    OTHER,
    PAIRS,
    TRIPLES,
    DailyRollup,
    MirroredRun,
    RollupTripleBuilt,
    compound_parts,
)
from .bulk import chunked, ids_per_query, rows_upsert
from .folds import folded_days_of, folds_apply, folds_followed, folds_ranked
from .sketch import ZERO_KEY, stored_sum
from .windows import windows_add, windows_replace

Dimension = DailyRollup.Dimension
# dimension -> the MirroredRun columns its value is made of (none: every run of the day; two: a compound value)
DIMENSION_COLUMNS: dict[str, tuple[str, ...]] = {
    Dimension.ALL: (),
    Dimension.INTENT: ("detected_intent",),
    Dimension.ROLE: ("user_role",),
    Dimension.MODULE: ("current_module",),
    Dimension.TAB: ("current_tab",),
    Dimension.MODEL: ("model_name",),
    Dimension.PROMPT_VERSION: ("prompt_version",),
    Dimension.ERROR_CATEGORY: ("error_category",),
    Dimension.ERROR_TYPE: ("error_category", "error_type"),
    Dimension.MODEL_ANSWER: ("model_name", "answered_by"),
    Dimension.EXPERIMENT: ("experiment",),
    Dimension.VARIANT: ("experiment", "variant"),
}
# The pairs (`PAIRS`): compounds of their two dimensions' columns.
DIMENSION_COLUMNS |= {pair: DIMENSION_COLUMNS[first] + DIMENSION_COLUMNS[second]
                      for pair, (first, second) in PAIRS.items()}
# The triples (`TRIPLES`), rolled up only where a saved widget needs them (`triples_kept`): their three dimensions'
# columns, every one a single column.
TRIPLE_COLUMNS: dict[str, tuple[str, ...]] = {
    triple: tuple(DIMENSION_COLUMNS[member][0] for member in members) for triple, members in TRIPLES.items()}
# The free-text context: its values beyond the day's ANALYTICS_ROLLUP_TOP_VALUES most frequent roll up as `other`,
# in the dimension's own rows and in its pairs' alike (the runs' values are folded before they are grouped).
FOLDED_DIMENSIONS = frozenset({Dimension.ROLE, Dimension.MODULE, Dimension.TAB})
FOLDED_COLUMNS = {DIMENSION_COLUMNS[dimension][0]: dimension for dimension in FOLDED_DIMENSIONS}

COUNTS = ("runs", "errors", "fallbacks", "out_of_scope", "template_matches", "confidence_count", "latency_count",
          "labelled", "correct")
SUMS = ("confidence_sum", "confidence_sumsq", "latency_sum_ms", "latency_sumsq_ms", "prompt_tokens",
        "completion_tokens", "cost_usd")


ROLLUP_FIELDS = ("experiment_id", "day", "dimension", "value", "folded", *COUNTS, *SUMS, "latency_min_ms",
                 "latency_max_ms", "latency_sketch", "first_start_time", "last_start_time", "computed_at")
INTEGER_SUMS = ("prompt_tokens", "completion_tokens")


_FLAGS = ("is_error", "fallback_used", "is_correct")
_NUMBERS = ("template_match_rate", "confidence_score", "response_time_ms", "latency_bucket", "prompt_tokens",
            "completion_tokens", "cost_usd")
_KEY_SPAN = 1 << 16  # sketch keys are 16-bit: (cell, key) packed into one integer


def _datetime(value: str) -> datetime:
    """A start time read as text (see `_cells`) as Django would return it: aware, in UTC."""
    value = parse_datetime(value)
    return timezone.make_aware(value, UTC) if settings.USE_TZ and timezone.is_naive(value) else value


def _values_of(frame, columns: tuple[str, ...], *, dimension: str = ""):
    """The dimension's value of every row: '' for ALL, the column, or the compound of two columns ('' when both
    are empty: a run without an error has no error type); a pair's: its first dimension's value, the separator,
    the second's value."""
    import pandas as pd

    if dimension in PAIRS:
        first = len(DIMENSION_COLUMNS[PAIRS[dimension][0]])
        return frame[columns[0]].fillna("").str.cat(_values_of(frame, columns[first:]), sep=COMPOUND_SEPARATOR)
    if dimension in TRIPLES:  # always three parts, as a pair always has two
        return frame[columns[0]].fillna("").str.cat([frame[column].fillna("") for column in columns[1:]],
                                                    sep=COMPOUND_SEPARATOR)
    if not columns:
        return pd.Series("", index=frame.index)
    if len(columns) == 1:
        return frame[columns[0]].fillna("")
    joined = frame[columns[0]].fillna("").str.cat([frame[c].fillna("") for c in columns[1:]], sep=COMPOUND_SEPARATOR)
    return joined.mask(joined == COMPOUND_SEPARATOR * (len(columns) - 1), "")


@dataclass
class _Runs:
    """The rows being aggregated, one entry per run: the sums' terms, the start time's rank, the latency's sketch
    bucket, and the day (as a code into `days`)."""

    frame: Any  # the columns as read (pandas)
    values: Any  # per run, every count and sum's term, its start rank and latency (pandas, float64)
    starts: Any  # the start times as text, sorted: a rank indexes them
    has_bucket: Any  # numpy: whether the run has a latency
    bucket: Any  # numpy: its sketch key, shifted to 0 .. 65535
    day_code: Any  # numpy
    days: list[date]


def _runs_read(rows: QuerySet) -> _Runs | None:
    """The rows' few columns read once, with the driver's values (no per-value conversion by the ORM)."""
    import numpy as np
    import pandas as pd

    dimension_columns = sorted({column for columns in DIMENSION_COLUMNS.values() for column in columns})
    names = ["day", "start_time", *dimension_columns, *_FLAGS, *_NUMBERS]
    # Day and start time as text: no date and datetime objects made per row. Either database writes a start
    # time in one fixed format, in UTC, so the text sorts as the time does.
    as_text = {"day": Cast("day", CharField()), "start_time": Cast("start_time", CharField())}
    try:
        sql, params = rows.annotate(**{f"{name}_text": text for name, text in as_text.items()}).values_list(
            *[f"{name}_text" if name in as_text else name for name in names]).order_by().query.sql_with_params()
    except EmptyResultSet:
        return None
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        frame = pd.DataFrame.from_records(cursor.fetchall(), columns=names, coerce_float=True)
    if frame.empty:
        return None
    number = {name: pd.to_numeric(frame[name], errors="coerce").astype("float64") for name in _NUMBERS}
    confidence, latency = number["confidence_score"], number["response_time_ms"]
    values = pd.DataFrame({
        "runs": 1,
        "errors": frame["is_error"].eq(True),  # SQLite gives 0/1, PostgreSQL booleans; null is not true
        "fallbacks": frame["fallback_used"].eq(True),
        "out_of_scope": frame["detected_intent"].eq(OUT_OF_SCOPE),
        "template_matches": number["template_match_rate"].gt(0),
        "confidence_count": confidence.notna(),
        "latency_count": latency.notna(),
        "labelled": frame["is_correct"].notna(),
        "correct": frame["is_correct"].eq(True),
        "confidence_sum": confidence,
        "confidence_sumsq": confidence * confidence,
        "latency_sum_ms": latency,
        "latency_sumsq_ms": latency * latency,
        "prompt_tokens": number["prompt_tokens"],
        "completion_tokens": number["completion_tokens"],
        "cost_usd": number["cost_usd"],
    }).astype("float64")
    start_rank, starts = pd.factorize(frame["start_time"], sort=True)  # first/last start: min/max of the rank
    values["start_rank"] = start_rank
    values["latency"] = latency
    buckets = number["latency_bucket"]
    day_code, days = pd.factorize(frame["day"])
    return _Runs(frame=frame, values=values, starts=starts, has_bucket=buckets.notna().to_numpy(),
                 bucket=buckets.fillna(0).to_numpy(dtype=np.int64) - ZERO_KEY, day_code=day_code,
                 days=[date.fromisoformat(day) for day in days])


def _dimension_cells(runs: _Runs, dimension: str, *, experiment_id: str, now: datetime | None,
                     folded_days: set[tuple[int, str]] = frozenset()) -> list[dict[str, Any]]:
    """The cells of one dimension: the runs grouped by (day, value). A cell is `folded` where its value (or a part of
    a pair's) is `other` of a dimension that folds that day (`folded_days`: (day code, dimension))."""
    import numpy as np
    import pandas as pd

    columns = DIMENSION_COLUMNS[dimension] if dimension in DIMENSION_COLUMNS else TRIPLE_COLUMNS[dimension]
    folding_dimensions = {folded_dimension for _, folded_dimension in folded_days}
    folding = [(position, FOLDED_COLUMNS[column]) for position, column in enumerate(columns)
               if FOLDED_COLUMNS.get(column) in folding_dimensions]
    value_code, value_names = pd.factorize(_values_of(runs.frame, columns, dimension=dimension))
    # One integer key per (day, value): grouping by it is much cheaper than by the two columns.
    key = runs.day_code.astype(np.int64) * len(value_names) + value_code
    # (As a Series: a bare array would first be looked up as a column label, its text made for the error: ~4 ms.)
    grouped = runs.values.groupby(pd.Series(key, index=runs.values.index), sort=True)
    totals = grouped[list(COUNTS + SUMS)].sum()
    first, last = grouped["start_rank"].min().to_numpy(), grouped["start_rank"].max().to_numpy()
    lowest, highest = grouped["latency"].min().to_numpy(), grouped["latency"].max().to_numpy()
    keys = totals.index.to_numpy()
    group = np.searchsorted(keys, key)
    # The sketches of every cell at once: (cell, bucket) pairs counted, in cell order, then key order.
    pairs, counts = np.unique(group[runs.has_bucket] * _KEY_SPAN + runs.bucket[runs.has_bucket], return_counts=True)
    bounds = np.searchsorted(pairs // _KEY_SPAN, np.arange(len(keys) + 1))
    sketch_keys, counts = (pairs % _KEY_SPAN + ZERO_KEY).tolist(), counts.tolist()
    cells = []
    for position, cell in enumerate(totals.itertuples(index=False)):
        named = cell._asdict()
        day_index, value_index = divmod(int(keys[position]), len(value_names))
        low, high = bounds[position], bounds[position + 1]
        value = value_names[value_index]
        parts = compound_parts(value, len(columns)) if folding else ()
        cells.append({
            "experiment_id": experiment_id, "day": runs.days[day_index], "dimension": str(dimension),
            "value": value, "folded": any(parts[at] == OTHER and (day_index, folded) in folded_days
                                          for at, folded in folding),
            **{name: int(named[name]) for name in COUNTS},
            **{name: int(named[name]) if name in INTEGER_SUMS else float(named[name]) for name in SUMS},
            "latency_min_ms": None if np.isnan(lowest[position]) else float(lowest[position]),
            "latency_max_ms": None if np.isnan(highest[position]) else float(highest[position]),
            "latency_sketch": [sketch_keys[low:high], counts[low:high]] if high > low else [],
            "first_start_time": _datetime(runs.starts[first[position]]),
            "last_start_time": _datetime(runs.starts[last[position]]),
            "computed_at": now,
        })
    return cells


def runs_aggregate(*, rows: QuerySet, dimensions: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """Per dimension, the cells of `rows` (any mirrored runs: a report's filtered period) per (day, value), exactly
    as the rollups aggregate them, every value (no fold): the reports' path where no rollup fits."""
    runs = _runs_read(rows)
    return {dimension: [] if runs is None else _dimension_cells(runs, dimension, experiment_id="", now=None)
            for dimension in dimensions}


def _cells(runs: _Runs | None, *, experiment_id: str, now: datetime, triples: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Rollup rows (dicts of `DailyRollup` fields) aggregating `rows` as whole days, every dimension from one read.

    The rows' few columns are read once and grouped by pandas: ~5x faster than a GROUP BY per dimension in
    SQLite (9 sorts of every row with ~20 aggregates each), and the same code on PostgreSQL. The free-text
    dimensions keep each day's ANALYTICS_ROLLUP_TOP_VALUES most frequent values; the rest roll up as `other`
    (`folded`; see `folds`). The tests hold the result equal to aggregates of the raw rows computed apart."""
    if runs is None:
        return []
    folds = folds_ranked(frame=runs.frame, day_code=runs.day_code, columns=FOLDED_COLUMNS,
                         top=settings.ANALYTICS_ROLLUP_TOP_VALUES)
    return _cells_folded(runs, folds=folds, folded_days=folded_days_of(folds, FOLDED_COLUMNS),
                         experiment_id=experiment_id, now=now, dimensions=[*DIMENSION_COLUMNS, *triples])


def _cells_folded(runs: _Runs, *, folds, folded_days: set[tuple[int, str]], experiment_id: str,
                  now: datetime, dimensions: Iterable[str]) -> list[dict[str, Any]]:
    """The cells of these dimensions, the folded values replaced by `other` first."""
    runs = replace(runs, frame=folds_apply(frame=runs.frame, day_code=runs.day_code, folds=folds))
    return [cell for dimension in dimensions for cell in _dimension_cells(
        runs, dimension, experiment_id=experiment_id, now=now, folded_days=folded_days)]


def _key(cell: dict[str, Any]) -> tuple:
    return cell["day"], cell["dimension"], cell["value"]


def _merged(cell: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Two rollup cells of the same key as one: counts and sums add, sketches add, extremes and times widen."""
    return cell | {
        **{name: cell[name] + other[name] for name in (*COUNTS, *SUMS)},
        "folded": cell["folded"] or other["folded"],
        "latency_min_ms": _extreme(min, cell["latency_min_ms"], other["latency_min_ms"]),
        "latency_max_ms": _extreme(max, cell["latency_max_ms"], other["latency_max_ms"]),
        "latency_sketch": stored_sum(cell["latency_sketch"], other["latency_sketch"]),
        "first_start_time": min(cell["first_start_time"], other["first_start_time"]),
        "last_start_time": max(cell["last_start_time"], other["last_start_time"]),
    }


def _extreme(pick, a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else pick(a, b)


def triples_kept(*, experiment_id: str) -> list[str]:
    """The triples whose rollups the experiment has (built by the sync for a saved widget): every recompute and
    addition keeps them up to date, as it does the dimensions and pairs."""
    return sorted(RollupTripleBuilt.objects.filter(experiment_id=experiment_id).values_list("dimension", flat=True))


def rollups_compute(*, experiment_id: str, days: Iterable[date]) -> list[dict[str, Any]]:
    """The rollup rows of these days, from their mirrored rows, as dicts of `DailyRollup` fields (not saved)."""
    days = sorted(set(days))
    if not days:
        return []
    return _cells(_runs_read(MirroredRun.objects.filter(experiment_id=experiment_id, day__in=days)),
                  experiment_id=experiment_id, now=timezone.now(), triples=triples_kept(experiment_id=experiment_id))


def rollups_refresh(*, experiment_id: str, days: Iterable[date]) -> int:
    """Replace the rollups of these days (daily, and the window rollups within their retention) with freshly
    computed ones, from one read of the days' rows, in one transaction; returns the daily rows written."""
    days = sorted(set(days))
    if not days:
        return 0
    runs = _runs_read(MirroredRun.objects.filter(experiment_id=experiment_id, day__in=days))
    with transaction.atomic():
        windows_replace(experiment_id=experiment_id, days=days, runs=runs)
        return rollups_replace(experiment_id=experiment_id, days=days,
                               cells=_cells(runs, experiment_id=experiment_id, now=timezone.now(),
                                            triples=triples_kept(experiment_id=experiment_id)))


def rollups_replace(*, experiment_id: str, days: Iterable[date], cells: list[dict[str, Any]]) -> int:
    """Replace the daily rollups of these days with `cells` (from `rollups_compute`), in one transaction."""
    with transaction.atomic():
        DailyRollup.objects.filter(experiment_id=experiment_id, day__in=sorted(set(days))).delete()
        rows_upsert(model=DailyRollup, rows=cells, fields=ROLLUP_FIELDS)
    return len(cells)


def rollups_add(*, experiment_id: str, days: Iterable[date], run_ids: Iterable[str]) -> int:
    """Add these runs, just mirrored into these days and all new (in no rollup yet), to the days' rollups.

    For a few new runs in a big day this is much cheaper than recomputing the day (the steady state of
    the sync: a minute of new runs, today's rollups): the new runs are found by id and aggregated alone.
    It is exact for counts, sketches, extremes and first/last times; sums get the new runs' sums added (float
    rounding aside, what a recompute gives). A value of a free-text dimension that the day has no row for goes
    to the day's `other` row once the day has ANALYTICS_ROLLUP_TOP_VALUES values or a fold already (a value is
    always wholly in its own row or wholly in `other`). Only for runs added, never updated or removed: those
    days are recomputed. Call it in the transaction that mirrored the runs. Returns the rollup rows written."""
    days = sorted(set(days))
    run_ids = list(run_ids)
    if not days or not run_ids:
        return 0
    now = timezone.now()
    # By id alone: with the experiment and days too, SQLite's planner would walk the days' index instead.
    runs = _runs_read(MirroredRun.objects.filter(run_id__in=run_ids))
    changed: dict[tuple, dict[str, Any]] = {}
    if runs is not None:
        of_days = DailyRollup.objects.filter(experiment_id=experiment_id, day__in=days)
        folding = {(day, dimension, value): folded for day, dimension, value, folded in of_days.filter(
            dimension__in=[Dimension.ALL, *FOLDED_DIMENSIONS]).values_list("day", "dimension", "value", "folded")}
        known = {day for day, _, _ in folding}
        codes = range(len(runs.days))
        top = settings.ANALYTICS_ROLLUP_TOP_VALUES
        # A day with no rows yet takes the new runs folded as a recompute would fold them; the others follow their
        # rows (see `folds`).
        folds = folds_ranked(frame=runs.frame, day_code=runs.day_code, columns=FOLDED_COLUMNS, top=top,
                             days=[code for code in codes if runs.days[code] not in known])
        followed, folded_days = folds_followed(
            frame=runs.frame, day_code=runs.day_code, columns=FOLDED_COLUMNS, days=runs.days, rows=folding, top=top,
            only=[code for code in codes if runs.days[code] in known])
        for column, decided in followed.items():
            folds[column] |= decided
        cells = _cells_folded(runs, folds=folds, folded_days=folded_days | folded_days_of(folds, FOLDED_COLUMNS),
                              experiment_id=experiment_id, now=now,
                              dimensions=[*DIMENSION_COLUMNS, *triples_kept(experiment_id=experiment_id)])
        # The rows these cells add to (a superset read, then matched by key): not every row of the days, which
        # with the pairs are thousands a day.
        values: dict[str, set[str]] = {}
        for cell in cells:
            values.setdefault(cell["dimension"], set()).add(cell["value"])
        existing = {_key(row): row for dimension, named in values.items()
                    for chunk in chunked(sorted(named), ids_per_query())
                    for row in of_days.filter(dimension=dimension, value__in=chunk).values(*ROLLUP_FIELDS)}
        for cell in cells:
            key = _key(cell)
            base = existing.get(key)
            changed[key] = (cell if base is None else _merged(base, cell)) | {"computed_at": now}
    with transaction.atomic():
        rows_upsert(model=DailyRollup, rows=list(changed.values()), fields=ROLLUP_FIELDS,
                    conflict=("experiment_id", "day", "dimension", "value"), update=ROLLUP_FIELDS[4:])
        windows_add(experiment_id=experiment_id, runs=runs)
    return len(changed)


def rollups_extend(*, experiment_id: str, days: Iterable[date], dimensions: Iterable[str]) -> int:
    """Give days whose rollups are done the rows of more dimensions (a triple a widget asked for), from the days' raw
    rows, folded as the days' own rows fold (`folds_followed`: a value with a row of its own keeps it, the others
    count under `other`), so that they agree with the dimensions and pairs already there. Rows of these dimensions
    already in the days are replaced. Returns the rows written."""
    days, dimensions = sorted(set(days)), list(dimensions)
    if not days or not dimensions:
        return 0
    runs = _runs_read(MirroredRun.objects.filter(experiment_id=experiment_id, day__in=days))
    cells: list[dict[str, Any]] = []
    if runs is not None:
        of_days = DailyRollup.objects.filter(experiment_id=experiment_id, day__in=days,
                                             dimension__in=[Dimension.ALL, *FOLDED_DIMENSIONS])
        rows = {(day, dimension, value): folded
                for day, dimension, value, folded in of_days.values_list("day", "dimension", "value", "folded")}
        folds, folded_days = folds_followed(
            frame=runs.frame, day_code=runs.day_code, columns=FOLDED_COLUMNS, days=runs.days, rows=rows,
            top=settings.ANALYTICS_ROLLUP_TOP_VALUES, only=range(len(runs.days)))
        cells = _cells_folded(runs, folds=folds, folded_days=folded_days, experiment_id=experiment_id,
                              now=timezone.now(), dimensions=dimensions)
    with transaction.atomic():
        DailyRollup.objects.filter(experiment_id=experiment_id, day__in=days, dimension__in=dimensions).delete()
        rows_upsert(model=DailyRollup, rows=cells, fields=ROLLUP_FIELDS)
    return len(cells)
