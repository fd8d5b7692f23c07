"""Exact reference aggregates of the mirrored rows, computed in Python from the raw column values: what the
rollups and the reports must equal (counts and min/max exactly, sums to float tolerance, percentiles within
the sketch's 1 %)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import date
from typing import Any

from analytics.mirror.rollups import DIMENSION_COLUMNS
from analytics.models import COMPOUND_SEPARATOR, OTHER, PAIRS, TRIPLES, MirroredRun, compound_value

COUNTS = ("runs", "errors", "fallbacks", "out_of_scope", "template_matches", "confidence_count", "latency_count",
          "prompt_tokens", "completion_tokens", "labelled", "correct")
SUMS = ("confidence_sum", "confidence_sumsq", "latency_sum_ms", "latency_sumsq_ms", "cost_usd")
COLUMNS = ("day", "start_time", "detected_intent", "user_role", "current_module", "current_tab", "model_name",
           "answered_by", "prompt_version", "error_category", "error_type", "is_error", "fallback_used",
           "template_match_rate", "confidence_score", "response_time_ms", "prompt_tokens", "completion_tokens",
           "cost_usd", "is_correct", "experiment", "variant")


def nearest_rank(values: list[float], q: float) -> float | None:
    """The exact nearest-rank q-quantile: the ⌈q·n⌉-th smallest value."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(round(q * len(ordered), 9))) - 1]


def cell_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Every aggregate a rollup cell holds, from the rows' raw values."""
    latencies = [row["response_time_ms"] for row in rows if row["response_time_ms"] is not None]
    confidences = [row["confidence_score"] for row in rows if row["confidence_score"] is not None]
    return {
        "runs": len(rows),
        "errors": sum(1 for row in rows if row["is_error"]),
        "fallbacks": sum(1 for row in rows if row["fallback_used"] is True),
        "out_of_scope": sum(1 for row in rows if row["detected_intent"] == "out_of_scope"),
        "template_matches": sum(1 for row in rows if (row["template_match_rate"] or 0) > 0),
        "confidence_count": len(confidences),
        "latency_count": len(latencies),
        "prompt_tokens": sum(row["prompt_tokens"] or 0 for row in rows),
        "completion_tokens": sum(row["completion_tokens"] or 0 for row in rows),
        "labelled": sum(1 for row in rows if row["is_correct"] is not None),
        "correct": sum(1 for row in rows if row["is_correct"] is True),
        "confidence_sum": sum(confidences),
        "confidence_sumsq": sum(c * c for c in confidences),
        "latency_sum_ms": sum(latencies),
        "latency_sumsq_ms": sum(x * x for x in latencies),
        "cost_usd": sum(row["cost_usd"] or 0 for row in rows),
        "latency_min_ms": min(latencies, default=None),
        "latency_max_ms": max(latencies, default=None),
        "latencies": latencies,
        "first_start_time": min(row["start_time"] for row in rows),
        "last_start_time": max(row["start_time"] for row in rows),
    }


def rows_of(*, experiment_id: str, days: Iterable[date] | None = None, **filters: str) -> list[dict[str, Any]]:
    rows = MirroredRun.objects.filter(experiment_id=experiment_id, **filters)
    if days is not None:
        rows = rows.filter(day__in=list(days))
    return list(rows.values(*COLUMNS))


def value_of(row: dict[str, Any], dimension: str) -> str:
    if dimension in PAIRS or dimension in TRIPLES:
        return COMPOUND_SEPARATOR.join(value_of(row, member) for member in PAIRS.get(dimension) or TRIPLES[dimension])
    columns = DIMENSION_COLUMNS[dimension]
    return compound_value(*(row[column] or "" for column in columns)) if columns else ""


def aggregate_exact(*, experiment_id: str, dimension: str, days: Iterable[date] | None = None,
                    top: int | None = None) -> dict[tuple[date, str], dict[str, Any]]:
    """Per (day, value) of `dimension`, the exact aggregates; with `top`, each day's values of a free-text column
    (role, module, tab) beyond its `top` most frequent (most runs, then name) counted as `other`, in the
    dimension's own rows and in its pairs' rows alike, as the rollups fold them."""
    rows = rows_of(experiment_id=experiment_id, days=days)
    if top is not None:
        rows = folded(rows, top=top)
    groups: dict[tuple[date, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["day"], value_of(row, dimension)), []).append(row)
    return {key: cell_of(rows) for key, rows in groups.items()}


def folded(rows: list[dict[str, Any]], *, top: int) -> list[dict[str, Any]]:
    """The rows with each day's values of the free-text columns beyond the day's `top` replaced by `other`."""
    rows = [dict(row) for row in rows]
    for column in ("user_role", "current_module", "current_tab"):
        counts: dict[date, dict[str, int]] = {}
        for row in rows:
            day = counts.setdefault(row["day"], {})
            day[row[column] or ""] = day.get(row[column] or "", 0) + 1
        kept = {day: {value for value, _ in sorted(values.items(), key=lambda item: (-item[1], item[0]))[:top]}
                for day, values in counts.items() if len(values) > top}
        for row in rows:
            if row["day"] in kept and (row[column] or "") not in kept[row["day"]]:
                row[column] = OTHER
    return rows
