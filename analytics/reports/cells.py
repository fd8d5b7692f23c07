"""The sums a report reads: `Cell` (rollup rows or raw runs sharing a key, with the rates and percentiles derived
from them) and `Cells` (every cell one report needs, in as few queries as the filters allow)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from django.db import connection

from ..mirror.rollups import COUNTS, FOLDED_DIMENSIONS, INTEGER_SUMS, SUMS, runs_aggregate
from ..mirror.sketch import LatencySketch
from ..mirror.triples import triples_usable
from ..models import COMPOUND_SEPARATOR, DailyRollup, pair_of, triple_of
from .plans import Plan, readers_of
from .scope import FILTERS, Scope
from .sql import Statement, sql_datetime, sql_rows_many

Dimension = DailyRollup.Dimension
Read = tuple[Statement, Callable[[list[tuple]], None]]  # a rollup read: its statement, and what takes its rows in

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
        mine, theirs = self.__dict__, other.__dict__  # (not getattr/setattr: twice as fast, a report adds ~100 cells)
        for name in SUMMED:
            mine[name] += theirs[name]
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


def _cell_of(cell: dict[str, Any]) -> Cell:
    """A report's cell from a cell of `runs_aggregate` (a rollup row's fields)."""
    return Cell(key=None, **{name: cell[name] for name in SUMMED}, first_start_time=cell["first_start_time"],
                last_start_time=cell["last_start_time"], latency_min_ms=cell["latency_min_ms"],
                latency_max_ms=cell["latency_max_ms"], sketch=LatencySketch.from_stored(cell["latency_sketch"]))


def _number(name: str, value: Any) -> int | float:
    """A sum as a Python number (PostgreSQL's SUM of a bigint is a numeric: a Decimal)."""
    return (float if name in FLOAT_SUMS else int)(value or 0)


COUNTED = ("runs", "errors", "fallbacks")
# The most values of a breakdown listed for a seek each (`Cells._pair_values`); more: one scan (SQLite binds at most
# 32,766 parameters; beyond a few thousand the scan costs less anyway).
PAIR_VALUES_LISTED = 2000
DETAIL_COLUMNS = ("dimension", "value", "day", *SUMMED, "first_start_time", "last_start_time", "latency_min_ms",
                  "latency_max_ms", "latency_sketch")


class Cells:
    """Everything one report reads, in as few queries as the filters allow.

    `detailed` dimensions come as (day, value) cells with every sum and the latency sketch: without
    filters, one query reads the rollup rows of all of them (days × values: a few hundred rows for 30
    days), summed here. `counted` dimensions need only runs, errors and fallbacks per value, `shares` (the
    distributions) runs alone: one grouped read of their rollup rows. A dimension the rollups cannot answer under
    the filters is aggregated from the raw rows instead, per (day, value) likewise (see the module's docstring)."""

    def __init__(self, scope: Scope, *, detailed: Iterable[str] = (), counted: Iterable[str] = (),
                 shares: Iterable[str] = (), totalled: Iterable[str] = (), sketches: bool | Iterable[str] = False
                 ) -> None:
        self.scope = scope
        self.cells: dict[str, list[tuple[date, str, Cell]]] = {}
        self._folding: dict[str, bool] = {}
        self._values: dict[str, tuple[str, ...]] = {}
        self._triples: dict[str, date | None] | None = None  # built triples (read once, if a plan needs one)
        self.counts: dict[str, dict[str, Cell]] = {}
        self._sums: dict[tuple[str, bool], dict[Any, Cell]] = {}
        detailed, counted, totalled, shares = list(detailed), list(counted), list(totalled), list(shares)
        # What no rollup can answer under the filters: the period's matching runs, read once for every such
        # dimension and aggregated as the rollups are (`runs_aggregate`).
        raw = [dimension for dimension in {*detailed, *counted, *shares, *totalled} if self._plan(dimension) is None]
        self._raw = runs_aggregate(rows=scope.raw_runs(), dimensions=raw) if raw else {}
        # The rollup reads, sent at once (`sql_rows_many`), then each one's rows taken in.
        reads = [read for read in (
            self._detailed_read(detailed), self._counted_read([*counted, *shares], shares=set(shares) - set(counted)),
            self._totalled_read(totalled, sketches=set(totalled) if sketches is True else set(sketches or ())),
        ) if read is not None]
        for (_, take), rows in zip(reads, sql_rows_many([statement for statement, _ in reads]), strict=True):
            take(rows)

    def _plan(self, dimension: str) -> Plan | None:
        """Which rollup rows answer this dimension under the filters, or None: the raw rows.

        No filter: the dimension's own rows. One filter: its dimension's rows for the total (or a breakdown by
        that same dimension), else the pair of the filter's and the breakdown's dimensions (`module+intent`).
        Two filters: the pair of theirs, for the total or a breakdown by one of the two; a breakdown by a third
        dimension: their triple, where one was built (`_triple_plan`). Not from the rollups: a filter on a value
        some day of the period folded into `other`, a filter without a dimension (variant), three filters, or two
        filters and a third dimension without a built triple."""
        filters = [(FILTERS[name][0], value) for name, value in sorted(self.scope.filters.items())]
        if not filters:
            return Plan(dimension)
        if len(filters) > 2 or any(filter_dimension is None or self._folds(filter_dimension)
                                   for filter_dimension, _ in filters):
            return None
        if len(filters) == 1:
            ((filter_dimension, value),) = filters
            if dimension in (Dimension.ALL, filter_dimension):
                return Plan(filter_dimension, ((None, value),), "" if dimension == Dimension.ALL else None)
            pair = pair_of(filter_dimension, dimension)
            if pair is None:
                return None
            name, at = pair
            return Plan(name, ((at, value),), 1 - at, values=self._pair_values(((at, value),), 1 - at, dimension))
        (first, first_value), (second, second_value) = filters
        if dimension not in (Dimension.ALL, first, second):
            return self._triple_plan(((first, first_value), (second, second_value)), dimension)
        pair = pair_of(first, second)
        if pair is None:
            return None
        name, at = pair
        match = ((at, first_value), (1 - at, second_value))
        return Plan(name, match, "" if dimension == Dimension.ALL else at if dimension == first else 1 - at)

    def _triple_plan(self, filters: tuple[tuple[str, str], ...], dimension: str) -> Plan | None:
        """Two filters and a breakdown by a third dimension: their triple's rows, where the sync built that triple
        (a saved widget asked for it: `analytics.mirror.triples`) for the whole period."""
        triple = triple_of(*(filter_dimension for filter_dimension, _ in filters), dimension)
        if triple is None:
            return None
        name, positions = triple
        if self._triples is None:
            self._triples = triples_usable(experiment_id=self.scope.experiment_id)
        if name not in self._triples or (self._triples[name] or self.scope.since) > self.scope.since:
            return None
        match = tuple((at, value) for at, (_, value) in zip(positions, filters, strict=False))
        return Plan(name, match, positions[-1], values=self._pair_values(match, positions[-1], dimension, parts=3),
                    parts=3)

    def _pair_values(self, match: tuple[tuple[int, str], ...], at: int, other: str, *, parts: int = 2
                     ) -> tuple[str, ...]:
        """Every value a pair's (triple's) row can have when its parts are `match`: those parts joined with each
        value the `other` dimension (part `at`) has in the period (its own rows: the pair's are grouped from the same
        folded runs). Read as a list, the pair's rows are seeks in `dailyrollup_value`, not a scan of every row of
        the pair that compares a part: ~3x less time for `module=banking` by intent (bench/analytics.py). () where
        the list would be long (a free-text dimension over a long period): the scan then."""
        if other not in self._values:
            found = sorted(row[0] for row in self._dimension_rows("DISTINCT value", other, "LIMIT %s",
                                                                  [PAIR_VALUES_LISTED + 1]))
            self._values[other] = tuple(found) if len(found) <= PAIR_VALUES_LISTED else ()
        known = dict(match)
        return tuple(COMPOUND_SEPARATOR.join(part if position == at else known[position] for position in range(parts))
                     for part in self._values[other])

    def _folds(self, dimension: str) -> bool:
        """Did any day of the period roll values of this dimension up as `other`?"""
        if dimension not in FOLDED_DIMENSIONS:
            return False
        if dimension not in self._folding:
            self._folding[dimension] = bool(self._dimension_rows("1", dimension, "AND folded LIMIT 1"))
        return self._folding[dimension]

    def _dimension_rows(self, select: str, dimension: str, tail: str, params: Iterable[Any] = ()) -> list[tuple]:
        """`SELECT <select>` over one dimension's rollup rows of the period, `tail` after the conditions."""
        scope = self.scope
        adapt = connection.ops.adapt_datefield_value
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {select} FROM {DailyRollup._meta.db_table} WHERE dimension = %s AND day >= %s "
                           f"AND day <= %s AND experiment_id = %s {tail}",
                           [dimension, adapt(scope.since), adapt(scope.until), scope.experiment_id, *params])
            return cursor.fetchall()

    def _conditions(self, plans: dict[str, Plan]) -> tuple[str, list[Any], dict[tuple[str, tuple], str]]:
        """The period's condition and parameters, and each plan's condition and parameters -> the rollup dimension whose
        rows it reads (plans reading the same rows: one condition)."""
        scope = self.scope
        adapt = connection.ops.adapt_datefield_value
        where: dict[tuple[str, tuple], str] = {}
        for plan in sorted(set(plans.values()), key=repr):
            condition, values = plan.where()
            where.setdefault((condition, tuple(values)), plan.dimension)
        head = f"FROM {DailyRollup._meta.db_table} WHERE experiment_id = %s AND day >= %s AND day <= %s AND "
        return head, [scope.experiment_id, adapt(scope.since), adapt(scope.until)], where

    def _rollups(self, plans: dict[str, Plan], select: str) -> Statement:
        """`SELECT <select> FROM` the period's rollups that the plans read. Plain SQL: the hot path of every
        report, where compiling ORM queries cost more than running them (measured). On PostgreSQL, where each plan
        reads rows of its own dimension, one SELECT per plan joined by UNION ALL: each an index scan of its own (an OR
        of dimensions is read through a bitmap of the table's rows instead, measured slower). Otherwise, and on
        SQLite (whose OR is the faster there: 3.8 ms against 4.5), one SELECT whose condition is their OR (a row two
        plans read comes once)."""
        head, period, where = self._conditions(plans)
        if connection.vendor == "postgresql" and len(set(where.values())) == len(where) > 1:
            sql = " UNION ALL ".join(f"SELECT {select} {head}{condition}" for condition, _ in where)
            params = [value for _, values in where for value in (*period, *values)]
        else:
            sql = f"SELECT {select} {head}({' OR '.join(condition for condition, _ in where)})"
            params = [*period, *(value for _, values in where for value in values)]
        return sql, params

    def _rollups_grouped(self, plans: dict[str, Plan], aggregates: Callable[[str | None], str]) -> Statement:
        """SELECT (dimension, value, *aggregates) of the rollup rows the plans read, grouped by dimension and value;
        `aggregates(dimension)`: the SQL aggregates of the rows of that rollup dimension (None: of several).

        Where each plan reads rows of its own dimension, one grouped SELECT per plan, joined by UNION ALL: each
        groups by value alone, its dimension written as a literal (the report's distributions: 1.4 ms on SQLite,
        against 2.5 for one GROUP BY dimension, value over their OR, which sorts every row by both), and sums only what
        its dimension's readers need (`aggregates`: one SUM less is ~10 % less). Otherwise one GROUP BY over their
        OR (a row two plans read is counted once)."""
        head, period, where = self._conditions(plans)
        if len(set(where.values())) == len(where):
            # Rollup dimension names (ours: `module+model_answer`, never a request's text), so written inline.
            assert all(name.replace("+", "").replace("_", "").isalpha() for name in where.values()), where
            sql = " UNION ALL ".join(f"SELECT '{dimension}', value, {aggregates(dimension)} {head}{condition} "
                                     "GROUP BY value" for (condition, _), dimension in where.items())
            params = [value for _, values in where for value in (*period, *values)]
        else:
            sql = (f"SELECT dimension, value, {aggregates(None)} {head}({' OR '.join(c for c, _ in where)}) "
                   "GROUP BY dimension, value")
            params = [*period, *(value for _, values in where for value in values)]
        return sql, params

    def _detailed_read(self, dimensions: list[str]) -> Read | None:
        plans = {d: plan for d in dimensions if (plan := self._plan(d)) is not None}
        for dimension in dimensions:
            self.cells[dimension] = []
        for dimension in set(dimensions) - set(plans):
            for cell in self._raw[dimension]:
                self.cells[dimension].append((cell["day"], cell["value"], _cell_of(cell)))
        if not plans:
            return None
        readers = readers_of(plans)

        def take(rows: list[tuple]) -> None:
            for row in rows:
                sketch = row[-1]
                cell = Cell(key=None, **{name: _number(name, value) for name, value in zip(SUMMED, row[3:-5],
                                                                                          strict=True)},
                            first_start_time=sql_datetime(row[-5]), last_start_time=sql_datetime(row[-4]),
                            latency_min_ms=row[-3], latency_max_ms=row[-2],
                            sketch=LatencySketch.from_stored(sketch))
                day = row[2] if isinstance(row[2], date) else date.fromisoformat(row[2])
                for dimension, plan in readers.get(row[0], ()):
                    if plan.reads(row[0], row[1]):
                        self.cells[dimension].append((day, plan.reported(row[1]), cell))

        return self._rollups(plans, ", ".join(DETAIL_COLUMNS)), take

    def _counted_read(self, dimensions: list[str], *, shares: set[str]) -> Read | None:
        """Per value over the whole period, runs, errors and fallbacks (`shares`: runs alone, the distributions)."""
        plans = {d: plan for d in dimensions if (plan := self._plan(d)) is not None}
        for dimension in dimensions:
            self.counts[dimension] = {}
        for dimension in set(dimensions) - set(plans):
            for cell in self._raw[dimension]:
                counted = self.counts[dimension].setdefault(cell["value"], Cell(key=cell["value"]))
                for name in COUNTED:
                    setattr(counted, name, getattr(counted, name) + cell[name])
        if not plans:
            return None
        readers = readers_of(plans)

        def aggregates(rollup_dimension: str | None) -> str:
            runs_alone = rollup_dimension is not None and all(asked in shares for asked, _ in readers[rollup_dimension])
            return "SUM(runs), 0, 0" if runs_alone else ", ".join(f"SUM({name})" for name in COUNTED)

        def take(rows: list[tuple]) -> None:
            for row in rows:
                for dimension, plan in readers.get(row[0], ()):
                    if plan.reads(row[0], row[1]):
                        key = plan.reported(row[1])
                        counted = self.counts[dimension].setdefault(key, Cell(key=key)).__dict__
                        for name, value in zip(COUNTED, row[2:], strict=True):
                            counted[name] += int(value)

        return self._rollups_grouped(plans, aggregates), take

    def _totalled_read(self, dimensions: list[str], *, sketches: set[str]) -> Read | None:
        """Per value over the whole period, every sum, summed by the database (a widget's breakdown: thousands of a
        pair's rows, not brought to Python one by one); for the `sketches` dimensions, the latency sketches too,
        concatenated by the database (only theirs), read here when a percentile is asked for."""
        plans = {d: plan for d in dimensions if (plan := self._plan(d)) is not None}
        for dimension in dimensions:
            self.counts[dimension] = {}
        sketched = sorted({plans[d].dimension for d in sketches if d in plans})
        for dimension in set(dimensions) - set(plans):
            for cell in self._raw[dimension]:
                self.counts[dimension].setdefault(cell["value"], Cell(key=cell["value"])).add(_cell_of(cell))
        if not plans:
            return None
        readers = readers_of(plans)
        sums = ", ".join(f"SUM({name})" for name in SUMMED)
        select = f"{sums}, MIN(first_start_time), MAX(last_start_time), MIN(latency_min_ms), MAX(latency_max_ms)"
        if sketched:
            # Rollup dimension names (ours: `module+model_answer`, never a request's text), so written inline.
            assert all(name.replace("+", "").replace("_", "").isalpha() for name in sketched), sketched
            which = ", ".join(f"'{name}'" for name in sketched)
            # Concatenated stored sketches are one stored list of buckets (SQLite's group_concat keeps a
            # blob's bytes, and says the result is text: cast back).
            joined = f"CASE WHEN dimension IN ({which}) THEN latency_sketch END"
            select += (f", string_agg({joined}, ''::bytea)" if connection.vendor == "postgresql"
                       else f", CAST(group_concat({joined}, '') AS BLOB)")

        def take(rows: list[tuple]) -> None:
            for row in rows:
                sketch = None
                if sketched:
                    *row, joined = row
                    sketch = LatencySketch.from_joined(joined)
                cell = Cell(key=None, **{name: _number(name, value) for name, value in zip(SUMMED, row[2:-4],
                                                                                          strict=True)},
                            first_start_time=sql_datetime(row[-4]), last_start_time=sql_datetime(row[-3]),
                            latency_min_ms=row[-2], latency_max_ms=row[-1], sketch=sketch)
                for dimension, plan in readers.get(row[0], ()):
                    if plan.reads(row[0], row[1]):
                        key = plan.reported(row[1])
                        self.counts[dimension].setdefault(key, Cell(key=key)).add(cell)

        return self._rollups_grouped(plans, lambda _: select), take

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
        """The dimension's cells summed per day or per value (once: a report reads the days several times)."""
        if (dimension, by_day) in self._sums:
            return self._sums[dimension, by_day]
        result = self._sums[dimension, by_day] = {}
        for day, value, cell in self.cells[dimension]:
            key = day if by_day else value
            if key not in result:
                result[key] = Cell(key=key)
            result[key].add(cell)
        return result

    def total(self) -> Cell:
        """All runs of the scope (from the `all` cells)."""
        return self._summed(Dimension.ALL, by_day=False).get("") or Cell(key="")


