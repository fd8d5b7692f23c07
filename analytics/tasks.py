"""Celery tasks of the analytics app: a thin interface over the mirror's sync."""

from __future__ import annotations

from celery import shared_task
from django.db import InterfaceError, OperationalError

from .mlflow_source import MlflowSourceUnavailable
from .services import runs_sync

# Worth another try: MLflow or the database unreachable for a moment. Anything else (a bug, a store
# MLflow refuses) fails the task; the next beat tick starts afresh either way.
TRANSIENT_ERRORS = (MlflowSourceUnavailable, OperationalError, InterfaceError, ConnectionError, TimeoutError)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True, autoretry_for=TRANSIENT_ERRORS,
             retry_backoff=2, retry_backoff_max=60, retry_jitter=True, max_retries=5)
def runs_sync_task(experiment_name: str | None = None, full: bool = False) -> dict:
    """Periodic (beat entry `analytics-sync`): bring the mirror up to date. Idempotent: a redelivered or
    overlapping run is skipped by the experiment's lease or finds nothing new to write."""
    result = runs_sync(experiment_name=experiment_name, full=full)
    return {"added": result.added, "updated": result.updated, "deleted": result.deleted,
            "skipped": result.skipped, "seconds": round(result.seconds, 3)}
