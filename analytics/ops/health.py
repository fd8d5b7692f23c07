"""The health of the analytics pipeline: MLflow, the mirror's sync, the dead letters, the broker, the database,
and the LM circuit breakers of the process that answers."""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone
from django.utils.module_loading import import_string

from ..mirror.store import mlflow_modules_warm, mlflow_probe, tracking_uri_display
from ..models import Monitor, SyncState
from .workers import workers_alive

logger = logging.getLogger(__name__)

# How the dead letters are counted: a function of the intent app, by dotted path, so that analytics does
# not import intent's models. Override with the ANALYTICS_DEAD_LETTERS_COUNT setting.
DEAD_LETTERS_COUNT = "intent.selectors.dead_letters_count"
# The detections waiting for MLflow, the same way (ANALYTICS_TRACKING_BACKLOG): {"pending", "oldest_pending_at"}.
TRACKING_BACKLOG = "intent.selectors.tracking_backlog"
# The LM circuit breakers of this process, the same way (ANALYTICS_LM_CIRCUITS_STATE): a list of plain dicts.
LM_CIRCUITS_STATE = "intent.selectors.lm_circuits_state"
# Seconds each probe (MLflow, broker) may take before it counts as unreachable.
PROBE_TIMEOUT_S = 3.0
# The sync is late when its last success is older than this many intervals.
LAG_INTERVALS = 3

STATUS_OK, STATUS_DEGRADED, STATUS_DOWN = "ok", "degraded", "down"


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def broker_probe(*, timeout_s: float = PROBE_TIMEOUT_S) -> dict[str, Any]:
    """Connect to Celery's broker once, without retries, within about `timeout_s` seconds."""
    from celery import current_app

    outcome: dict[str, Any] = {"reachable": False, "error": f"no answer within {timeout_s:g} s"}

    def connect() -> None:
        try:
            with current_app.connection_for_read(connect_timeout=timeout_s) as conn:
                conn.ensure_connection(max_retries=0, timeout=timeout_s)
            outcome.update(reachable=True, error=None)
        except Exception as exc:  # noqa: BLE001 - any failure means: unreachable, and why
            outcome.update(error=_error_text(exc))

    thread = threading.Thread(target=connect, name="broker-probe", daemon=True)
    thread.start()
    thread.join(timeout_s + 0.5)
    return dict(outcome)


def _database_probe() -> dict[str, Any]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return {"reachable": True, "error": None}
    except DatabaseError as exc:
        return {"reachable": False, "error": _error_text(exc)}


def dead_letters_count() -> int | None:
    """Dead letters, counted by the intent app's selector (by dotted path); None if it cannot be imported."""
    path = getattr(settings, "ANALYTICS_DEAD_LETTERS_COUNT", DEAD_LETTERS_COUNT)
    try:
        return int(import_string(path)())
    except ImportError:
        logger.warning("Dead letters cannot be counted: %s cannot be imported", path)
        return None


def tracking_backlog_get(*, now) -> dict[str, Any] | None:
    """The outbox's backlog (depth, oldest and its age at `now`) from the intent app's selector (by dotted path)."""
    path = getattr(settings, "ANALYTICS_TRACKING_BACKLOG", TRACKING_BACKLOG)
    try:
        backlog = import_string(path)()
    except ImportError:
        logger.warning("The tracking backlog cannot be read: %s cannot be imported", path)
        return None
    oldest = backlog["oldest_pending_at"]
    return {
        "pending": backlog["pending"],
        "oldest_pending_at": _iso(oldest),
        "oldest_pending_age_s": None if oldest is None else round(max(0.0, (now - oldest).total_seconds()), 3),
        "max_age_s": settings.HEALTH_BACKLOG_MAX_AGE_S,
    }


def _lm_circuits() -> list[dict[str, Any]] | None:
    path = getattr(settings, "ANALYTICS_LM_CIRCUITS_STATE", LM_CIRCUITS_STATE)
    try:
        return list(import_string(path)())
    except ImportError:
        logger.warning("LM circuits cannot be read: %s cannot be imported", path)
        return None


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _mlflow_answer(probe, timeout_s: float) -> dict[str, Any]:
    if probe is None:
        return {"reachable": False, "experiment_present": False, "error": f"no answer within {timeout_s:g} s"}
    return {"reachable": probe.reachable, "experiment_present": probe.experiment_present, "error": probe.error}


def _sync_answer(state: SyncState | None, *, now) -> dict[str, Any]:
    """Where the mirror's sync stands: its last success, how late it is, and the newest run it mirrored."""
    interval_s = float(settings.ANALYTICS_SYNC_INTERVAL_S)
    last_succeeded_at = state.last_succeeded_at if state else None
    lag_s = None if last_succeeded_at is None else max(0.0, (now - last_succeeded_at).total_seconds())
    newest_run_lag = state.lag if state else None
    return {
        "last_succeeded_at": _iso(last_succeeded_at),
        "lag_s": None if lag_s is None else round(lag_s, 3),
        "interval_s": interval_s,
        "max_lag_s": LAG_INTERVALS * interval_s,
        "last_error": (state.last_error or None) if state else None,
        "mirrored_runs": state.mirrored_runs if state else 0,
        "newest_run_at": _iso(state.newest_start_time) if state else None,
        "newest_run_age_s": None if newest_run_lag is None else round(newest_run_lag.total_seconds(), 3),
    }


def _reasons(*, mlflow: dict, database: dict, sync: dict, dead_letters: int | None, broker: dict,
             lm_circuits: list | None, workers: dict | None, backlog: dict | None,
             monitors: dict | None = None) -> tuple[list[str], list[str]]:
    """(reasons to be down, reasons to be degraded): see `health_get`."""
    down, degraded = [], []
    if not mlflow["reachable"]:
        down.append("mlflow_unreachable")
    if not database["reachable"]:
        down.append("database_unreachable")
    if mlflow["reachable"] and not mlflow["experiment_present"]:
        degraded.append("experiment_missing")
    if database["reachable"]:
        if sync["lag_s"] is None:
            degraded.append("sync_never_succeeded")
        elif sync["lag_s"] > sync["max_lag_s"]:
            degraded.append("sync_lagging")
    if dead_letters:
        degraded.append("dead_letters")
    if not broker["reachable"]:
        degraded.append("broker_unreachable")
    if any(circuit["state"] != "closed" for circuit in lm_circuits or ()):
        degraded.append("lm_circuit_open")
    if workers is not None and not workers["alive"]:
        degraded.append("no_worker_alive")
    age = backlog and backlog["oldest_pending_age_s"]
    if age is not None and age > backlog["max_age_s"]:
        degraded.append("tracking_backlog")
    if monitors and monitors["alerting"]:
        degraded.append("monitor_alert")
    return down, degraded


def monitors_health() -> dict[str, Any]:
    """How many monitors are in each state, and the names of those in `alert`."""
    states: dict[str, int] = {}
    alerting = []
    for name, state in Monitor.objects.order_by("name").values_list("name", "state"):
        states[state] = states.get(state, 0) + 1
        if state == Monitor.State.ALERT:
            alerting.append(name)
    return {"states": states, "alerting": alerting}


def health_get(*, probe_timeout_s: float = PROBE_TIMEOUT_S) -> dict[str, Any]:
    """Everything the health endpoint reports, and the verdict:

    - `down` when MLflow or the database cannot be reached (nothing new can be recorded or read);
    - `degraded` when the last successful sync is older than `LAG_INTERVALS` × ANALYTICS_SYNC_INTERVAL_S
      (or there was none), when dead letters wait, when the broker cannot be reached, or when the
      detection experiment is missing or deleted, or when an LM circuit breaker of this process is open or
      half-open (detections skip the LM and the local backend answers), when no Celery worker has sent a
      heartbeat lately (`no_worker_alive`), or when the oldest detection waiting for MLflow is older than
      HEALTH_BACKLOG_MAX_AGE_S (`tracking_backlog`), or while a monitor is in `alert` (`monitor_alert`);
    - `ok` otherwise. `reasons` says which of these applied.

    MLflow and the broker are probed in threads of their own, each bounded by `probe_timeout_s`."""
    experiment_name = settings.MLFLOW_EXPERIMENT_NAME
    mlflow_modules_warm()  # before the budget starts (seconds, once a process)
    mlflow_result: dict[str, Any] = {}
    mlflow_thread = threading.Thread(
        target=lambda: mlflow_result.update(probe=mlflow_probe(experiment_name=experiment_name,
                                                               timeout_s=probe_timeout_s)),
        name="mlflow-health", daemon=True)
    mlflow_thread.start()
    broker = broker_probe(timeout_s=probe_timeout_s)
    database = _database_probe()
    state, dead_letters, workers, backlog, monitors = None, None, None, None, None
    now = timezone.now()
    if database["reachable"]:
        try:
            state = SyncState.objects.filter(experiment_name=experiment_name).first()
            dead_letters = dead_letters_count()
            workers = workers_alive()
            backlog = tracking_backlog_get(now=now)
            monitors = monitors_health()
        except DatabaseError as exc:
            database = {"reachable": False, "error": _error_text(exc)}
    mlflow_thread.join(probe_timeout_s + 1.0)
    mlflow = _mlflow_answer(mlflow_result.get("probe"), probe_timeout_s)
    sync = _sync_answer(state, now=now)
    lm_circuits = _lm_circuits()
    down, degraded = _reasons(mlflow=mlflow, database=database, sync=sync, dead_letters=dead_letters, broker=broker,
                              lm_circuits=lm_circuits, workers=workers, backlog=backlog, monitors=monitors)
    return {
        "status": STATUS_DOWN if down else STATUS_DEGRADED if degraded else STATUS_OK,
        "reasons": down + degraded,
        "checked_at": now.isoformat(),
        "tracking_uri": tracking_uri_display(),
        "experiment_name": experiment_name,
        "mlflow": mlflow,
        "sync": sync,
        "dead_letters": dead_letters,
        "broker": broker,
        "database": database,
        "lm_circuits": lm_circuits,
        "workers": workers,
        "tracking_backlog": backlog,
        "monitors": monitors,
    }
