"""Users' feedback on detections: stored with the request, written to the detection's MLflow run by a worker.

The request path only writes a `DetectionFeedback` row (the outbox) and, after commit, queues
`feedback_track`. The worker writes contract B on the detection's run (tag `expected_intent`, metric
`is_correct`, tag `feedback_comment`), then asks analytics to re-read that run by task name. A feedback
whose detection run is not logged yet waits: logging the detection queues it (`feedback_queue_waiting`),
and the periodic flush re-sends what a lost message left pending.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from intentsite import contract

from .. import tracking
from ..models import DetectionFeedback, DetectionLabel, DetectionRecord
from ..redaction import message_redact
from .recording import outbox_claim

logger = logging.getLogger(__name__)

ANALYTICS_REFRESH_TASK = "analytics.tasks.runs_refresh_task"


class DetectionNotFound(LookupError):
    """No detection has this request id (or its record is past retention)."""


def detection_feedback_create(
    *, request_id: uuid.UUID, expected_intent: str, comment: str = "", user=None
) -> DetectionFeedback:
    """Record (or replace: the latest wins) a label on one detection, keep it in the history with its author,
    and queue its MLflow write. Only the user who asked for the detection, or a user with the
    `intent.label_detections` permission (reviewers), may label it; to anyone else the detection does not exist
    (`DetectionNotFound`, the same answer as for an unknown id). The comment is redacted before it is stored."""
    author = user if user is not None and user.is_authenticated else None
    with transaction.atomic():
        record = DetectionRecord.objects.filter(request_id=request_id).values("payload", "user_id").first()
        if record is None or not _may_label(author, owner_id=record["user_id"]):
            raise DetectionNotFound(f"No detection with request_id {request_id}")
        detected_intent = record["payload"]["tags"][contract.DETECTED_INTENT]
        values = {
            "detected_intent": detected_intent,
            "expected_intent": expected_intent,
            "is_correct": expected_intent == detected_intent,
            "comment": message_redact(comment)[: contract.FEEDBACK_COMMENT_MAX],
            "user": author,
        }
        DetectionLabel.objects.create(request_id=request_id, expected_intent=expected_intent,
                                      is_correct=values["is_correct"], comment=values["comment"], user=author)
        feedback, created = DetectionFeedback.objects.get_or_create(request_id=request_id, defaults=values)
        if not created:
            # Back to pending with a new revision; a worker holding the old revision keeps its lease and,
            # seeing the revision changed, releases it for a retry that writes this one.
            DetectionFeedback.objects.filter(pk=feedback.pk).update(
                **values, revision=F("revision") + 1, state=DetectionFeedback.State.PENDING, attempts=0,
                last_error="", logged_at=None, updated_at=timezone.now(),
            )
            feedback.refresh_from_db()
        transaction.on_commit(lambda: _queue([str(request_id)]), robust=True)
    return feedback


def _may_label(user, *, owner_id: int | None) -> bool:
    if user is None:
        return False
    return (owner_id is not None and user.pk == owner_id) or user.has_perm("intent.label_detections")


def _queue(request_ids: list[str]) -> None:
    from ..tasks import feedback_track

    feedback_track.delay(request_ids)


@dataclass
class FeedbackOutcome:
    logged: list[str] = field(default_factory=list)
    retry: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # the detection's run is not logged yet
    dead: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    last_error: str = ""


def detection_feedback_log(*, request_ids: list[str]) -> FeedbackOutcome:
    """Write these feedback rows to their detections' runs (idempotent), then ask analytics to re-read them."""
    claimed = outbox_claim(model=DetectionFeedback, request_ids=request_ids)
    claimed_ids = {str(feedback.request_id) for feedback in claimed}
    outcome = _write(claimed)
    outcome.skipped = [request_id for request_id in request_ids if request_id not in claimed_ids]
    return outcome


def _write(claimed: list[DetectionFeedback]) -> FeedbackOutcome:
    outcome = FeedbackOutcome()
    claimed_ids = {str(feedback.request_id) for feedback in claimed}
    records = {
        str(record.request_id): record
        for record in DetectionRecord.objects.filter(request_id__in=claimed_ids).only(
            "request_id", "state", "mlflow_run_id", "logged_at")
    }
    refreshed: list[str] = []
    for feedback in claimed:
        request_id = str(feedback.request_id)
        record = records.get(request_id)
        run_id = feedback.mlflow_run_id
        if not run_id and record is not None and record.state == DetectionRecord.State.LOGGED:
            run_id = record.mlflow_run_id
        if not run_id:
            _release(feedback)
            outcome.waiting.append(request_id)
            continue
        try:
            tracking.run_feedback_log(
                run_id=run_id, expected_intent=feedback.expected_intent, is_correct=feedback.is_correct,
                comment=feedback.comment, timestamp_ms=int(feedback.updated_at.timestamp() * 1000),
            )
        except Exception as exc:
            window_start = max(feedback.updated_at, (record.logged_at if record else None) or feedback.updated_at)
            getattr(outcome, _failed(feedback, exc, window_start=window_start)).append(request_id)
            outcome.last_error = _describe(exc)
            continue
        done = DetectionFeedback.objects.filter(
            pk=feedback.pk, lease_token=feedback.lease_token, revision=feedback.revision
        ).update(state=DetectionFeedback.State.LOGGED, mlflow_run_id=run_id, logged_at=timezone.now(),
                 lease_until=None, lease_token="", last_error="")
        if done:
            outcome.logged.append(request_id)
            refreshed.append(run_id)
        else:  # a newer feedback arrived meanwhile: write that one next
            DetectionFeedback.objects.filter(pk=feedback.pk).update(mlflow_run_id=run_id)
            _release(feedback)
            outcome.retry.append(request_id)
    if refreshed:
        analytics_refresh_request(run_ids=refreshed)
    return outcome


def analytics_refresh_request(*, run_ids: list[str]) -> None:
    """Ask analytics to re-read these runs now (by task name: no import across apps). Best effort: the
    feedback is in MLflow already, and the periodic sync reads it anyway."""
    from celery import current_app

    try:
        current_app.send_task(ANALYTICS_REFRESH_TASK, kwargs={"run_ids": run_ids})
    except Exception:  # noqa: BLE001 - the broker being down must not undo a logged feedback
        logger.warning("Could not ask analytics to refresh %s run(s)", len(run_ids), exc_info=True)


def _release(feedback: DetectionFeedback, **fields) -> None:
    DetectionFeedback.objects.filter(pk=feedback.pk, lease_token=feedback.lease_token).update(
        lease_until=None, lease_token="", **fields)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


def _failed(feedback: DetectionFeedback, exc: BaseException, *, window_start) -> str:
    error = _describe(exc)
    window_over = timezone.now() - window_start > timedelta(seconds=settings.TRACKING_RETRY_WINDOW_S)
    if isinstance(exc, tracking.TrackingPermanentError) or window_over:
        logger.error("Feedback on %s is a dead letter after %s attempts: %s", feedback.request_id,
                     feedback.attempts, error)
        _release(feedback, state=DetectionFeedback.State.DEAD, last_error=error)
        return "dead"
    _release(feedback, last_error=error)
    return "retry"


def feedback_queue_waiting(*, request_ids: list[str]) -> int:
    """Queue the pending feedback of detections whose runs were just logged."""
    waiting = [
        str(request_id)
        for request_id in DetectionFeedback.objects.filter(
            request_id__in=request_ids, state=DetectionFeedback.State.PENDING
        ).values_list("request_id", flat=True)
    ]
    if waiting:
        try:
            _queue(waiting)
        except Exception:  # noqa: BLE001 - the flush re-sends them
            logger.warning("Could not queue %s feedback(s); the flush will", len(waiting), exc_info=True)
    return len(waiting)


def detection_feedback_flush(*, older_than_s: float | None = None, batch_size: int = 200) -> int:
    """Re-send pending feedback that no worker holds and whose detection run is logged (a lost message,
    a broker that was down). Returns how many were sent."""
    now = timezone.now()
    older_than = timedelta(seconds=settings.TRACKING_FLUSH_AFTER_S if older_than_s is None else older_than_s)
    logged = DetectionRecord.objects.filter(state=DetectionRecord.State.LOGGED).values("request_id")
    pending = [
        str(request_id)
        for request_id in DetectionFeedback.objects.filter(
            state=DetectionFeedback.State.PENDING, updated_at__lt=now - older_than
        )
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .filter(Q(request_id__in=logged) | ~Q(mlflow_run_id=""))
        .order_by("updated_at")
        .values_list("request_id", flat=True)[: batch_size * 50]
    ]
    for start in range(0, len(pending), batch_size):
        _queue(pending[start : start + batch_size])
    return len(pending)


def detection_feedback_replay(*, request_ids: list[str] | None = None) -> int:
    """Put dead feedback back in the queue, with a fresh retry window."""
    dead = DetectionFeedback.objects.filter(state=DetectionFeedback.State.DEAD)
    if request_ids is not None:
        dead = dead.filter(request_id__in=request_ids)
    ids = [str(request_id) for request_id in dead.values_list("request_id", flat=True)]
    DetectionFeedback.objects.filter(request_id__in=ids).update(
        state=DetectionFeedback.State.PENDING, lease_until=None, lease_token="", updated_at=timezone.now())
    for start in range(0, len(ids), 200):
        _queue(ids[start : start + 200])
    return len(ids)
