"""Celery tasks of the intent app: thin interfaces over the tracking, gap-mining and retention services."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from .gaps.services import MessagesNotStored, gaps_mine
from .outbox import DETECTIONS_TRACK, FEEDBACK_TRACK, OutboxOutcome
from .services import detection_feedback_flush, detection_feedback_log, detection_records_flush, detection_records_log
from .services.retention import expired_data_purge


class TrackingUnavailable(Exception):
    """MLflow could not take some rows now; the task is retried with backoff."""


# Idempotent (the outbox's lease and the run ids), so redelivered and retried freely: exponential backoff capped at
# TRACKING_RETRY_BACKOFF_MAX_S (whole seconds: Celery's jitter draws an integer), with jitter, for as long as rows
# want a retry. A row's retry window, not a retry count, decides when it becomes a dead letter. A retry sends the
# whole batch again: the rows logged or dead since are skipped by the claim. The app's database gone for a moment
# (a claim or a mark on a dropped connection) is retried the same way, not left to the flush a minute later.
TRACKED = {
    "acks_late": True, "reject_on_worker_lost": True, "ignore_result": True,
    "autoretry_for": (TrackingUnavailable, OperationalError, InterfaceError), "retry_backoff": True,
    "retry_backoff_max": max(1, round(settings.TRACKING_RETRY_BACKOFF_MAX_S)), "retry_jitter": True,
    "max_retries": None,
}


def _counts(outcome: OutboxOutcome) -> dict[str, int]:
    if outcome.retry:
        raise TrackingUnavailable(outcome.last_error or f"{len(outcome.retry)} row(s) to retry")
    return outcome.counts()


@shared_task(name=DETECTIONS_TRACK, **TRACKED)
def detections_track(request_ids: list[str]) -> dict[str, int]:
    """Log the runs of these detection records (idempotent: a redelivery logs nothing twice)."""
    return _counts(detection_records_log(request_ids=request_ids))


@shared_task(name=FEEDBACK_TRACK, **TRACKED)
def feedback_track(request_ids: list[str]) -> dict[str, int]:
    """Write these feedback rows to their detections' MLflow runs (idempotent)."""
    return _counts(detection_feedback_log(request_ids=request_ids))


@shared_task(acks_late=True, ignore_result=True)
def gaps_mine_task(days: int | None = None) -> int | None:
    """Nightly (beat) and on demand (`POST /api/analytics/mlflow/gaps/mine`): template-gap mining over the last
    `days` (GAPS_DAYS) days. Returns the mining's id (None without stored messages)."""
    try:
        return gaps_mine(days=days or settings.GAPS_DAYS).pk
    except MessagesNotStored:
        return None


@shared_task(acks_late=True, ignore_result=True)
def expired_data_purge_task() -> dict[str, int]:
    """Daily (beat): remove what is past its retention (`intent.services.retention`)."""
    return expired_data_purge()


@shared_task(acks_late=True, ignore_result=True)
def detections_flush() -> int:
    """Periodic: re-send pending records and feedback whose message was lost; prune old logged records."""
    return detection_records_flush() + detection_feedback_flush()
