"""Celery tasks of the analytics app: thin interfaces over the mirror's sync and the monitors."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from .boards.services import boards_triples_request
from .mirror.sources.base import MlflowSourceUnavailable
from .mirror.sync import SyncResult, runs_refresh, runs_sync
from .models import Monitor
from .monitors.delivery import alert_deliver
from .monitors.services import monitors_evaluate

# Worth another try: MLflow or the database unreachable for a moment. Anything else (a bug, a store
# MLflow refuses) fails the task; the next beat tick starts afresh either way.
TRANSIENT_ERRORS = (MlflowSourceUnavailable, OperationalError, InterfaceError, ConnectionError, TimeoutError)
MONITORS_EVALUATE = "analytics.tasks.monitors_evaluate_task"


def _counts(result: SyncResult) -> dict:
    return {"added": result.added, "updated": result.updated, "deleted": result.deleted,
            "skipped": result.skipped, "seconds": round(result.seconds, 3)}


def _evaluation_due(result: SyncResult) -> bool:
    """A sync that changed the mirror has the monitors evaluated, if there are any to evaluate (beat's entry pauses
    disabled ones): no task a sync where nobody watches."""
    return bool(result.added or result.updated or result.deleted) and Monitor.objects.filter(enabled=True).exists()


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True,
             autoretry_for=TRANSIENT_ERRORS, retry_backoff=2, retry_backoff_max=60, retry_jitter=True, max_retries=5)
def runs_sync_task(self, experiment_name: str | None = None, full: bool = False, triggered: bool = False) -> dict:
    """Periodic (beat entry `analytics-sync`): bring the mirror up to date. Idempotent: a redelivered or
    overlapping run is skipped by the experiment's lease or finds nothing new to write.

    Without an experiment name it syncs the detection experiment, then the (small) evaluation experiment
    (`ANALYTICS_EVALUATION_EXPERIMENT_NAME`), whose runs prompt-analysis shows. `triggered`: sent by a worker that
    has just logged runs (`intent.services.recording`): the detection experiment only, re-reading the last
    ANALYTICS_SYNC_TRIGGER_OVERLAP_S; held off by another sync, it tries again shortly (its runs must not wait for
    beat). A sync that changed the mirror has the monitors evaluated. A periodic one first lists the triples of
    dimensions the saved boards need (the sync builds them: `analytics.mirror.triples`)."""
    if triggered:
        result = runs_sync(experiment_name=settings.MLFLOW_EXPERIMENT_NAME,
                           overlap_s=settings.ANALYTICS_SYNC_TRIGGER_OVERLAP_S)
        if result.skipped:
            raise self.retry(countdown=settings.ANALYTICS_SYNC_TRIGGER_S, max_retries=3)
        if _evaluation_due(result):
            self.app.send_task(MONITORS_EVALUATE)
        return _counts(result)
    if experiment_name is not None:
        return _counts(runs_sync(experiment_name=experiment_name, full=full))
    boards_triples_request()  # what the saved widgets need, however the boards changed (their owner deleted, ...)
    detection = runs_sync(experiment_name=settings.MLFLOW_EXPERIMENT_NAME, full=full)
    if _evaluation_due(detection):
        self.app.send_task(MONITORS_EVALUATE)
    result = _counts(detection)
    evaluation = settings.ANALYTICS_EVALUATION_EXPERIMENT_NAME
    if evaluation and evaluation != settings.MLFLOW_EXPERIMENT_NAME:
        result["evaluation"] = _counts(runs_sync(experiment_name=evaluation, full=full))
    return result


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True, autoretry_for=TRANSIENT_ERRORS,
             retry_backoff=2, retry_backoff_max=60, retry_jitter=True, max_retries=5)
def runs_refresh_task(run_ids: list[str], experiment_name: str | None = None) -> dict:
    """Re-read these runs now (sent by name by the intent app after it wrote feedback on them): the mirror
    and the rollups of their days take the feedback in at once, however old the runs. Idempotent.

    If another sync holds the experiment, the task retries shortly: the refresh must not be lost, and the
    incremental sync only re-reads its overlap window."""
    result = runs_refresh(run_ids=run_ids, experiment_name=experiment_name)
    if result.skipped:
        raise runs_refresh_task.retry(countdown=5, max_retries=20)
    return _counts(result)


@shared_task(acks_late=True, ignore_result=True, autoretry_for=(OperationalError, InterfaceError), retry_backoff=2,
             max_retries=3)
def monitors_evaluate_task() -> dict:
    """Periodic (beat entry `monitors-evaluate`) and after each sync that changed the mirror: evaluate every
    enabled monitor once (`manage.py evaluate_monitors` does the same)."""
    result = monitors_evaluate()
    return {"evaluated": result.evaluated, "changed": result.changed, "seconds": round(result.seconds, 3)}


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True,
             autoretry_for=(OperationalError, InterfaceError), retry_backoff=2, max_retries=None)
def alert_deliver_task(self, alert_id: int) -> str:
    """Send an alert's notification to its monitor's channels; channels not reached are tried again
    MONITORS_DELIVERY_RETRIES times, with exponential backoff from MONITORS_DELIVERY_BACKOFF_S."""
    retries = self.request.retries or 0
    outcome = alert_deliver(alert_id=alert_id, final=retries >= settings.MONITORS_DELIVERY_RETRIES)
    if outcome.retry:
        raise self.retry(countdown=settings.MONITORS_DELIVERY_BACKOFF_S * 2 ** retries,
                         max_retries=settings.MONITORS_DELIVERY_RETRIES)
    return outcome.status
