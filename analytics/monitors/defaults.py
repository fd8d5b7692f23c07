"""The monitors `make demo` starts with (`manage.py create_default_monitors`): what an operator of an assistant
watches first. Their channel is the service's log (`log://`); add a Slack or webhook URL in the admin."""

from __future__ import annotations

from ..models import Monitor

DEFAULT_MONITORS: list[dict] = [
    {"name": "Error rate", "kind": "threshold", "metric": "error_rate", "window_minutes": 15, "comparator": "above",
     "warn_threshold": 0.02, "alert_threshold": 0.05, "min_runs": 20},
    {"name": "Latency p95", "kind": "threshold", "metric": "latency_p95_ms", "window_minutes": 15,
     "comparator": "above", "warn_threshold": 1000, "alert_threshold": 3000, "min_runs": 20},
    {"name": "LM fallbacks", "kind": "threshold", "metric": "fallback_rate", "window_minutes": 15,
     "comparator": "above", "warn_threshold": 0.05, "alert_threshold": 0.2, "min_runs": 20},
    {"name": "Out of scope", "kind": "threshold", "metric": "out_of_scope_rate", "window_minutes": 60,
     "comparator": "above", "warn_threshold": 0.25, "alert_threshold": 0.4, "min_runs": 50},
    {"name": "Traffic anomaly", "kind": "anomaly", "metric": "runs", "window_minutes": 60, "comparator": "below",
     "min_runs": 1},
    {"name": "Intent drift per module", "kind": "drift", "metric": "intent_share", "segment": "module",
     "window_minutes": 1440, "min_runs": 100},
]


def monitors_create_defaults(*, channels: list[str] | None = None) -> list[Monitor]:
    """Create the default monitors that do not exist yet (by name); returns those created."""
    created = []
    for fields in DEFAULT_MONITORS:
        monitor, made = Monitor.objects.get_or_create(
            name=fields["name"], defaults=fields | {"channels": ["log://"] if channels is None else channels})
        if made:
            created.append(monitor)
    return created
