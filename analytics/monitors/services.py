"""Evaluate the monitors, record their state changes as alerts, and ask for the notifications.

`monitors_evaluate` is what `manage.py evaluate_monitors`, beat (every MONITORS_EVALUATE_INTERVAL_S) and the sync
(after it changed the mirror) run. It reads the window rollups once for every monitor (`reading.rows_read`), then
decides each monitor's state with no further read. A change is saved by a conditional UPDATE on the state it was
decided from, in the transaction that records its alert: two evaluations at once (beat's and a sync's) record and
notify each change once. Notifications leave after commit (`analytics.tasks.alert_deliver_task`, by name); any
still pending a minute later (the broker was away) are sent again by the next evaluation.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from intentsite.celery import app as celery_app

from ..models import Alert, Monitor, SyncState
from .evaluation import outcome_get, windows_needed
from .outcome import ALERT, NO_DATA, PAUSED, WARNING, Outcome
from .reading import rows_read
from .windows import Rows

logger = logging.getLogger(__name__)

DELIVER_TASK = "analytics.tasks.alert_deliver_task"
RESEND_AFTER = timedelta(seconds=60)


@dataclass
class EvaluationResult:
    evaluated: int = 0
    changed: int = 0
    renotified: int = 0
    resent: int = 0
    rows_read: int = 0
    seconds: float = 0.0
    states: dict[str, int] = field(default_factory=dict)


def detection_experiment_id() -> str | None:
    """The detection experiment's id as the sync last saw it (monitors watch that experiment)."""
    return (SyncState.objects.filter(experiment_name=settings.MLFLOW_EXPERIMENT_NAME)
            .exclude(experiment_id="").values_list("experiment_id", flat=True).first())


def monitor_rows_read(*, monitors: list[Monitor], now: datetime, extra: list[tuple[datetime, datetime]] = (),
                      dense: bool = False) -> Rows:
    """The window rollup rows these monitors' evaluation at `now` needs (and `extra` windows), read once."""
    experiment_id = detection_experiment_id()
    windows = [window for monitor in monitors for window in windows_needed(monitor, now)] + list(extra)
    if experiment_id is None or not windows:
        return Rows()
    return rows_read(experiment_id=experiment_id, windows=windows, dense=dense)


def monitors_evaluate(*, now: datetime | None = None, monitor_ids: list[int] | None = None) -> EvaluationResult:
    """Evaluate every enabled monitor (or these) once at `now`; pause the disabled ones."""
    started = time.monotonic()
    now = now or timezone.now()
    result = EvaluationResult()
    monitors = Monitor.objects.all()
    if monitor_ids is not None:
        monitors = monitors.filter(pk__in=monitor_ids)
    monitors = list(monitors)
    for monitor in monitors:
        if not monitor.enabled and monitor.state != PAUSED:
            _change(monitor, Outcome(state=PAUSED, value=monitor.last_value, threshold=None, window_start=now,
                                     window_end=now, runs=0), now=now, notify=False)
    enabled = [monitor for monitor in monitors if monitor.enabled]
    rows = monitor_rows_read(monitors=enabled, now=now)
    result.rows_read = rows.count
    unchanged: list[Monitor] = []
    for monitor in enabled:
        outcome = outcome_get(monitor, rows, now)
        result.evaluated += 1
        result.states[outcome.state] = result.states.get(outcome.state, 0) + 1
        if outcome.state != monitor.state:
            result.changed += _change(monitor, outcome, now=now, notify=notified(monitor, outcome.state))
        elif (outcome.state == ALERT and monitor.renotify_minutes and monitor.last_notified_at is not None
              and now - monitor.last_notified_at >= timedelta(minutes=monitor.renotify_minutes)):
            result.renotified += _change(monitor, outcome, now=now, notify=True, kind=Alert.Kind.RENOTIFY)
        else:
            monitor.last_value, monitor.last_evaluated_at = outcome.value, now
            monitor.last_details = _json(outcome.details)
            unchanged.append(monitor)
    # The monitors whose state stayed: their value and time in one statement (not one a monitor).
    Monitor.objects.bulk_update(unchanged, ["last_value", "last_evaluated_at", "last_details"], batch_size=200)
    result.resent = alerts_pending_resend(now=now)
    result.seconds = time.monotonic() - started
    return result


def notified(monitor: Monitor, state: str) -> bool:
    """Whether a change of state is notified (every change is recorded): into warning or alert always; into no_data
    (traffic stopped) and back to ok from warning or alert (recovery) once the monitor has been evaluated before;
    no_data back to ok, and into or out of `paused` (the user's doing), never."""
    if state in (WARNING, ALERT):
        return True
    if monitor.last_evaluated_at is None or PAUSED in (monitor.state, state):
        return False
    return state == NO_DATA or monitor.state in (WARNING, ALERT)


def _change(monitor: Monitor, outcome: Outcome, *, now: datetime, notify: bool, kind: str = Alert.Kind.CHANGE) -> int:
    """Save the new state (only if nobody changed it since it was read) with its alert; 1 if saved."""
    with transaction.atomic():
        changes: dict[str, Any] = {"state": outcome.state, "last_value": outcome.value, "last_evaluated_at": now,
                                   "last_details": _json(outcome.details)}
        if kind == Alert.Kind.CHANGE:
            changes["state_since"] = now
        if notify:
            changes["last_notified_at"] = now
        saved = Monitor.objects.filter(pk=monitor.pk, state=monitor.state,
                                       last_notified_at=monitor.last_notified_at).update(**changes)
        if not saved:
            return 0
        alert = Alert.objects.create(
            monitor=monitor, kind=kind, from_state=monitor.state, to_state=outcome.state, value=outcome.value,
            threshold=outcome.threshold, window_start=outcome.window_start, window_end=outcome.window_end,
            created_at=now, details=_json(outcome.details | {"runs": outcome.runs}),
            delivery=Alert.Delivery.PENDING if notify else Alert.Delivery.NONE)
        if notify:
            transaction.on_commit(lambda: alert_send(alert_id=alert.pk))
    logger.log(logging.WARNING if outcome.state in (ALERT, NO_DATA) else logging.INFO,
               "Monitor %r: %s -> %s (value %s, threshold %s)", monitor.name, monitor.state, outcome.state,
               outcome.value, outcome.threshold)
    return 1


def alert_send(*, alert_id: int) -> None:
    """Hand the alert's notification to a worker; if the broker is away, the next evaluation sends it again."""
    try:
        celery_app.send_task(DELIVER_TASK, args=[alert_id])
    except Exception:  # noqa: BLE001 - the broker away: `alerts_pending_resend` catches up
        logger.warning("Could not queue the notification of alert %s; it is sent again later", alert_id,
                       exc_info=True)


def alerts_pending_resend(*, now: datetime) -> int:
    """Queue again the notifications still pending a while after their alert (their message was lost)."""
    pending = list(Alert.objects.filter(delivery=Alert.Delivery.PENDING, attempts=0,
                                        created_at__lt=now - RESEND_AFTER,
                                        created_at__gte=now - timedelta(days=1)).values_list("pk", flat=True)[:100])
    for alert_id in pending:
        alert_send(alert_id=alert_id)
    return len(pending)


def _json(value: Any) -> Any:
    """Datetimes as ISO text: what a JSON column can hold."""
    if isinstance(value, dict):
        return {key: _json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json(item) for item in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value
