"""Users' feedback on detections: stored with the request, written to the detection's MLflow run by a worker.

The request path only writes a `DetectionFeedback` row (the outbox, `intent.outbox`) and, after commit, queues
`feedback_track`. The worker writes contract B on the detection's run (tag `expected_intent`, metric
`is_correct`, tag `feedback_comment`), then asks analytics to re-read that run by task name. A feedback
whose detection run is not logged yet waits: logging the detection sends it (`feedback_waiting_send`),
and the periodic flush re-sends what a lost message left pending.
"""

from __future__ import annotations

import logging
import uuid

from celery import current_app
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from intentsite import contract
from intentsite.exceptions import NotFound

from .. import tracking
from ..models import DetectionDetail, DetectionFeedback, DetectionLabel, DetectionRecord
from ..outbox import (
    ANALYTICS_REFRESH,
    BATCH_SIZE,
    FEEDBACK_TRACK,
    Delivery,
    OutboxOutcome,
    outbox_claim,
    outbox_fail,
    outbox_flush,
    outbox_release,
    outbox_replay,
    task_send,
)
from ..redaction import message_redact

logger = logging.getLogger(__name__)


class DetectionNotFound(NotFound):
    """No detection has this request id (or its record is past retention, or it is someone else's)."""


def detection_feedback_create(
    *, request_id: uuid.UUID, expected_intent: str, comment: str = "", user=None
) -> DetectionFeedback:
    """Record (or replace: the latest wins) a label on one detection, keep it in the history with its author,
    and queue its MLflow write. Only the user who asked for the detection, or a user with the
    `intent.label_detections` permission (reviewers), may label it; to anyone else the detection does not exist
    (`DetectionNotFound`, the same answer as for an unknown id). The comment is redacted before it is stored."""
    author = user if user is not None and user.is_authenticated else None
    with transaction.atomic():
        detected_intent, owner_id = _detection_of(request_id)
        if detected_intent is None or not _may_label(author, owner_id=owner_id):
            raise DetectionNotFound(f"No detection with request_id {request_id}")
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
        transaction.on_commit(lambda: task_send(name=FEEDBACK_TRACK, args=[[str(request_id)]]), robust=True)
    return feedback


def _detection_of(request_id: uuid.UUID) -> tuple[str | None, int | None]:
    """The detected intent and the asker of a detection: from its record while it is kept
    (TRACKING_RECORD_RETENTION_DAYS), then from its stored detail (ANALYTICS_RAW_RETENTION_DAYS)."""
    record = DetectionRecord.objects.filter(request_id=request_id).values("payload", "user_id").first()
    if record is not None:
        return record["payload"]["tags"][contract.DETECTED_INTENT], record["user_id"]
    detail = DetectionDetail.objects.filter(request_id=request_id).values("detected_intent", "user_id").first()
    if detail is not None:
        return detail["detected_intent"], detail["user_id"]
    return None, None


def _may_label(user, *, owner_id: int | None) -> bool:
    if user is None:
        return False
    return (owner_id is not None and user.pk == owner_id) or user.has_perm("intent.label_detections")


def detection_feedback_log(*, request_ids: list[str]) -> OutboxOutcome:
    """Write these feedback rows to their detections' runs (idempotent), then ask analytics to re-read them."""
    claimed = outbox_claim(model=DetectionFeedback, request_ids=request_ids)
    claimed_ids = {str(feedback.request_id) for feedback in claimed}
    outcome = _write(claimed)
    for request_id in request_ids:
        if request_id not in claimed_ids:
            outcome.add(request_id, Delivery.SKIPPED)
    return outcome


def _write(claimed: list[DetectionFeedback]) -> OutboxOutcome:
    """Write claimed feedback on their detections' runs; ask analytics to re-read the runs written."""
    outcome = OutboxOutcome()
    records = {
        str(record.request_id): record
        for record in DetectionRecord.objects.filter(request_id__in=[feedback.request_id for feedback in claimed])
        .only("request_id", "state", "mlflow_run_id", "logged_at")
    }
    written = [_write_one(feedback, records.get(str(feedback.request_id)), outcome) for feedback in claimed]
    refreshed = [run_id for run_id in written if run_id]
    if refreshed:
        analytics_refresh_request(run_ids=refreshed)
    return outcome


def _write_one(feedback: DetectionFeedback, record: DetectionRecord | None, outcome: OutboxOutcome) -> str | None:
    """Write one feedback on its detection's run; the run's id when it is marked logged."""
    request_id = str(feedback.request_id)
    run_id = feedback.mlflow_run_id
    if not run_id and record is not None and record.state == DetectionRecord.State.LOGGED:
        run_id = record.mlflow_run_id
    # A record leaves once its run is logged and TRACKING_RECORD_RETENTION_DAYS have passed; its detail stays longer:
    # the run is then found by its request id.
    past_retention = (not run_id and record is None
                      and DetectionDetail.objects.filter(request_id=feedback.request_id).exists())
    if not run_id and not past_retention:  # its detection's run is not logged yet: logging it sends this again
        outbox_release(row=feedback)
        outcome.add(request_id, Delivery.WAITING)
        return None
    try:
        if past_retention:
            run_id = tracking.run_id_find(request_id=request_id)
            if not run_id:
                raise tracking.TrackingPermanentError(f"No MLflow run has request_id {request_id}")
        tracking.run_feedback_log(
            run_id=run_id, expected_intent=feedback.expected_intent, is_correct=feedback.is_correct,
            comment=feedback.comment, timestamp_ms=int(feedback.updated_at.timestamp() * 1000),
        )
    except Exception as exc:
        # retried for TRACKING_RETRY_WINDOW_S from the feedback, or from its run's logging if that came later
        window_start = max(feedback.updated_at, (record.logged_at if record else None) or feedback.updated_at)
        outbox_fail(row=feedback, error=exc, window_start=window_start, outcome=outcome)
        return None
    _trace_feedback_write(feedback)
    done = DetectionFeedback.objects.filter(
        pk=feedback.pk, lease_token=feedback.lease_token, revision=feedback.revision
    ).update(state=DetectionFeedback.State.LOGGED, mlflow_run_id=run_id, logged_at=timezone.now(),
             lease_until=None, lease_token="", last_error="")
    if not done:  # a newer feedback arrived meanwhile: write that one next
        DetectionFeedback.objects.filter(pk=feedback.pk).update(mlflow_run_id=run_id)
        outbox_release(row=feedback)
        outcome.add(request_id, Delivery.RETRY)
        return None
    outcome.add(request_id, Delivery.LOGGED)
    return run_id


def _trace_feedback_write(feedback: DetectionFeedback) -> None:
    """The feedback as assessments on its detection's trace, when it has one. Best effort, as traces are."""
    try:
        tracking.trace_feedback_log(request_id=str(feedback.request_id), expected_intent=feedback.expected_intent,
                                    is_correct=feedback.is_correct, comment=feedback.comment,
                                    author=feedback.user.get_username() if feedback.user_id else "")
    except Exception:  # noqa: BLE001 - diagnostics only: the run has the feedback
        logger.warning("Could not write feedback on the trace of %s", feedback.request_id, exc_info=True)


def analytics_refresh_request(*, run_ids: list[str]) -> None:
    """Ask analytics to re-read these runs now (by task name: no import across apps). Best effort: the
    feedback is in MLflow already, and the periodic sync reads it anyway."""
    try:
        current_app.send_task(ANALYTICS_REFRESH, kwargs={"run_ids": run_ids})
    except Exception:  # noqa: BLE001 - the broker being down must not undo a logged feedback
        logger.warning("Could not ask analytics to refresh %s run(s)", len(run_ids), exc_info=True)


def detection_feedback_flush(*, older_than_s: float | None = None, batch_size: int = BATCH_SIZE) -> int:
    """Re-send pending feedback that no worker holds and whose detection run is logged (a lost message,
    a broker that was down). Returns how many were sent."""
    logged = DetectionRecord.objects.filter(state=DetectionRecord.State.LOGGED).values("request_id")
    return outbox_flush(
        rows=DetectionFeedback.objects.filter(Q(request_id__in=logged) | ~Q(mlflow_run_id="")),
        task=FEEDBACK_TRACK, age_field="updated_at", older_than_s=older_than_s, batch_size=batch_size,
    )


def detection_feedback_replay(*, request_ids: list[str] | None = None) -> int:
    """Put dead feedback (all, or these) back in the queue, with a fresh retry window."""
    return outbox_replay(model=DetectionFeedback, request_ids=request_ids, task=FEEDBACK_TRACK, window_field="updated_at")
