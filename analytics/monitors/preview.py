"""Backtest: when a monitor, as it is configured now, would have changed state over the past days.

The monitor is evaluated every `step` (5 minutes; anomaly and drift monitors every third of their window, at
least 5 minutes: each of their evaluations reads 30 windows or a week) from the window rollups read once, with
the very code the beat runs (`evaluation.outcome_get`). Nothing is saved and nobody is notified. At most MAX_DAYS
days, and never before the 5-minute rows kept (ANALYTICS_FINE_ROLLUP_DAYS): windows' edges need them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from ..models import Monitor
from .evaluation import outcome_get, windows_needed
from .services import monitor_rows_read
from .windows import STEP, floor_step

MAX_DAYS = 7  # the 5-minute rows that windows' edges need are kept ANALYTICS_FINE_ROLLUP_DAYS (9)


@dataclass
class Preview:
    days: int
    step_minutes: int
    evaluations: int
    start: datetime
    end: datetime
    changes: list[dict[str, Any]] = field(default_factory=list)
    minutes_in_state: dict[str, int] = field(default_factory=dict)


def preview_step(monitor: Monitor) -> timedelta:
    if monitor.kind == "threshold":
        return STEP
    return max(STEP, timedelta(minutes=monitor.window_minutes // 3 // 5 * 5))


def monitor_preview(*, monitor: Monitor, days: int, now: datetime | None = None) -> Preview:
    now = now or timezone.now()
    end = floor_step(now)
    start = max(end - timedelta(days=days), floor_step(now - timedelta(days=settings.ANALYTICS_FINE_ROLLUP_DAYS)))
    step = preview_step(monitor)
    moments = []
    moment = start
    while moment <= end:
        moments.append(moment)
        moment += step
    # One read for every step: both grains over the span that the first and last evaluations' windows bound.
    spans = [window for moment in (moments[0], moments[-1]) for window in windows_needed(monitor, moment)]
    rows = monitor_rows_read(monitors=[], now=now, dense=True,
                             extra=[(min(low for low, _ in spans), max(high for _, high in spans))])
    result = Preview(days=days, step_minutes=int(step.total_seconds() // 60), evaluations=len(moments),
                     start=start, end=end)
    state = None
    for moment in moments:
        outcome = outcome_get(monitor, rows, moment)
        result.minutes_in_state[outcome.state] = result.minutes_in_state.get(outcome.state, 0) + result.step_minutes
        if state is not None and outcome.state != state:
            result.changes.append({"at": moment, "from": state, "to": outcome.state, "value": outcome.value,
                                   "threshold": outcome.threshold, "window_start": outcome.window_start,
                                   "window_end": outcome.window_end, "details": outcome.details})
        state = outcome.state
    return result
