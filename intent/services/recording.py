"""Turning detection records into MLflow runs: exactly one run per record, retried, never dropped.

A worker claims records with a lease (an atomic conditional UPDATE, so two workers never log the
same record at once on any database), logs their runs, and marks them logged. A failure releases the
lease for a retry; past the retry window the record becomes a dead letter, kept for replay.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from .. import tracking
from ..models import DetectionFeedback, DetectionRecord, PromptVersion

logger = logging.getLogger(__name__)


@dataclass
class RecordingOutcome:
    logged: list[str] = field(default_factory=list)
    retry: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    last_error: str = ""


def detection_records_log(*, request_ids: list[str]) -> RecordingOutcome:
    """Log the runs of these records: in one transaction where the store allows it, else one by one."""
    outcome = RecordingOutcome()
    try:
        prompt_versions_log()
    except Exception as exc:  # the detections matter more; versions are retried with the next batch
        logger.warning("Could not record prompt versions yet: %s", exc)
    records = outbox_claim(model=DetectionRecord, request_ids=request_ids)
    claimed = {str(record.request_id) for record in records}
    outcome.skipped = [request_id for request_id in request_ids if request_id not in claimed]
    if not records:
        return outcome
    try:
        bulk = tracking.bulk_store() is not None
        if bulk:
            result = tracking.runs_log_bulk(
                payloads=[record.payload for record in records],
                retried={str(record.request_id) for record in records if record.attempts > 1},
            )
    except Exception as exc:
        for record in records:
            getattr(outcome, _failed(record, exc)).append(str(record.request_id))
        outcome.last_error = _describe(exc)
        return outcome
    if bulk:
        written = [record for record in records if str(record.request_id) in result.run_ids]
        _logged(written, [result.run_ids[str(record.request_id)] for record in written])
        outcome.logged = [str(record.request_id) for record in written]
        records = [record for record in records if str(record.request_id) in result.client_made]
    for record in records:
        state, error = _log_one(record)
        getattr(outcome, state).append(str(record.request_id))
        outcome.last_error = error or outcome.last_error
    return outcome


def detection_record_log(*, request_id: str) -> tuple[str, str]:
    """Log one record's run. Returns (`logged` | `retry` | `dead` | `skipped`, error text)."""
    outcome = detection_records_log(request_ids=[request_id])
    for state in ("logged", "retry", "dead", "skipped"):
        if getattr(outcome, state):
            return state, outcome.last_error
    raise AssertionError("unreachable")


def outbox_claim(*, model: type[DetectionRecord] | type[DetectionFeedback], request_ids: list[str]) -> list:
    """Take a lease on the pending rows among these of an outbox model (detection records, feedback),
    atomically on any database: one conditional UPDATE, then the rows that carry this lease's token."""
    token = uuid.uuid4().hex
    now = timezone.now()
    (
        model.objects.filter(request_id__in=request_ids, state=model.State.PENDING)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(lease_until=now + timedelta(seconds=settings.TRACKING_LEASE_S), lease_token=token,
                attempts=F("attempts") + 1)
    )
    return list(model.objects.filter(lease_token=token, state=model.State.PENDING))


def _log_one(record: DetectionRecord) -> tuple[str, str]:
    """The client path: one run through MlflowClient, resuming a run an interrupted attempt left."""

    def run_created(run_id: str) -> None:
        DetectionRecord.objects.filter(pk=record.pk).update(mlflow_run_id=run_id)

    try:
        logged = tracking.run_log(
            payload=record.payload,
            known_run_id=record.mlflow_run_id,
            search_first=record.attempts > 1,  # an earlier attempt may have died after creating the run
            on_created=run_created,
        )
    except Exception as exc:
        return _failed(record, exc), _describe(exc)
    _logged([record], [logged.run_id])
    return "logged", ""


def _logged(records: list[DetectionRecord], run_ids: list[str]) -> None:
    now = timezone.now()
    for record, run_id in zip(records, run_ids, strict=True):
        record.state, record.mlflow_run_id, record.logged_at = DetectionRecord.State.LOGGED, run_id, now
        record.lease_until, record.lease_token, record.last_error = None, "", ""
    DetectionRecord.objects.bulk_update(
        records, ["state", "mlflow_run_id", "logged_at", "lease_until", "lease_token", "last_error"]
    )
    if records:
        from .feedback import feedback_queue_waiting

        feedback_queue_waiting(request_ids=[str(record.request_id) for record in records])


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


def _failed(record: DetectionRecord, exc: BaseException) -> str:
    """Release the record for a retry, or dead-letter it: MLflow refused it, or the window is over."""
    error = _describe(exc)
    window_start = record.replayed_at or record.created_at
    window_over = timezone.now() - window_start > timedelta(seconds=settings.TRACKING_RETRY_WINDOW_S)
    if isinstance(exc, tracking.TrackingPermanentError) or window_over:
        _dead(record, error)
        return "dead"
    DetectionRecord.objects.filter(pk=record.pk).update(lease_until=None, lease_token="", last_error=error)
    return "retry"


def _dead(record: DetectionRecord, error: str) -> None:
    logger.error("Detection %s is a dead letter after %s attempts: %s", record.request_id, record.attempts, error)
    DetectionRecord.objects.filter(pk=record.pk).update(
        state=DetectionRecord.State.DEAD, lease_until=None, lease_token="", last_error=error
    )


def detection_records_flush(*, older_than_s: float | None = None, batch_size: int = 200) -> int:
    """Send pending records that no worker holds (a lost message, a broker that was down) again,
    and forget logged records past their retention. Returns how many were sent."""
    from ..tasks import detections_track

    now = timezone.now()
    older_than = timedelta(seconds=settings.TRACKING_FLUSH_AFTER_S if older_than_s is None else older_than_s)
    pending = list(
        DetectionRecord.objects.filter(state=DetectionRecord.State.PENDING, created_at__lt=now - older_than)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .order_by("created_at")
        .values_list("request_id", flat=True)[: batch_size * 50]
    )
    for start in range(0, len(pending), batch_size):
        detections_track.delay([str(request_id) for request_id in pending[start : start + batch_size]])
    retention = timedelta(days=settings.TRACKING_RECORD_RETENTION_DAYS)
    DetectionRecord.objects.filter(state=DetectionRecord.State.LOGGED, logged_at__lt=now - retention).exclude(
        request_id__in=DetectionFeedback.objects.filter(state=DetectionFeedback.State.PENDING).values("request_id")
    ).delete()
    return len(pending)


def dead_letters_replay(*, request_ids: list[str] | None = None) -> int:
    """Put dead letters back in the queue, with a fresh retry window."""
    from ..tasks import detections_track

    dead = DetectionRecord.objects.filter(state=DetectionRecord.State.DEAD)
    if request_ids:
        dead = dead.filter(request_id__in=request_ids)
    ids = [str(request_id) for request_id in dead.values_list("request_id", flat=True)]
    dead.filter(request_id__in=ids).update(
        state=DetectionRecord.State.PENDING, replayed_at=timezone.now(), lease_until=None
    )
    for start in range(0, len(ids), 200):
        detections_track.delay(ids[start : start + 200])
    return len(ids)


def prompt_versions_log() -> int:
    """Record each prompt version not yet in MLflow (its full description as an artifact)."""
    count = 0
    for version in PromptVersion.objects.filter(mlflow_run_id=""):
        run_id = tracking.prompt_version_log(
            version=version.version, model_name=version.model_name, description=version.description
        )
        PromptVersion.objects.filter(pk=version.pk).update(mlflow_run_id=run_id)
        count += 1
    return count
