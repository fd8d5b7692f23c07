"""Celery tasks of the intent app: thin interfaces over the tracking, gap-mining, retention and experiments' services."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from .experiments.evaluation import experiment_track, experiments_evaluate
from .experiments.notify import NotificationFailed, experiment_notify
from .experiments.shadow import shadow_detections_run
from .gaps.services import MessagesNotStored, gaps_mine
from .models import Experiment
from .outbox import (
    DETECTIONS_TRACK,
    EXPERIMENT_NOTIFY,
    EXPERIMENT_TRACK,
    FEEDBACK_TRACK,
    REGISTRY_SYNC,
    SHADOW_DETECT,
    OutboxOutcome,
)
from .services import detection_feedback_flush, detection_feedback_log, detection_records_flush, detection_records_log
from .services.prompt_versions import prompt_registry_sync
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


@shared_task(name=SHADOW_DETECT, acks_late=True, ignore_result=True,
             autoretry_for=(OperationalError, InterfaceError), retry_backoff=2, max_retries=5)
def shadow_detect_task(items: list[dict]) -> int:
    """Shadow candidates answer these live requests in the background (`intent.experiments.shadow`)."""
    return shadow_detections_run(items=items)


@shared_task(acks_late=True, ignore_result=True, autoretry_for=(OperationalError, InterfaceError), retry_backoff=2,
             max_retries=3)
def experiments_evaluate_task() -> dict:
    """Beat: each running experiment's guardrails (rollback) and fixed-horizon decision, and its MLflow run."""
    outcome = experiments_evaluate()
    return {"evaluated": outcome.evaluated, "rolled_back": outcome.rolled_back, "decided": outcome.decided}


@shared_task(name=EXPERIMENT_TRACK, acks_late=True, ignore_result=True, autoretry_for=(Exception,), retry_backoff=5,
             max_retries=5)
def experiment_track_task(experiment_id: int) -> str:
    """An experiment's run in MLflow's `intent_experiments`, after it started or ended."""
    experiment = Experiment.objects.filter(pk=experiment_id).first()
    return experiment_track(experiment=experiment) if experiment is not None else ""


@shared_task(name=EXPERIMENT_NOTIFY, acks_late=True, ignore_result=True, autoretry_for=(NotificationFailed,),
             retry_backoff=max(1, round(settings.MONITORS_DELIVERY_BACKOFF_S)),
             max_retries=settings.MONITORS_DELIVERY_RETRIES)
def experiment_notify_task(experiment_id: int) -> dict:
    """Tell an experiment's channels it was rolled back or decided (retried for the channels that failed)."""
    return experiment_notify(experiment_id=experiment_id)


@shared_task(name=REGISTRY_SYNC, acks_late=True, ignore_result=True, autoretry_for=(Exception,), retry_backoff=5,
             max_retries=5)
def prompt_registry_sync_task() -> dict:
    """Move MLflow's registry aliases (`production`, `candidate`) to what answers now."""
    return prompt_registry_sync()
