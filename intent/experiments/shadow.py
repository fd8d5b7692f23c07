"""A shadow candidate answering live requests in the background: a worker runs the candidate's detector on the
request (its message redacted, as everything written is), beside the live answer it never changes, and keeps both
(`ShadowDetection`). Idempotent: a redelivered message finds its row."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from django.db import IntegrityError

from ..detectors import VersionUnavailable, detector_for_version
from ..models import Experiment, ShadowDetection
from ..program import DetectionInput

logger = logging.getLogger(__name__)


def shadow_detections_run(*, items: list[dict[str, Any]]) -> int:
    """Run each item's candidate (a running shadow experiment's variant) and keep its answer. Returns how many ran."""
    running = set(Experiment.objects.filter(pk__in={item["experiment_id"] for item in items},
                                            status=Experiment.Status.RUNNING).values_list("pk", flat=True))
    ran = 0
    for item in items:
        if item["experiment_id"] not in running:
            continue  # stopped or rolled back since: nothing more to learn
        request_id = uuid.UUID(item["request_id"])
        if ShadowDetection.objects.filter(experiment_id=item["experiment_id"], variant=item["variant"],
                                          request_id=request_id).exists():
            continue
        try:
            detector = detector_for_version(item["prompt_version"])
        except VersionUnavailable as error:
            logger.warning("Shadow candidate %s cannot answer here: %s", item["prompt_version"], error)
            continue
        detection = detector.detect(DetectionInput(message=item["message"], user_role=item["user_role"],
                                                   current_module=item["current_module"],
                                                   current_tab=item["current_tab"]))
        live = item["live"]
        try:
            ShadowDetection.objects.create(
                experiment_id=item["experiment_id"], variant=item["variant"], prompt_version=detection.prompt_version,
                request_id=request_id, created_at=datetime.fromtimestamp(item["started_at_ms"] / 1000, UTC),
                live_intent=live["intent"], live_confidence=live["confidence"], live_status=live["status"],
                live_response_time_ms=live["response_time_ms"], intent=detection.intent,
                confidence=detection.confidence, status=detection.status, fallback_used=detection.fallback_used,
                response_time_ms=detection.response_time_ms)
        except IntegrityError:  # the same message delivered twice at once
            continue
        ran += 1
    return ran
