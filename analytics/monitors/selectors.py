"""Reads of monitors and alerts for pages (the admin's dashboard)."""

from __future__ import annotations

from ..models import Alert, Monitor


def monitors_overview(*, alerts_limit: int = 20) -> dict:
    """Every monitor with its state (alerts first), and the latest state changes."""
    order = {Monitor.State.ALERT: 0, Monitor.State.WARNING: 1, Monitor.State.NO_DATA: 2, Monitor.State.OK: 3,
             Monitor.State.PAUSED: 4}
    monitors = sorted(Monitor.objects.all(), key=lambda m: (order.get(m.state, 9), m.name))
    alerts = list(Alert.objects.select_related("monitor").order_by("-created_at", "-id")[:alerts_limit])
    return {"monitors": monitors, "alerts": alerts}
