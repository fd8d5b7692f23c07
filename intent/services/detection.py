"""Detecting an intent, and handing its record to tracking without waiting for MLflow."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ..detectors import VersionUnavailable, detector_for_version, detector_get
from ..dispatch import record_publisher, shadow_publisher
from ..experiments.assignment import NONE, Assignments, experiment_assign
from ..models import DetectionDetail, DetectionRecord
from ..program import Detection, DetectionInput
from ..redaction import message_redact
from ..review.details import detection_detail_build
from ..tracking import run_payload_build
from .prompt_versions import prompt_version_register

if TYPE_CHECKING:
    from ..program import IntentDetector

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectionResult:
    request_id: uuid.UUID
    detection: Detection
    experiment: str = ""  # the running A/B experiment that answered, and its arm
    variant: str = ""


def intent_detect(
    *, message: str, user_role: str = "", current_module: str = "", current_tab: str = "", user=None,
    subject_id: str = "", detector: IntentDetector | None = None, started_at_ms: int | None = None,
) -> DetectionResult:
    """Detect the message's intent and record the detection for tracking. `user`: who asked (they may give
    its feedback later). `subject_id`: whom a sticky experiment keeps on one arm (only its HMAC is kept).
    `detector` and `started_at_ms` are for traffic made up on purpose (`seed_demo_traffic`): another detector
    than the process's (no experiment then), a start time in the past."""
    started_at_ms = int(time.time() * 1000) if started_at_ms is None else started_at_ms
    request = DetectionInput(message=message, user_role=user_role, current_module=current_module,
                             current_tab=current_tab)
    request_id = uuid.uuid4()
    assignments = NONE
    if detector is None:
        assignments = experiment_assign(request_id=request_id, subject_id=subject_id, user_role=user_role,
                                        current_module=current_module)
        detector = _arm_detector(assignments)
        if detector is None:
            assignments = Assignments(shadows=assignments.shadows, subject_hash=assignments.subject_hash)
            detector = detector_get()
    prompt_version_register(detector=detector)  # once per detector: the version it reports is explained
    detection = detector.detect(request)
    ab = assignments.ab
    if settings.INTENT_TRACKING_ENABLED:
        user = user if user is not None and user.is_authenticated else None
        payload = run_payload_build(request_id=str(request_id), request=request, detection=detection,
                                    started_at_ms=started_at_ms,
                                    experiment=(ab.experiment, ab.variant) if ab else None,
                                    subject_hash=assignments.subject_hash)
        detection_record_create(
            request_id=request_id, payload=payload, user=user,
            detail=detection_detail_build(request_id=request_id, request=request, detection=detection,
                                          started_at_ms=started_at_ms, user=user, trace=payload.get("trace")),
        )
    if assignments.shadows:
        _shadows_submit(assignments, request_id=request_id, request=request, detection=detection,
                        started_at_ms=started_at_ms)
    return DetectionResult(request_id=request_id, detection=detection, experiment=ab.experiment if ab else "",
                           variant=ab.variant if ab else "")


def _arm_detector(assignments: Assignments) -> IntentDetector | None:
    """The detector of the request's A/B arm, or None (no experiment, or the arm cannot answer here: the request then
    leaves the experiment, answered by the process's detector, and a warning says why)."""
    if assignments.ab is None:
        return None
    try:
        return detector_for_version(assignments.ab.prompt_version)
    except VersionUnavailable as error:
        logger.warning("Experiment %s: arm %s cannot answer here: %s", assignments.ab.experiment,
                       assignments.ab.variant, error)
        return None


def _shadows_submit(assignments: Assignments, *, request_id: uuid.UUID, request: DetectionInput,
                    detection: Detection, started_at_ms: int) -> None:
    """Hand the shadow candidates' work to a worker once the request's transaction is over (never on the request's
    path: the publisher's thread sends it). The message goes redacted, as everything written is."""
    base = {
        "request_id": str(request_id), "started_at_ms": started_at_ms, "message": message_redact(request.message),
        "user_role": request.user_role, "current_module": request.current_module, "current_tab": request.current_tab,
        "live": {"intent": detection.intent, "confidence": detection.confidence, "status": detection.status,
                 "response_time_ms": detection.response_time_ms},
    }
    items = [base | {"experiment_id": shadow.experiment_id, "variant": shadow.variant,
                     "prompt_version": shadow.prompt_version} for shadow in assignments.shadows]
    transaction.on_commit(lambda: [shadow_publisher.submit(item) for item in items], robust=True)


def detection_record_create(*, request_id: uuid.UUID, payload: dict, user=None,
                            detail: DetectionDetail | None = None) -> DetectionRecord:
    """Write the record (the outbox row), and the detection's detail for reviewers when given, and once committed
    hand the record to Celery.

    The message is published by a background thread (`intent.dispatch`), so the request never waits
    on the broker; if the message never makes it, the row stays pending and the periodic flush sends
    it later. A record is never lost.
    """
    with transaction.atomic():
        record = DetectionRecord.objects.create(request_id=request_id, created_at=timezone.now(), payload=payload,
                                                user=user)
        if detail is not None:
            detail.save(force_insert=True)
        transaction.on_commit(lambda: record_publisher.submit(str(request_id)), robust=True)
    return record
