"""Celery tasks of the analytics app: a thin interface over the mirror's sync."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from .mirror.sources.base import MlflowSourceUnavailable
from .mirror.sync import SyncResult, runs_refresh, runs_sync

# Worth another try: MLflow or the database unreachable for a moment. Anything else (a bug, a store
# MLflow refuses) fails the task; the next beat tick starts afresh either way.
TRANSIENT_ERRORS = (MlflowSourceUnavailable, OperationalError, InterfaceError, ConnectionError, TimeoutError)


def _counts(result: SyncResult) -> dict:
    return {"added": result.added, "updated": result.updated, "deleted": result.deleted,
            "skipped": result.skipped, "seconds": round(result.seconds, 3)}


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True, autoretry_for=TRANSIENT_ERRORS,
             retry_backoff=2, retry_backoff_max=60, retry_jitter=True, max_retries=5)
def runs_sync_task(experiment_name: str | None = None, full: bool = False) -> dict:
    """Periodic (beat entry `analytics-sync`): bring the mirror up to date. Idempotent: a redelivered or
    overlapping run is skipped by the experiment's lease or finds nothing new to write.

    Without an experiment name it syncs the detection experiment, then the (small) evaluation experiment
    (`ANALYTICS_EVALUATION_EXPERIMENT_NAME`), whose runs prompt-analysis shows."""
    if experiment_name is not None:
        return _counts(runs_sync(experiment_name=experiment_name, full=full))
    result = _counts(runs_sync(experiment_name=settings.MLFLOW_EXPERIMENT_NAME, full=full))
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
