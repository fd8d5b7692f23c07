"""A widget's answer: one metric, broken down by one dimension (or by day, or not at all), over a period, under
filters, read as the reports read (`analytics.reports.cells.Cells`): from the daily rollups where they answer, from
the raw mirrored rows where no rollup fits (a breakdown under a filter, several filters). The answer says which.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from ..models import DailyRollup, compound_parts, triple_of
from ..reports.cells import Cell, Cells, ratio
from ..reports.scope import FILTERS, scope_get

Dimension = DailyRollup.Dimension

# metric -> how a cell gives it (None when the cell has no runs to say it)
METRICS: dict[str, Callable[[Cell], float | None]] = {
    "runs": lambda c: c.runs,
    "success_rate": lambda c: c.success_rate,
    "error_rate": lambda c: c.error_rate,
    "out_of_scope_rate": lambda c: ratio(c.out_of_scope, c.runs),
    "fallback_rate": lambda c: ratio(c.fallbacks, c.runs),
    "template_match_rate": lambda c: ratio(c.template_matches, c.runs),
    "avg_confidence": lambda c: c.avg_confidence,
    "latency_avg_ms": lambda c: c.avg_ms,
    "latency_p50_ms": lambda c: c.percentile(0.50),
    "latency_p95_ms": lambda c: c.percentile(0.95),
    "latency_p99_ms": lambda c: c.percentile(0.99),
    "accuracy": lambda c: c.accuracy,
    "labelled_runs": lambda c: c.labelled,
    "cost_usd": lambda c: round(c.cost_usd, 6),
    "tokens": lambda c: c.prompt_tokens + c.completion_tokens,
}
# breakdown -> the rollup dimension it reads ("" : none, one number; "day": per day)
BREAKDOWNS: dict[str, str] = {
    "": Dimension.ALL,
    "day": Dimension.ALL,
    "intent": Dimension.INTENT,
    "user_role": Dimension.ROLE,
    "module": Dimension.MODULE,
    "tab": Dimension.TAB,
    "model_name": Dimension.MODEL,
    "prompt_version": Dimension.PROMPT_VERSION,
    "error_category": Dimension.ERROR_CATEGORY,
    "experiment": Dimension.EXPERIMENT,
    "variant": Dimension.VARIANT,
}
PERCENTILES = frozenset({"latency_p50_ms", "latency_p95_ms", "latency_p99_ms"})
CHARTS = ("number", "line", "bar", "table")
MAX_ROWS = 50  # a breakdown shows its largest values (by runs); the rest are summed as `other`


@dataclass(frozen=True)
class WidgetSpec:
    metric: str
    breakdown: str = ""
    filters: Mapping[str, str] | None = None
    days: int = 30
    until: date | None = None


# Metrics that count or add up: with no runs they are 0 (the others, rates and averages, have no value then).
ADDITIVE = frozenset({"runs", "labelled_runs", "tokens", "cost_usd"})


def _empty(metric: str) -> float | None:
    """A metric's value over no runs."""
    return 0 if metric in ADDITIVE else None


def _label(breakdown: str, value: Any) -> str:
    if breakdown == "day":
        return value.isoformat()
    if breakdown == "variant":
        experiment, variant = compound_parts(value)
        return f"{experiment}/{variant}" if experiment else ""
    return value


def widget_triples(*, filters: Mapping[str, str], breakdown: str) -> set[str]:
    """The triple of dimensions a widget reads (two filters and a breakdown by a third), if any: what the sync must
    roll up for it to answer from the rollups (`analytics.mirror.triples`)."""
    if not isinstance(filters, Mapping) or not isinstance(breakdown, str) or breakdown not in BREAKDOWNS:
        return set()  # (a widget saved some other way than through the API: nothing it could read)
    dimensions = [FILTERS[name][0] for name in filters if isinstance(name, str) and name in FILTERS]
    if len(dimensions) != 2 or len(filters) != 2:
        return set()
    triple = triple_of(*dimensions, BREAKDOWNS[breakdown])
    return set() if triple is None else {triple[0]}


def widget_answer(*, spec: WidgetSpec) -> dict[str, Any]:
    """{period, filters, metric, breakdown, path, total, rows: [{key, value, runs}]} for one widget."""
    scope = scope_get(days=spec.days, until=spec.until, filters=spec.filters or {})
    dimension = BREAKDOWNS[spec.breakdown]
    by_value = spec.breakdown not in ("", "day")
    # A breakdown by value is summed per value by the database; the sketches come only for a percentile.
    cells = Cells(scope, detailed=[Dimension.ALL], totalled=[dimension] if by_value else [],
                  sketches=spec.metric in PERCENTILES)
    measure = METRICS[spec.metric]
    total = cells.total()
    rows = []
    if spec.breakdown == "day":
        by_day = cells.by_day()
        rows = [{"key": day.isoformat(), "value": measure(by_day[day]) if day in by_day else _empty(spec.metric),
                 "runs": by_day[day].runs if day in by_day else 0}
                for day in (scope.since.fromordinal(scope.since.toordinal() + n) for n in range(scope.days))]
    elif spec.breakdown:
        values = sorted(cells.by_value(dimension).values(), key=lambda cell: (-cell.runs, str(cell.key)))
        shown, rest = values[:MAX_ROWS], values[MAX_ROWS:]
        rows = [{"key": _label(spec.breakdown, cell.key), "value": measure(cell), "runs": cell.runs} for cell in shown]
        if rest:
            other = Cell(key="other")
            for cell in rest:
                other.add(cell)
            rows.append({"key": "(others)", "value": measure(other), "runs": other.runs})
    return scope.header() | {
        "metric": spec.metric, "breakdown": spec.breakdown,
        "path": "raw rows" if cells.read_raw(dimension) or cells.read_raw(Dimension.ALL) else "rollups",
        "total": {"value": measure(total) if total.runs else _empty(spec.metric),
                  "runs": total.runs},
        "rows": rows,
    }
