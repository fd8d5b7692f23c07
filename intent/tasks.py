"""Celery tasks of the intent app: thin interfaces over the recording services."""

from __future__ import annotations

import random

from celery import shared_task
from django.conf import settings

from .services import detection_feedback_flush, detection_feedback_log, detection_records_flush, detection_records_log


class TrackingUnavailable(Exception):
    """MLflow could not take the runs now; the task is retried with backoff."""


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None, ignore_result=True)
def detections_track(self, request_ids: list[str]) -> dict[str, int]:
    """Log the runs of these detection records (idempotent: a redelivery logs nothing twice)."""
    outcome = detection_records_log(request_ids=request_ids)
    if outcome.retry:
        # Exponential backoff, capped at TRACKING_RETRY_BACKOFF_MAX_S, with jitter; the record's retry window (not a
        # retry count) decides when it becomes a dead letter.
        countdown = min(settings.TRACKING_RETRY_BACKOFF_MAX_S, 2 ** min(self.request.retries, 10)) + random.uniform(0, 1)
        raise self.retry(args=[outcome.retry], countdown=countdown, exc=TrackingUnavailable(outcome.last_error))
    return {"logged": len(outcome.logged), "dead": len(outcome.dead), "skipped": len(outcome.skipped)}


@shared_task(acks_late=True, ignore_result=True)
def detections_flush() -> int:
    """Periodic: re-send pending records and feedback whose message was lost; prune old logged records."""
    return detection_records_flush() + detection_feedback_flush()


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None, ignore_result=True)
def feedback_track(self, request_ids: list[str]) -> dict[str, int]:
    """Write these feedback rows to their detections' MLflow runs (idempotent)."""
    outcome = detection_feedback_log(request_ids=request_ids)
    if outcome.retry:
        countdown = min(settings.TRACKING_RETRY_BACKOFF_MAX_S, 2 ** min(self.request.retries, 10)) + random.uniform(0, 1)
        raise self.retry(args=[outcome.retry], countdown=countdown, exc=TrackingUnavailable(outcome.last_error))
    return {"logged": len(outcome.logged), "waiting": len(outcome.waiting), "dead": len(outcome.dead),
            "skipped": len(outcome.skipped)}
