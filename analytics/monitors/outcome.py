"""What an evaluation decides (`Outcome`), the states, and how a value or score grades against a monitor's
thresholds (with the defaults of anomaly and drift monitors)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

OK, WARNING, ALERT, NO_DATA, PAUSED = "ok", "warning", "alert", "no_data", "paused"
# Default thresholds: anomaly scores (robust z) and drift distances (Jensen-Shannon, base 2).
ANOMALY_WARN, ANOMALY_ALERT = 3.0, 5.0
DRIFT_WARN, DRIFT_ALERT = 0.1, 0.2


@dataclass
class Outcome:
    state: str
    value: float | None
    threshold: float | None
    window_start: datetime
    window_end: datetime
    runs: int
    details: dict[str, Any] = field(default_factory=dict)


def thresholds(monitor) -> tuple[float | None, float | None]:
    if monitor.kind == "anomaly":
        return (ANOMALY_WARN if monitor.warn_threshold is None else monitor.warn_threshold,
                ANOMALY_ALERT if monitor.alert_threshold is None else monitor.alert_threshold)
    if monitor.kind == "drift":
        return (DRIFT_WARN if monitor.warn_threshold is None else monitor.warn_threshold,
                DRIFT_ALERT if monitor.alert_threshold is None else monitor.alert_threshold)
    return monitor.warn_threshold, monitor.alert_threshold


def crossed(value: float, limit: float | None, comparator: str) -> bool:
    if limit is None:
        return False
    return value > limit if comparator == "above" else value < limit


def graded(value: float, monitor) -> tuple[str, float | None]:
    """The state a value (or score) puts the monitor in, and the threshold that decided it."""
    warn, alert = thresholds(monitor)
    if crossed(value, alert, monitor.comparator):
        return ALERT, alert
    if crossed(value, warn, monitor.comparator):
        return WARNING, warn
    return OK, warn if warn is not None else alert
