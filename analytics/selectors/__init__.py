"""Reads of the analytics app: rollup overviews, percentiles from histograms, and exact aggregates of the
raw mirrored rows (what the rollups must equal; tests and audits compare the two)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from django.db.models import Count, F, FloatField, Max, Min, Q, Sum

from ..mlflow_source import OUT_OF_SCOPE
from ..models import LATENCY_BUCKET_COUNT, LATENCY_BUCKET_EDGES_MS, DailyRollup, MirroredRun, SyncState
from ..services.rollups import DIMENSION_COLUMNS


def rollup_percentile(histogram: Sequence[int], q: float) -> float | None:
    """The q-quantile (0 < q ≤ 1) of the latencies counted in a `latency_histogram`, in ms.

    Nearest-rank: the bucket holding the ⌈q·n⌉-th smallest value is exact; inside it the value is
    interpolated on the log scale, so the estimate always lies in the bucket of the exact percentile.
    None for an empty histogram."""
    total = sum(histogram)
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for bucket, count in enumerate(histogram):
        if count and seen + count >= rank:
            fraction = (rank - seen - 0.5) / count
            if bucket == 0:
                return LATENCY_BUCKET_EDGES_MS[0] * fraction
            if bucket >= len(LATENCY_BUCKET_EDGES_MS):
                return LATENCY_BUCKET_EDGES_MS[-1]
            lower, upper = LATENCY_BUCKET_EDGES_MS[bucket - 1], LATENCY_BUCKET_EDGES_MS[bucket]
            return lower * (upper / lower) ** fraction
        seen += count
    return None  # unreachable: the counts add up to total


def histograms_merge(histograms: Iterable[Sequence[int]]) -> list[int]:
    merged = [0] * LATENCY_BUCKET_COUNT
    for histogram in histograms:
        for bucket, count in enumerate(histogram):
            merged[bucket] += count
    return merged


@dataclass(frozen=True)
class Breakdown:
    """A dimension value over a date range, from the rollups."""

    value: str
    runs: int
    errors: int
    fallbacks: int
    out_of_scope: int
    template_matches: int
    confidence_mean: float | None
    confidence_std: float | None
    latency_mean_ms: float | None
    latency_std_ms: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float

    @property
    def error_rate(self) -> float:
        return self.errors / self.runs if self.runs else 0.0


def _mean_std(count: int, total: float, squares: float) -> tuple[float | None, float | None]:
    if not count:
        return None, None
    mean = total / count
    return mean, math.sqrt(max(0.0, squares / count - mean * mean))


def breakdown_get(*, since: date, until: date, dimension: str = DailyRollup.Dimension.ALL,
                  experiment_id: str | None = None) -> list[Breakdown]:
    """Per value of `dimension`, everything the rollups know about the days since..until (inclusive),
    most runs first. Reads only rollup rows (days × values), never the raw runs."""
    if experiment_id is None:
        experiment_id = _default_experiment_id()
    rollups = DailyRollup.objects.filter(experiment_id=experiment_id, dimension=dimension, day__gte=since, day__lte=until)
    sums = {row["value"]: row for row in rollups.values("value").annotate(
        s_runs=Sum("runs"), s_errors=Sum("errors"), s_fallbacks=Sum("fallbacks"), s_oos=Sum("out_of_scope"),
        s_templates=Sum("template_matches"), s_cn=Sum("confidence_count"), s_cs=Sum("confidence_sum"),
        s_css=Sum("confidence_sumsq"), s_ln=Sum("latency_count"), s_ls=Sum("latency_sum_ms"),
        s_lss=Sum("latency_sumsq_ms"), s_pt=Sum("prompt_tokens"), s_ct=Sum("completion_tokens"), s_cost=Sum("cost_usd"),
    ).order_by()}
    histograms: dict[str, list[list[int]]] = {}
    for value, histogram in rollups.values_list("value", "latency_histogram"):
        histograms.setdefault(value, []).append(histogram)
    result = []
    for value, row in sums.items():
        histogram = histograms_merge(histograms.get(value, []))
        confidence_mean, confidence_std = _mean_std(row["s_cn"], row["s_cs"], row["s_css"])
        latency_mean, latency_std = _mean_std(row["s_ln"], row["s_ls"], row["s_lss"])
        result.append(Breakdown(
            value=value, runs=int(row["s_runs"]), errors=int(row["s_errors"]), fallbacks=int(row["s_fallbacks"]),
            out_of_scope=int(row["s_oos"]), template_matches=int(row["s_templates"]),
            confidence_mean=confidence_mean, confidence_std=confidence_std, latency_mean_ms=latency_mean,
            latency_std_ms=latency_std, latency_p50_ms=rollup_percentile(histogram, 0.5),
            latency_p95_ms=rollup_percentile(histogram, 0.95), prompt_tokens=int(row["s_pt"]),
            completion_tokens=int(row["s_ct"]), cost_usd=float(row["s_cost"]),
        ))
    return sorted(result, key=lambda b: (-b.runs, b.value))


def _default_experiment_id() -> str:
    from django.conf import settings

    state = SyncState.objects.filter(experiment_name=settings.MLFLOW_EXPERIMENT_NAME).first()
    return state.experiment_id if state else ""


def sync_state_get(*, experiment_name: str) -> SyncState | None:
    return SyncState.objects.filter(experiment_name=experiment_name).first()


# --- Exact aggregates of the raw rows (the reference the rollups must equal) -------------------------

def runs_aggregate_exact(*, experiment_id: str, dimension: str,
                         days: Iterable[date] | None = None) -> dict[tuple[date, str], dict[str, Any]]:
    """Per (day, value) of `dimension`, the aggregates a rollup holds, straight from `MirroredRun`
    in one GROUP BY (slow at scale: this is the reference, not the read path)."""
    column = DIMENSION_COLUMNS[dimension]
    rows = MirroredRun.objects.filter(experiment_id=experiment_id)
    if days is not None:
        rows = rows.filter(day__in=list(days))
    group = ["day"] + ([column] if column else [])
    result = {}
    for row in rows.values(*group).annotate(
        runs=Count("id"), errors=Count("id", filter=Q(is_error=True)),
        fallbacks=Count("id", filter=Q(fallback_used=True)),
        out_of_scope=Count("id", filter=Q(detected_intent=OUT_OF_SCOPE)),
        template_matches=Count("id", filter=Q(template_match_rate__gt=0)),
        confidence_count=Count("confidence_score"), labelled=Count("is_correct"),
        correct=Count("id", filter=Q(is_correct=True)), confidence_sum=Sum("confidence_score"),
        confidence_sumsq=Sum(F("confidence_score") * F("confidence_score"), output_field=FloatField()),
        latency_count=Count("response_time_ms"), latency_sum_ms=Sum("response_time_ms"),
        latency_sumsq_ms=Sum(F("response_time_ms") * F("response_time_ms"), output_field=FloatField()),
        prompt_tokens=Sum("prompt_tokens"), completion_tokens=Sum("completion_tokens"), cost_usd=Sum("cost_usd"),
        first_start_time=Min("start_time"), last_start_time=Max("start_time"),
    ).order_by():
        key = (row.pop("day"), row.pop(column) if column else "")
        result[key] = {name: (value or 0) if name not in ("first_start_time", "last_start_time") else value
                       for name, value in row.items()}
    return result


def latency_percentile_exact(*, experiment_id: str, day: date, dimension: str, value: str, q: float) -> float | None:
    """The nearest-rank q-quantile of response_time_ms of one rollup cell, computed by the database."""
    column = DIMENSION_COLUMNS[dimension]
    rows = MirroredRun.objects.filter(experiment_id=experiment_id, day=day, response_time_ms__isnull=False)
    if column:
        rows = rows.filter(**{column: value})
    count = rows.count()
    if not count:
        return None
    rank = max(1, math.ceil(q * count))
    return rows.order_by("response_time_ms").values_list("response_time_ms", flat=True)[rank - 1]
