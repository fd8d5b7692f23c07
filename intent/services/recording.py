"""Turning detection records into MLflow runs: exactly one run per record, retried, never dropped.

A worker claims records from the outbox (`intent.outbox`), logs their runs (in one transaction into a database
store, else one by one through the client) and marks them logged; the feedback that waited for those runs is sent
then. A failure releases a record for a retry; past the retry window it becomes a dead letter, kept for replay.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from celery import current_app
from django.conf import settings
from django.utils import timezone

from .. import tracking
from ..models import DetectionFeedback, DetectionRecord
from ..outbox import (
    ANALYTICS_SYNC,
    BATCH_SIZE,
    DETECTIONS_TRACK,
    Delivery,
    OutboxOutcome,
    feedback_waiting_send,
    outbox_claim,
    outbox_claim_fresh,
    outbox_fail,
    outbox_flush,
    outbox_mark,
    outbox_renew,
    outbox_replay,
)
from .prompt_versions import prompt_versions_log

logger = logging.getLogger(__name__)


def detection_records_log(*, request_ids: list[str]) -> OutboxOutcome:
    """Log the runs of these records: in one transaction where the store allows it, else one by one."""
    outcome = OutboxOutcome()
    try:
        prompt_versions_log()
    except Exception as exc:  # the detections matter more; versions are retried with the next batch
        logger.warning("Could not record prompt versions yet: %s", exc)
    records = outbox_claim(model=DetectionRecord, request_ids=request_ids)
    claimed = {str(record.request_id) for record in records}
    for request_id in request_ids:
        if request_id not in claimed:
            outcome.add(request_id, Delivery.SKIPPED)
    bulk = tracking.bulk_store() is not None
    if not bulk and records:
        # The client path keeps runs in flight, but under steady traffic a message carries one or two ids: fill
        # the flight with records still waiting for their own message (those will find them taken), else two
        # worker processes would write two runs at a time whatever the backlog (the soak's steady phase).
        records += outbox_claim_fresh(model=DetectionRecord, limit=tracking.client_concurrency() - len(records))
    if not records:
        return outcome
    if bulk:
        records = _renewed(records, outcome)
    try:
        written = tracking.runs_log_bulk(
            payloads=[record.payload for record in records],
            retried={str(record.request_id) for record in records if record.attempts > 1},
        ) if bulk else None
    except Exception as exc:
        for record in records:
            outbox_fail(row=record, error=exc, window_start=_window_start(record), outcome=outcome)
        return outcome
    if written is not None:
        logged = [record for record in records if str(record.request_id) in written.run_ids]
        _logged(logged, [written.run_ids[str(record.request_id)] for record in logged], outcome,
                traced=written.traced)
        records = [record for record in records if str(record.request_id) in written.client_made]
    if records:
        _log_each(records, outcome)
    return outcome


def detection_record_log(*, request_id: str) -> tuple[Delivery, str]:
    """Log one record's run. Returns what became of it, and the error it met."""
    outcome = detection_records_log(request_ids=[request_id])
    return outcome.deliveries[request_id], outcome.last_error


def _log_each(records: list[DetectionRecord], outcome: OutboxOutcome) -> None:
    """The client path: one run at a time through MlflowClient (3 calls each), `tracking.client_concurrency()` runs
    in flight on threads (an http server's calls mostly wait). A chunk at a time: its leases renewed just before it
    is written, its records marked logged once it is. A run an interrupted attempt left is found by its request id
    (`search_first` on a retry) and completed, not made twice."""
    size = tracking.client_concurrency()
    with ThreadPoolExecutor(max_workers=size, thread_name_prefix="tracking") as pool:
        for start in range(0, len(records), size):
            chunk = _renewed(records[start:start + size], outcome)
            futures = [(record, pool.submit(tracking.run_log, payload=record.payload,
                                            known_run_id=record.mlflow_run_id, search_first=record.attempts > 1))
                       for record in chunk]
            logged, run_ids = [], []
            for record, future in futures:
                try:
                    run_ids.append(future.result().run_id)
                    logged.append(record)
                except Exception as exc:  # noqa: BLE001 - released for a retry, or a dead letter
                    outbox_fail(row=record, error=exc, window_start=_window_start(record), outcome=outcome)
            _logged(logged, run_ids, outcome)


def _renewed(records: list[DetectionRecord], outcome: OutboxOutcome) -> list[DetectionRecord]:
    """The records whose lease this worker still holds (renewed now); the others are another worker's."""
    held = outbox_renew(rows=records)
    kept = {record.pk for record in held}
    for record in records:
        if record.pk not in kept:
            outcome.add(str(record.request_id), Delivery.SKIPPED)
    return held


def _logged(records: list[DetectionRecord], run_ids: list[str], outcome: OutboxOutcome,
            traced: set[str] = frozenset()) -> None:
    """Mark these records logged (their runs are in MLflow), write the traces not written with them (`traced`: the
    bulk writer's), and send what waited for them."""
    now = timezone.now()
    for record, run_id in zip(records, run_ids, strict=True):
        record.mlflow_run_id = run_id
        outcome.add(str(record.request_id), Delivery.LOGGED)
    # the lease token stays on a logged row (never claimed again): the mark is conditional on it
    outbox_mark(rows=records, per_row=["mlflow_run_id"], state=DetectionRecord.State.LOGGED, logged_at=now,
                lease_until=None, last_error="")
    for record in records:
        record.state, record.logged_at, record.lease_until, record.last_error = (DetectionRecord.State.LOGGED, now,
                                                                                 None, "")
    if records:
        _traces_write([(record, run_id) for record, run_id in zip(records, run_ids, strict=True)
                       if str(record.request_id) not in traced])
        feedback_waiting_send(request_ids=[str(record.request_id) for record in records])
        mirror_sync_request()


def _traces_write(logged: list[tuple[DetectionRecord, str]]) -> None:
    """The logged detections' traces (those sampled), beside their runs (the client path; the bulk writer puts them in
    the runs' transaction). Best effort: a trace that cannot be written is logged as a warning, never holds a run
    back (its run, what every report reads, is in MLflow already)."""
    try:
        tracking.traces_log(logged=[(record.payload, run_id) for record, run_id in logged])
    except Exception:  # noqa: BLE001 - diagnostics only: the runs stand
        logger.warning("Could not write the traces of %d detection(s)", len(logged), exc_info=True)


def mirror_sync_request() -> None:
    """Runs were just logged: ask analytics for a sync of the detection experiment so that they show in its
    reports within seconds (by task name). Debounced: the first batch of a period of ANALYTICS_SYNC_TRIGGER_S sends
    a sync due at the period's end, which covers every batch logged meanwhile; later batches send nothing. The
    period is shared through the cache (one per process with the local-memory cache: a few more syncs, which the
    sync's lease serialises). Best effort: beat's sync comes anyway."""
    from django.core.cache import cache

    period = settings.ANALYTICS_SYNC_TRIGGER_S
    if period <= 0:
        return
    try:
        if cache.add("intent:mirror-sync-requested", 1, timeout=period):
            current_app.send_task(ANALYTICS_SYNC, kwargs={"triggered": True}, countdown=period)
    except Exception:  # noqa: BLE001 - the broker or cache away: beat's sync still comes
        logger.warning("Could not ask analytics for a sync", exc_info=True)


def _window_start(record: DetectionRecord) -> datetime:
    """A record is retried for TRACKING_RETRY_WINDOW_S from its detection, or from its replay."""
    return record.replayed_at or record.created_at


def detection_records_flush(*, older_than_s: float | None = None, batch_size: int = BATCH_SIZE) -> int:
    """Send pending records that no worker holds (a lost message, a broker that was down) again,
    and forget logged records past their retention. Returns how many were sent."""
    sent = outbox_flush(rows=DetectionRecord.objects.all(), task=DETECTIONS_TRACK, age_field="created_at",
                        older_than_s=older_than_s, batch_size=batch_size)
    retention = timedelta(days=settings.TRACKING_RECORD_RETENTION_DAYS)
    DetectionRecord.objects.filter(
        state=DetectionRecord.State.LOGGED, logged_at__lt=timezone.now() - retention
    ).exclude(  # a feedback waiting for its record keeps it
        request_id__in=DetectionFeedback.objects.filter(state=DetectionFeedback.State.PENDING).values("request_id")
    ).delete()
    return sent


def detection_records_replay(*, request_ids: list[str] | None = None) -> int:
    """Put dead letters (all, or these) back in the queue, with a fresh retry window."""
    return outbox_replay(model=DetectionRecord, request_ids=request_ids, task=DETECTIONS_TRACK, window_field="replayed_at")
