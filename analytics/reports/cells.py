"""The sums a report reads: `Cell` (rollup rows or raw runs sharing a key, with the rates and percentiles derived
from them) and `Cells` (every cell one report needs, in as few queries as the filters allow)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from django.db import connection

from ..mirror.rollups import COUNTS, FOLDED_DIMENSIONS, INTEGER_SUMS, SUMS, runs_aggregate
from ..mirror.sketch import LatencySketch
from ..models import DailyRollup
from .scope import FILTERS, Scope

Dimension = DailyRollup.Dimension

# The rollups' counts and sums a report reads (it derives no variance: the sums of squares stay unread).
SUMMED = (*COUNTS, *(name for name in SUMS if "sumsq" not in name))
FLOAT_SUMS = frozenset(name for name in SUMS if name not in INTEGER_SUMS)


@dataclass
class Cell:
    """Sums of rollup rows (or raw runs) sharing a key: a dimension value, or a day."""

    key: Any
    runs: int = 0
    errors: int = 0
    fallbacks: int = 0
    out_of_scope: int = 0
    template_matches: int = 0
    confidence_count: int = 0
    latency_count: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    labelled: int = 0
    correct: int = 0
    confidence_sum: float = 0.0
    latency_sum_ms: float = 0.0
    cost_usd: float = 0.0
    first_start_time: datetime | None = None
    last_start_time: datetime | None = None
    latency_min_ms: float | None = None
    latency_max_ms: float | None = None
    sketch: LatencySketch | None = None

    def add(self, other: Cell) -> None:
        for name in SUMMED:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.first_start_time = _extreme(min, self.first_start_time, other.first_start_time)
        self.last_start_time = _extreme(max, self.last_start_time, other.last_start_time)
        self.latency_min_ms = _extreme(min, self.latency_min_ms, other.latency_min_ms)
        self.latency_max_ms = _extreme(max, self.latency_max_ms, other.latency_max_ms)
        if other.sketch is not None:
            if self.sketch is None:
                self.sketch = LatencySketch()
            self.sketch.add(other.sketch)

    def percentile(self, q: float) -> float | None:
        """Nearest-rank, within 1 % of exact and never outside the cell's observed [min, max]."""
        if self.sketch is None:
            return None  # (not rounded like the averages: a rounding of 0.0005 ms is more than 1 % of 0.04 ms)
        return self.sketch.quantile(q, low=self.latency_min_ms, high=self.latency_max_ms)

    @property
    def error_rate(self) -> float | None:
        return ratio(self.errors, self.runs)

    @property
    def success_rate(self) -> float | None:
        return ratio(self.runs - self.errors, self.runs)

    @property
    def avg_confidence(self) -> float | None:
        return ratio(self.confidence_sum, self.confidence_count)

    @property
    def avg_ms(self) -> float | None:
        return _ms(ratio(self.latency_sum_ms, self.latency_count))

    @property
    def accuracy(self) -> float | None:
        return ratio(self.correct, self.labelled)


def _extreme(pick, a, b):
    """min or max of two values that may be None (None: no value)."""
    return b if a is None else a if b is None else pick(a, b)


def ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _datetime(value: datetime | str | None) -> datetime | None:
    """A timestamp read with plain SQL: SQLite gives naive UTC (text, or a datetime with its converters)."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _cell_of(cell: dict[str, Any]) -> Cell:
    """A report's cell from a cell of `runs_aggregate` (a rollup row's fields)."""
    return Cell(key=None, **{name: cell[name] for name in SUMMED}, first_start_time=cell["first_start_time"],
                last_start_time=cell["last_start_time"], latency_min_ms=cell["latency_min_ms"],
                latency_max_ms=cell["latency_max_ms"], sketch=LatencySketch.from_stored(cell["latency_sketch"]))


def _number(name: str, value: Any) -> int | float:
    """A sum as a Python number (PostgreSQL's SUM of a bigint is a numeric: a Decimal)."""
    return (float if name in FLOAT_SUMS else int)(value or 0)


COUNTED = ("runs", "errors", "fallbacks")
DETAIL_COLUMNS = ("dimension", "value", "day", *SUMMED, "first_start_time", "last_start_time", "latency_min_ms",
                  "latency_max_ms", "latency_sketch")


class Cells:
    """Everything one report reads, in as few queries as the filters allow.

    `detailed` dimensions come as (day, value) cells with every sum and the latency sketch: without
    filters, one query reads the rollup rows of all of them (days × values: a few hundred rows for 30
    days), summed here. `counted` dimensions (distributions) need only runs, errors and fallbacks per value:
    one GROUP BY over their rollup rows. A dimension the rollups cannot answer under the filters is
    aggregated from the raw rows instead, per (day, value) likewise (see the module's docstring)."""

    def __init__(self, scope: Scope, *, detailed: Iterable[str] = (), counted: Iterable[str] = ()) -> None:
        self.scope = scope
        self.cells: dict[str, list[tuple[date, str, Cell]]] = {}
        self.counts: dict[str, dict[str, Cell]] = {}
        detailed, counted = list(detailed), list(counted)
        # What no rollup can answer under the filters: the period's matching runs, read once for every such
        # dimension and aggregated as the rollups are (`runs_aggregate`).
        raw = [dimension for dimension in {*detailed, *counted} if self._plan(dimension) is None]
        self._raw = runs_aggregate(rows=scope.raw_runs(), dimensions=raw) if raw else {}
        self._detailed_read(detailed)
        self._counted_read(counted)

    def _plan(self, dimension: str) -> tuple[str, str | None, str | None] | None:
        """(rollup dimension to read, its value to select, the value to report instead) or None: raw rows."""
        filters = self.scope.filters
        if not filters:
            return dimension, None, None
        if len(filters) == 1:
            ((name, value),) = filters.items()
            filter_dimension = FILTERS[name][0]
            if filter_dimension is None:
                return None
            if filter_dimension in FOLDED_DIMENSIONS and self._folds(filter_dimension):
                return None  # the value may be among those rolled up as `other`: the raw rows know
            if dimension == Dimension.ALL:
                return filter_dimension, value, ""
            if dimension == filter_dimension:
                return filter_dimension, value, None
        return None

    def _folds(self, dimension: str) -> bool:
        """Did any day of the period roll values of this dimension up as `other`?"""
        scope = self.scope
        adapt = connection.ops.adapt_datefield_value
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT 1 FROM {DailyRollup._meta.db_table} WHERE dimension = %s AND day >= %s AND "
                           "day <= %s AND experiment_id = %s AND folded LIMIT 1",
                           [dimension, adapt(scope.since), adapt(scope.until), scope.experiment_id])
            return cursor.fetchone() is not None

    def _rollups(self, plans: dict[str, tuple[str, str | None, str | None]], select: str,
                 group_by: str = "") -> list[tuple]:
        """Rows of `SELECT <select> FROM` the period's rollups of the planned dimensions. Plain SQL: the hot
        path of every report, where compiling ORM queries cost more than running them (measured)."""
        scope = self.scope
        dimensions = sorted({plan[0] for plan in plans.values()})
        values = sorted({plan[1] for plan in plans.values()} - {None})
        adapt = connection.ops.adapt_datefield_value
        sql = (f"SELECT {select} FROM {DailyRollup._meta.db_table} WHERE experiment_id = %s AND day >= %s "
               f"AND day <= %s AND dimension IN ({', '.join(['%s'] * len(dimensions))})")
        params: list[Any] = [scope.experiment_id, adapt(scope.since), adapt(scope.until), *dimensions]
        if values:
            sql += f" AND value IN ({', '.join(['%s'] * len(values))})"
            params += values
        with connection.cursor() as cursor:
            cursor.execute(sql + group_by, params)
            return cursor.fetchall()

    def _detailed_read(self, dimensions: list[str]) -> None:
        plans = {d: plan for d in dimensions if (plan := self._plan(d)) is not None}
        for dimension in dimensions:
            self.cells[dimension] = []
        if plans:
            for row in self._rollups(plans, ", ".join(DETAIL_COLUMNS)):
                sketch = row[-1]
                cell = Cell(key=None, **{name: _number(name, value) for name, value in zip(SUMMED, row[3:-5],
                                                                                          strict=True)},
                            first_start_time=_datetime(row[-5]), last_start_time=_datetime(row[-4]),
                            latency_min_ms=row[-3], latency_max_ms=row[-2],
                            sketch=LatencySketch.from_stored(sketch))
                day = row[2] if isinstance(row[2], date) else date.fromisoformat(row[2])
                for dimension, (rollup_dimension, _, relabel) in plans.items():
                    if rollup_dimension == row[0]:
                        self.cells[dimension].append((day, row[1] if relabel is None else relabel, cell))
        for dimension in set(dimensions) - set(plans):
            for cell in self._raw[dimension]:
                self.cells[dimension].append((cell["day"], cell["value"], _cell_of(cell)))

    def _counted_read(self, dimensions: list[str]) -> None:
        plans = {d: plan for d in dimensions if (plan := self._plan(d)) is not None}
        for dimension in dimensions:
            self.counts[dimension] = {}
        if plans:
            sums = ", ".join(f"SUM({name})" for name in COUNTED)
            for row in self._rollups(plans, f"dimension, value, {sums}", " GROUP BY dimension, value"):
                for dimension, (rollup_dimension, _, relabel) in plans.items():
                    if rollup_dimension == row[0]:
                        key = row[1] if relabel is None else relabel
                        self.counts[dimension][key] = Cell(
                            key=key, **{name: _number(name, value) for name, value in zip(COUNTED, row[2:],
                                                                                          strict=True)})
        for dimension in set(dimensions) - set(plans):
            for cell in self._raw[dimension]:
                counted = self.counts[dimension].setdefault(cell["value"], Cell(key=cell["value"]))
                for name in COUNTED:
                    setattr(counted, name, getattr(counted, name) + cell[name])

    def read_raw(self, dimension: str) -> bool:
        """Was this dimension aggregated from the raw rows (no rollup answers it under the filters)?"""
        return dimension in self._raw

    def by_value(self, dimension: str) -> dict[str, Cell]:
        if dimension in self.counts:
            return self.counts[dimension]
        return self._summed(dimension, by_day=False)

    def by_day(self, dimension: str = Dimension.ALL) -> dict[date, Cell]:
        return self._summed(dimension, by_day=True)

    def _summed(self, dimension: str, *, by_day: bool) -> dict[Any, Cell]:
        result: dict[Any, Cell] = {}
        for day, value, cell in self.cells[dimension]:
            key = day if by_day else value
            if key not in result:
                result[key] = Cell(key=key)
            result[key].add(cell)
        return result

    def total(self) -> Cell:
        """All runs of the scope (from the `all` cells)."""
        return self._summed(Dimension.ALL, by_day=False).get("") or Cell(key="")


