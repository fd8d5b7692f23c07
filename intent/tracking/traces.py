"""Detections as MLflow traces, beside their runs: written by the worker after the runs, a batch at a time, linked to
each run (trace metadata `mlflow.sourceRun`), with the seed's context as trace tags; feedback as assessments.

Into a database store a batch of traces goes in one transaction (`trace_bulk`, MLflow's own tables, the rows its
`log_spans` would write); else through MLflow's `log_spans` and `link_traces_to_run`. A detection's trace id is its
request id (`tr-` and its 32 hex digits) and its spans' ids derive from it, so
writing a batch again (a retry) rewrites the same trace instead of making a second one. The spans:
`detect_intent` (the request and the answer), then `lm_call` (the redacted prompt and response, tokens) when an LM
was asked, `local_model` (the top-5 intents with their probabilities) when it answered or gave its second
opinion, and `template_match` (the templates chosen among those available). Their content comes from the
tracking payload (`payload.trace_section_build`), redacted before the outbox row held it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from django.conf import settings

from intentsite import contract

from .store import bulk_store, experiment_id_get, tracking_client
from .trace_bulk import trace_rows_insert

logger = logging.getLogger(__name__)

# The seed's context, carried by every trace as tags (the run's tag of the same name gives each value).
TRACE_TAGS = (contract.USER_ROLE, contract.CURRENT_MODULE, contract.CURRENT_TAB, contract.PROMPT_VERSION,
              contract.REQUEST_ID, contract.DETECTED_INTENT, contract.STATUS)


def trace_id_for(request_id: str) -> str:
    return "tr-" + request_id.replace("-", "")


def _span_id(trace_id: str, name: str) -> str:
    return hashlib.blake2b(f"{trace_id}/{name}".encode(), digest_size=8).hexdigest()


def _span(*, trace_id: str, name: str, parent: str | None, span_type: str, start_ns: int, end_ns: int,
          inputs: Any, outputs: Any, attributes: dict[str, Any] | None = None, error: str | None = None):
    from mlflow.entities import Span
    from mlflow.tracing.constant import SpanAttributeKey

    values = {SpanAttributeKey.REQUEST_ID: trace_id, SpanAttributeKey.SPAN_TYPE: span_type,
              SpanAttributeKey.INPUTS: inputs, SpanAttributeKey.OUTPUTS: outputs, **(attributes or {})}
    return Span.from_dict({
        "trace_id": trace_id, "span_id": _span_id(trace_id, name),
        "parent_span_id": _span_id(trace_id, parent) if parent else "", "name": name,
        "start_time_unix_nano": start_ns, "end_time_unix_nano": max(end_ns, start_ns),
        "status": {"code": "STATUS_CODE_ERROR" if error else "STATUS_CODE_OK", "message": error or ""},
        "attributes": {key: json.dumps(value) for key, value in values.items()}, "events": [],
    })


def trace_spans_build(payload: dict[str, Any]) -> list:
    """The spans of one detection's trace, from its tracking payload (which holds a `trace` section)."""
    from mlflow.tracing.constant import SpanAttributeKey

    trace, tags, metrics = payload["trace"], payload["tags"], payload["metrics"]
    trace_id = trace_id_for(tags[contract.REQUEST_ID])
    start_ns, end_ns = payload["start_time"] * 1_000_000, payload["end_time"] * 1_000_000
    failed = payload["status"] != contract.RUN_FINISHED
    answer = {"intent": tags[contract.DETECTED_INTENT], "confidence": metrics.get(contract.CONFIDENCE_SCORE),
              "answered_by": tags.get(contract.ANSWERED_BY), "fallback_used": tags.get(contract.FALLBACK_USED) == "true",
              "error_category": tags.get(contract.ERROR_CATEGORY), "reasoning": trace.get("reasoning")}
    context = {key: tags.get(key, "") for key in (contract.USER_ROLE, contract.CURRENT_MODULE, contract.CURRENT_TAB)}
    root_attributes = {f"{SpanAttributeKey.TRACE_TAG_PREFIX}{key}": tags[key] for key in TRACE_TAGS if key in tags}
    spans = [_span(trace_id=trace_id, name="detect_intent", parent=None, span_type="CHAIN", start_ns=start_ns,
                   end_ns=end_ns, inputs={"message": trace.get("message"), **context}, outputs=answer,
                   attributes=root_attributes,
                   error=tags.get(contract.ERROR_CATEGORY) if failed else None)]
    at = start_ns
    if (lm := trace.get("lm")) is not None:
        lm_end = at + int((lm.get("elapsed_ms") or 0) * 1_000_000)
        usage = {key: int(metrics[name]) for key, name in (("input_tokens", contract.PROMPT_TOKENS),
                                                           ("output_tokens", contract.COMPLETION_TOKENS))
                 if name in metrics}
        attributes = {SpanAttributeKey.MODEL: payload["params"].get(contract.MODEL_NAME, "")}
        if usage:
            attributes[SpanAttributeKey.CHAT_USAGE] = usage | {"total_tokens": sum(usage.values())}
        spans.append(_span(trace_id=trace_id, name="lm_call", parent="detect_intent", span_type="CHAT_MODEL",
                           start_ns=at, end_ns=lm_end, inputs={"messages": lm["messages"]},
                           outputs={"response": lm.get("response")}, attributes=attributes, error=lm.get("error")))
        at = lm_end
    if trace.get("alternatives"):
        local_end = at + int((trace.get("local_ms") or 0) * 1_000_000)
        spans.append(_span(
            trace_id=trace_id, name="local_model", parent="detect_intent", span_type="UNKNOWN", start_ns=at,
            end_ns=local_end, inputs={"message": trace.get("message")},
            outputs={"top_intents": [{"intent": i, "probability": p} for i, p in trace["alternatives"]],
                     "second_opinion": trace.get("local_intent")}))
        at = local_end
    spans.append(_span(
        trace_id=trace_id, name="template_match", parent="detect_intent", span_type="PARSER", start_ns=at,
        end_ns=min(at, end_ns), inputs={"intent": tags[contract.DETECTED_INTENT], "module": context[
            contract.CURRENT_MODULE]},
        outputs={"workflow_template": trace.get("workflow_template"), "agent_template": trace.get("agent_template"),
                 "available_workflow_templates": metrics.get(contract.AVAILABLE_WORKFLOW_TEMPLATES),
                 "available_agent_templates": metrics.get(contract.AVAILABLE_AGENT_TEMPLATES)}))
    return spans


def trace_batch(*, logged: list[tuple[dict[str, Any], str]]) -> tuple[list, dict[str, dict[str, str]]]:
    """The spans of the sampled detections among these (payload, run id) pairs (those whose payload holds a `trace`
    section), and each trace's metadata linking it to its run."""
    from mlflow.tracing.constant import TraceMetadataKey

    traced = [(payload, run_id) for payload, run_id in logged if payload.get("trace")]
    spans = [span for payload, _ in traced for span in trace_spans_build(payload)]
    metadata = {trace_id_for(payload["tags"][contract.REQUEST_ID]): {TraceMetadataKey.SOURCE_RUN: run_id}
                for payload, run_id in traced}
    return spans, metadata


def traces_log(*, logged: list[tuple[dict[str, Any], str]]) -> int:
    """Write the traces of these logged detections ((payload, run id) pairs; those sampled): in one transaction of
    a database store (`trace_bulk`), else MLflow's `log_spans` for the batch and each one's link to its run.
    Returns how many."""
    from mlflow.tracing.client import TracingClient
    from mlflow.tracing.constant import TraceMetadataKey

    spans, metadata = trace_batch(logged=logged)
    if not metadata:
        return 0
    experiment_id = experiment_id_get()
    store = bulk_store()
    if store is not None and trace_rows_insert(store=store, experiment_id=experiment_id, spans=spans,
                                               metadata=metadata) is not None:
        return len(metadata)
    TracingClient(settings.MLFLOW_TRACKING_URI).log_spans(experiment_id, spans)
    client = tracking_client()
    for trace_id, values in metadata.items():
        client.link_traces_to_run([trace_id], values[TraceMetadataKey.SOURCE_RUN])
    return len(metadata)


def trace_feedback_log(*, request_id: str, expected_intent: str, is_correct: bool, comment: str,
                       author: str) -> bool:
    """The feedback on a traced detection as assessments on its trace: the correct intent as an expectation,
    `is_correct` as human feedback (the comment its rationale), both by their author. An assessment equal to one
    the trace has (a retry) is not written again. False when the detection has no trace."""
    from mlflow.entities import AssessmentSource, Expectation, Feedback
    from mlflow.exceptions import MlflowException
    from mlflow.tracing.client import TracingClient

    client = TracingClient(settings.MLFLOW_TRACKING_URI)
    trace_id = trace_id_for(request_id)
    try:
        info = client.get_trace_info(trace_id)
    except MlflowException:
        return False
    source = AssessmentSource(source_type="HUMAN", source_id=author or "anonymous")
    have = {(a.name, json.dumps(getattr(a, "value", None)), a.source.source_id) for a in info.assessments or []}
    wanted = [Expectation(name=contract.EXPECTED_INTENT, value=expected_intent, source=source),
              Feedback(name=contract.IS_CORRECT, value=is_correct, source=source, rationale=comment or None)]
    for assessment in wanted:
        if (assessment.name, json.dumps(assessment.value), source.source_id) not in have:
            client.log_assessment(trace_id, assessment)
    return True
