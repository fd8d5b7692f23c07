"""A detection's MLflow run as plain JSON (it waits in the outbox table until a worker logs it)."""

from __future__ import annotations

import importlib.metadata
import uuid
from typing import Any

from django.conf import settings

from intentsite import contract

from ..program import Detection, DetectionInput
from ..redaction import message_redact

# Each text a trace keeps (a prompt message, the response) is cut at this many characters.
TRACE_TEXT_MAX = 4000
# The installed DSPy, read from its metadata: importing DSPy to ask would cost the worker ~2 s at start.
DSPY_VERSION = importlib.metadata.version("dspy")


def run_name_for(request_id: str) -> str:
    """A detection run's name, the same whichever writer makes the run (the bulk path's run id is the request id
    in hex; the client path's is MLflow's): `detect-` and the first 8 hex digits of the request id."""
    return f"detect-{uuid.UUID(request_id).hex[:8]}"


def run_payload_build(
    *,
    request_id: str,
    request: DetectionInput,
    detection: Detection,
    started_at_ms: int,
    experiment: tuple[str, str] | None = None,
    subject_hash: str = "",
) -> dict[str, Any]:
    """The MLflow run of one detection, as plain JSON. `experiment`: (name, variant) of the A/B arm that answered."""
    tags = {
        contract.USER_ROLE: request.user_role,
        contract.CURRENT_MODULE: request.current_module,
        contract.CURRENT_TAB: request.current_tab,
        contract.DETECTED_INTENT: detection.intent,
        contract.DSPY_VERSION: DSPY_VERSION,
        contract.PROMPT_VERSION: detection.prompt_version,
        contract.REQUEST_ID: request_id,
        contract.STATUS: detection.status,
        contract.FALLBACK_USED: str(detection.fallback_used).lower(),
        contract.ANSWERED_BY: detection.answered_by,
    }
    if experiment is not None:
        tags[contract.EXPERIMENT], tags[contract.VARIANT] = experiment
    if subject_hash:
        tags[contract.SUBJECT_HASH] = subject_hash
    if detection.error_category:
        tags[contract.ERROR_CATEGORY] = detection.error_category
        tags[contract.ERROR_TYPE] = detection.error_type or ""
    if settings.INTENT_LOG_MESSAGES:
        tags[contract.MESSAGE] = message_redact(request.message)
    metrics = {
        contract.CONFIDENCE_SCORE: detection.confidence,
        contract.RESPONSE_TIME_MS: detection.response_time_ms,
        contract.TEMPLATE_MATCH_RATE: 1.0 if (detection.workflow_template or detection.agent_template) else 0.0,
        contract.AVAILABLE_WORKFLOW_TEMPLATES: float(detection.available_workflow_templates),
        contract.AVAILABLE_AGENT_TEMPLATES: float(detection.available_agent_templates),
    }
    for key, name in (("prompt_tokens", contract.PROMPT_TOKENS), ("completion_tokens", contract.COMPLETION_TOKENS),
                      ("cost_usd", contract.COST_USD)):
        if key in detection.lm_usage:
            metrics[name] = float(detection.lm_usage[key])
    params = {
        contract.MODEL_NAME: detection.model_name,
        contract.MESSAGE_LENGTH: str(len(request.message)),
        contract.MESSAGE_WORD_COUNT: str(len(request.message.split())),
        contract.REQUIRES_WORKFLOW: str(detection.requires_workflow).lower(),
        contract.CATEGORY_SOURCE: detection.category_source,
    }
    payload = {
        "start_time": started_at_ms,
        "end_time": started_at_ms + max(1, round(detection.response_time_ms)),
        "status": contract.RUN_FINISHED if detection.status == contract.STATUS_SUCCESS else contract.RUN_FAILED,
        "tags": tags,
        "params": params,
        "metrics": metrics,
    }
    if trace_sampled(request_id):
        payload["trace"] = trace_section_build(request=request, detection=detection)
    return payload


def trace_sampled(request_id: str) -> bool:
    """Is this detection traced (INTENT_TRACE_SAMPLE_RATE)? Decided by its request id, so the same every time."""
    rate = settings.INTENT_TRACE_SAMPLE_RATE
    return rate >= 1 or (rate > 0 and uuid.UUID(request_id).int % 10_000 < rate * 10_000)


def _text(value: object, *, keep: bool = True) -> str | None:
    """Text for the trace: redacted, cut at TRACE_TEXT_MAX; None where messages are not kept."""
    if value is None or not keep:
        return None
    return message_redact(str(value))[:TRACE_TEXT_MAX]


def trace_section_build(*, request: DetectionInput, detection: Detection) -> dict[str, Any]:
    """What the detection's MLflow trace shows beyond its run (`tracking.traces` makes its spans): the LM call's
    messages and response, the local model's ranking, the templates chosen. Redacted here, before the outbox row
    holds it; without INTENT_STORE_MESSAGES no text that may hold the message (the prompt, the response)."""
    keep = settings.INTENT_STORE_MESSAGES
    call = detection.lm_call
    return {
        "message": _text(request.message, keep=keep),
        "reasoning": _text(detection.reasoning, keep=keep),
        "lm": None if call is None else {
            "messages": [{"role": m["role"], "content": _text(m["content"], keep=keep)} for m in call["messages"]],
            "response": _text(call.get("response"), keep=keep),
            "elapsed_ms": call.get("elapsed_ms"),
            "error": _text(call.get("error")),
        },
        "local_ms": detection.local_ms,
        "alternatives": [[intent, probability] for intent, probability in detection.alternatives],
        "local_intent": detection.local_intent,
        "workflow_template": detection.workflow_template,
        "agent_template": detection.agent_template,
    }
