"""The bulk writer of traces: a batch of new traces in ONE transaction of a database store, with MLflow's own tables.

MLflow's `log_spans` spends ~5 ms of ORM work per trace (a flush per new trace, merges, an UPDATE each): five
times what a run costs the bulk run writer, and it would bring the worker's ingest under 10x the seed's inline
logging (bench/tracking_overhead.py). For a store the bulk run writer may write (`store.bulk_store`: a database
whose schema revision is the installed MLflow's), the rows `log_spans` makes for a trace it creates — its
`trace_info` (times, status, previews, token counts), `trace_tags` (artifact location, spans location, the root
span's `mlflow.traceTag.*`), `spans` — are computed here with MLflow's own helpers and inserted in one statement per
table; tests/intent/test_traces.py holds them equal, row by row, to what `log_spans` writes for the same spans.
Traces that exist already (a retry) are left as they are. Where MLflow keeps trace rollups (its analytics tables),
this writer steps aside and `log_spans` writes instead (None).
"""

from __future__ import annotations

import json


def trace_rows_insert(*, store, experiment_id: str, spans: list, metadata: dict[str, dict[str, str]]) -> set[str] | None:
    """Insert the traces of `spans` not in the store yet, with `metadata` (trace id -> {key: value}) for each, in a
    transaction of their own. Returns the trace ids written, or None when this writer must not be used (MLflow's
    rollups are on)."""
    with store.ManagedSessionMaker(read_only=False) as session:
        return trace_rows_add(session=session, store=store, experiment_id=experiment_id, spans=spans,
                              metadata=metadata)


def trace_rows_add(*, session, store, experiment_id: str, spans: list,
                   metadata: dict[str, dict[str, str]]) -> set[str] | None:
    """`trace_rows_insert` in the caller's session (the bulk run writer's: runs and their traces commit together)."""
    from mlflow.entities import SpanStatusCode
    from mlflow.store.tracking.dbmodels.models import SqlSpan, SqlTraceInfo, SqlTraceMetadata, SqlTraceTag
    from mlflow.store.tracking.sqlalchemy_store import _span_aggregation_node, _try_parse_json_string
    from mlflow.store.tracking.utils.sql_trace_rollups import rollups_enabled
    from mlflow.store.tracking.utils.trace_analytics import (
        TOKEN_COLUMN_BY_KEY,
        bounded_model_dimension,
        token_count_or_none,
    )
    from mlflow.tracing.constant import SpanAttributeKey, SpansLocation, TraceTagKey
    from mlflow.tracing.utils import TraceJSONEncoder, aggregate_usage_from_span_nodes
    from mlflow.tracing.utils.truncation import _get_truncated_preview
    from sqlalchemy import insert, select

    if rollups_enabled():
        return None
    by_trace: dict[str, list] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, []).append(span)
    experiment = _experiment(store, experiment_id)
    infos, tags, span_rows, metadata_rows = [], [], [], []
    existing = set(session.execute(select(SqlTraceInfo.request_id).where(
        SqlTraceInfo.request_id.in_(list(by_trace)))).scalars())
    for trace_id, trace_spans in by_trace.items():
        if trace_id in existing:
            continue
        # What MLflow stores of a span: its dict, after the translations for other tracers' conventions, none of
        # which applies to these spans (the parity test holds the stored rows equal to log_spans' own).
        dicts = {span.span_id: span.to_dict() for span in trace_spans}
        root = next(span for span in trace_spans if span.parent_id is None)
        root_attributes = dicts[root.span_id].get("attributes", {})
        start_ms = min(span.start_time_ns for span in trace_spans) // 1_000_000
        end_ms = max(span.end_time_ns for span in trace_spans) // 1_000_000
        usage = aggregate_usage_from_span_nodes([
            _span_aggregation_node(span.span_id, span.parent_id, dicts[span.span_id].get("attributes", {}),
                                   SpanAttributeKey.CHAT_USAGE) for span in trace_spans]) or {}
        info = {
            "request_id": trace_id, "experiment_id": int(experiment_id), "timestamp_ms": start_ms,
            "execution_time_ms": end_ms - start_ms,
            "status": "ERROR" if root.status.status_code == SpanStatusCode.ERROR else "OK",
            "client_request_id": None, "db_payload_generation": 1,
            "request_preview": _get_truncated_preview(root_attributes[SpanAttributeKey.INPUTS], role="user")
            if root_attributes.get(SpanAttributeKey.INPUTS) else None,
            "response_preview": _get_truncated_preview(root_attributes[SpanAttributeKey.OUTPUTS], role="assistant")
            if root_attributes.get(SpanAttributeKey.OUTPUTS) else None,
        }
        for key, column in TOKEN_COLUMN_BY_KEY.items():
            info[column] = token_count_or_none(usage.get(key))
        infos.append(info)
        location = store._get_trace_artifact_location_tag(experiment, trace_id)
        tags.append({"request_id": trace_id, "key": location.key, "value": location.value})
        tags.append({"request_id": trace_id, "key": TraceTagKey.SPANS_LOCATION,
                     "value": SpansLocation.TRACKING_STORE.value})
        for key, value in root_attributes.items():
            if key.startswith(SpanAttributeKey.TRACE_TAG_PREFIX):
                tags.append({"request_id": trace_id, "key": key[len(SpanAttributeKey.TRACE_TAG_PREFIX):],
                             "value": str(_try_parse_json_string(value))})
        for span in trace_spans:
            span_dict = dicts[span.span_id]
            attributes = span_dict.get("attributes", {})
            span_rows.append({
                "trace_id": trace_id, "experiment_id": int(experiment_id), "span_id": span.span_id,
                "parent_span_id": span.parent_id, "name": span.name, "type": span.span_type,
                "status": span.status.status_code, "start_time_unix_nano": span.start_time_ns,
                "end_time_unix_nano": span.end_time_ns,
                "content": json.dumps(span_dict, cls=TraceJSONEncoder, ensure_ascii=False),
                "input_cost": None, "output_cost": None, "total_cost": None,
                "model_name": bounded_model_dimension(_try_parse_json_string(attributes.get(
                    SpanAttributeKey.MODEL))),
                "model_provider": bounded_model_dimension(_try_parse_json_string(attributes.get(
                    SpanAttributeKey.MODEL_PROVIDER))),
            })
        metadata_rows.extend({"request_id": trace_id, "key": key, "value": value}
                             for key, value in metadata.get(trace_id, {}).items())
    for table, rows in ((SqlTraceInfo, infos), (SqlTraceTag, tags), (SqlSpan, span_rows),
                        (SqlTraceMetadata, metadata_rows)):
        if rows:
            session.execute(insert(table.__table__), rows)
    return {info["request_id"] for info in infos}


_experiments: dict[tuple[int, str], object] = {}


def _experiment(store, experiment_id: str):
    """The experiment (its artifact location names each trace's), read once per store."""
    key = (id(store), experiment_id)
    if key not in _experiments:
        _experiments[key] = store.get_experiment(experiment_id)
    return _experiments[key]
