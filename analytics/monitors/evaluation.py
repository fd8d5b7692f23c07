"""A monitor's state at a moment, from window rollup rows already read (`windows.Rows`): no query here.

- threshold: the metric over the window against `warn_threshold` / `alert_threshold` (`comparator` above: the
  value is higher than the threshold; below: lower).
- anomaly: the window's value against the same metric over the previous windows of the same length, by a robust
  z-score (`anomaly_score`); the thresholds are scores.
- drift: the window's intent distribution against a reference period, per segment (`drift.drift_outcome`).

Fewer than `min_runs` runs in the window (labelled runs for accuracy) is `no_data`.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from datetime import datetime, timedelta

from .drift import drift_outcome, reference_of
from .outcome import NO_DATA, Outcome, graded, thresholds
from .windows import Aggregate, Rows, window_end

LATENCY_METRICS = {"latency_p50_ms": 0.50, "latency_p95_ms": 0.95}
# Anomaly: the default score thresholds, the previous windows compared with, and the floors of the scale (a history
# with no spread at all, 0 errors every window, would make any error infinitely anomalous).
ANOMALY_HISTORY = 24
ANOMALY_HISTORY_SPAN = timedelta(days=7)  # so that a day's window compares with the week before, not a month
ANOMALY_SEASONS = 7
ANOMALY_MIN_HISTORY = 6  # previous windows with min_runs each, or
ANOMALY_MIN_SEASONS = 4  # same windows of previous days (preferred when there are that many)
MAD_TO_SIGMA = 1.4826
SCALE_FLOOR = {"runs": 1.0, "latency_p50_ms": 1.0, "latency_p95_ms": 1.0, "cost_usd": 1e-6}
RATE_SCALE_FLOOR = 0.01
RELATIVE_SCALE_FLOOR = 0.05


def metric_value(aggregate: Aggregate, *, metric: str, intent: str = "") -> tuple[float | None, int]:
    """The metric over an aggregate and the runs it stands on (labelled runs for accuracy)."""
    sums, runs = aggregate.sums, aggregate.runs
    if metric == "accuracy":
        labelled = int(sums["labelled"])
        return (sums["correct"] / labelled if labelled else None), labelled
    if not runs:
        return None, 0
    if metric == "runs":
        return float(runs), runs
    if metric in LATENCY_METRICS:
        return aggregate.sketch.quantile(LATENCY_METRICS[metric]), int(sums["latency_count"])
    if metric == "avg_confidence":
        count = int(sums["confidence_count"])
        return (sums["confidence_sum"] / count if count else None), count
    if metric == "cost_usd":
        return sums["cost_usd"], runs
    if metric == "intent_share":
        return aggregate.intents.get(intent, 0) / runs, runs
    part = {"error_rate": "errors", "fallback_rate": "fallbacks", "out_of_scope_rate": "out_of_scope",
            "template_match_rate": "template_matches"}[metric]
    return sums[part] / runs, runs


def window_of(monitor, now: datetime) -> tuple[datetime, datetime]:
    end = window_end(now)
    return end - timedelta(minutes=monitor.window_minutes), end


def windows_needed(monitor, now: datetime) -> list[tuple[datetime, datetime]]:
    """Every window an evaluation of this monitor at `now` reads."""
    start, end = window_of(monitor, now)
    if monitor.kind == "anomaly":
        return [(start, end), *history_windows(monitor, start, end)]
    if monitor.kind == "drift":
        return [(start, end), reference_of(monitor, start)]
    return [(start, end)]


def history_windows(monitor, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """The previous windows of the same length, back to back; and, for windows of a day or less, the same window
    on each of the previous days (the seasonal baseline: traffic has a daily rhythm)."""
    length = end - start
    count = min(ANOMALY_HISTORY, ANOMALY_HISTORY_SPAN // length)
    windows = [(start - k * length, end - k * length) for k in range(1, count + 1)]
    if length <= timedelta(days=1):
        windows += [(start - timedelta(days=d), end - timedelta(days=d)) for d in range(1, ANOMALY_SEASONS + 1)]
    return list(dict.fromkeys(windows))


def anomaly_score(value: float, history: Iterable[float], *, metric: str) -> tuple[float, float, float]:
    """(score, median, scale): the robust z-score of `value` against the history's median and MAD (×1.4826, a
    standard deviation for normal data), with the scale floored (see the module's constants)."""
    history = list(history)
    median = statistics.median(history)
    mad = statistics.median(abs(x - median) for x in history)
    floor = SCALE_FLOOR.get(metric, RATE_SCALE_FLOOR)
    scale = max(MAD_TO_SIGMA * mad, floor, RELATIVE_SCALE_FLOOR * abs(median))
    return (value - median) / scale, median, scale


def outcome_get(monitor, rows: Rows, now: datetime) -> Outcome:
    """The monitor's state at `now` from `rows` (which hold what `windows_needed` names)."""
    start, end = window_of(monitor, now)
    if monitor.kind == "drift":
        return drift_outcome(monitor, rows, start, end)
    filters = rows.filter_mask(monitor.filters or {})

    def aggregate_of(low: datetime, high: datetime) -> Aggregate:
        index = rows.window_index(low, high)
        return rows.aggregate(index[filters[index]], sketch=monitor.metric in LATENCY_METRICS,
                              intents=monitor.metric == "intent_share")

    aggregate = aggregate_of(start, end)
    value, runs = metric_value(aggregate, metric=monitor.metric, intent=monitor.intent)
    base = {"window_start": start, "window_end": end, "runs": aggregate.runs}
    if value is None or runs < max(1, monitor.min_runs):
        return Outcome(state=NO_DATA, value=value, threshold=None, details={"reason": "min_runs", "counted": runs},
                       **base)
    if monitor.kind != "anomaly":
        state, threshold = graded(value, monitor)
        return Outcome(state=state, value=value, threshold=threshold, **base)
    history = []
    for low, high in history_windows(monitor, start, end):
        past, counted = metric_value(aggregate_of(low, high), metric=monitor.metric, intent=monitor.intent)
        if past is not None and counted >= max(1, monitor.min_runs):
            history.append((low, past))
    day = timedelta(days=1)
    seasonal = [past for low, past in history if end - start <= day and (start - low) % day == timedelta(0)]
    baseline = seasonal if len(seasonal) >= ANOMALY_MIN_SEASONS else [past for _, past in history]
    if len(baseline) < (ANOMALY_MIN_SEASONS if baseline is seasonal else ANOMALY_MIN_HISTORY):
        return Outcome(state=NO_DATA, value=value, threshold=None,
                       details={"reason": "history", "history_windows": len(baseline)}, **base)
    score, median, scale = anomaly_score(value, baseline, metric=monitor.metric)
    state, threshold = graded(score, monitor)
    warn, _ = thresholds(monitor)
    return Outcome(state=state, value=value, threshold=threshold, **base, details={
        "score": round(score, 3), "baseline": "seasonal" if baseline is seasonal else "previous_windows",
        "history_windows": len(baseline), "median": median, "scale": scale,
        "expected_range": [median - warn * scale, median + warn * scale] if warn is not None else None})

