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

from ..detectors import detector_get
from ..dispatch import record_publisher
from ..models import DetectionDetail, DetectionRecord
from ..program import Detection, DetectionInput
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


def intent_detect(
    *, message: str, user_role: str = "", current_module: str = "", current_tab: str = "", user=None,
    detector: IntentDetector | None = None, started_at_ms: int | None = None,
) -> DetectionResult:
    """Detect the message's intent and record the detection for tracking. `user`: who asked (they may give
    its feedback later). `detector` and `started_at_ms` are for traffic made up on purpose (`seed_demo_traffic`):
    another detector than the process's, a start time in the past."""
    started_at_ms = int(time.time() * 1000) if started_at_ms is None else started_at_ms
    request = DetectionInput(message=message, user_role=user_role, current_module=current_module,
                             current_tab=current_tab)
    detector = detector or detector_get()
    prompt_version_register(detector=detector)  # once per detector: the version it reports is explained
    detection = detector.detect(request)
    request_id = uuid.uuid4()
    if settings.INTENT_TRACKING_ENABLED:
        user = user if user is not None and user.is_authenticated else None
        payload = run_payload_build(request_id=str(request_id), request=request, detection=detection,
                                    started_at_ms=started_at_ms)
        detection_record_create(
            request_id=request_id, payload=payload, user=user,
            detail=detection_detail_build(request_id=request_id, request=request, detection=detection,
                                          started_at_ms=started_at_ms, user=user, trace=payload.get("trace")),
        )
    return DetectionResult(request_id=request_id, detection=detection)


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
