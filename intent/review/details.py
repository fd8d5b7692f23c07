"""A detection's stored detail: what a reviewer sees of it, built from the request and the answer."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from django.conf import settings

from ..models import DetectionDetail
from ..program import Detection, DetectionInput
from ..redaction import message_redact


def detection_detail_build(*, request_id: uuid.UUID, request: DetectionInput, detection: Detection,
                           started_at_ms: int, user=None, trace: dict | None = None) -> DetectionDetail:
    """The unsaved detail of one detection. The message is redacted here, before anything holds it, and kept only
    with INTENT_STORE_MESSAGES. `margin` is the local model's top probability minus its second (1.0 when it
    ranked a single intent); `disagreement` says the local model would have answered otherwise (an LM's answer)."""
    alternatives = [[intent, probability] for intent, probability in detection.alternatives]
    margin = None
    if alternatives:
        margin = alternatives[0][1] - (alternatives[1][1] if len(alternatives) > 1 else 0.0)
    local_intent = detection.local_intent or ""
    return DetectionDetail(
        request_id=request_id,
        created_at=datetime.fromtimestamp(started_at_ms / 1000, tz=UTC),
        user=user,
        message=message_redact(request.message) if settings.INTENT_STORE_MESSAGES else "",
        user_role=request.user_role[:100],
        current_module=request.current_module[:100],
        current_tab=request.current_tab[:100],
        model_name=detection.model_name[:200],
        prompt_version=detection.prompt_version[:32],
        detected_intent=detection.intent[:100],
        confidence=detection.confidence,
        status=str(detection.status),
        error_category=detection.error_category or "",
        template_matched=bool(detection.workflow_template or detection.agent_template),
        alternatives=alternatives,
        margin=None if margin is None else round(margin, 6),
        local_intent=local_intent[:100],
        disagreement=bool(local_intent) and local_intent != detection.intent,
        steps=_steps(trace),
    )


def _steps(trace: dict | None) -> dict:
    """The story page's view of the trace section (already redacted by the tracking payload): no prompt, the
    response cut short."""
    if not trace:
        return {}
    lm = trace.get("lm")
    return {
        "lm": None if lm is None else {"elapsed_ms": lm.get("elapsed_ms"), "error": lm.get("error"),
                                       "response": (lm.get("response") or "")[:500] or None},
        "local_ms": trace.get("local_ms"),
        "workflow_template": trace.get("workflow_template"),
        "agent_template": trace.get("agent_template"),
    }
