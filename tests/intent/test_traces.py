"""Traces in MLflow: each detection logged by the worker is also a trace in the detection experiment, read back
here with MLflow's own client: its spans (the detection, the LM call with its redacted prompt and response and
tokens, or the local model's top-5, the template match), its tags (the seed's context), its link to the run; the
feedback as assessments by their author; sampling; a retry that writes nothing twice; both writers."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from intent.models import DetectionDetail, DetectionRecord
from intent.services import detection_feedback_log, detection_records_log
from intent.tracking import trace_id_for, traces_log
from tests.intent.test_lm_path import answer
from tests.llm_server import FakeLLMServer

pytestmark = pytest.mark.django_db


def detect(client, message: str, **context) -> dict:
    response = client.post("/api/intent/detect", {"message": message, **context}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def spans_by_name(trace) -> dict:
    return {span.name: span for span in trace.data.spans}


@pytest.mark.parametrize("bulk", [True, False], ids=["bulk-store", "client"])
def test_a_local_detection_is_a_trace_linked_to_its_run(api_client, small_catalog, mlflow_store, settings, bulk):
    settings.TRACKING_BULK_WRITES = bulk
    body = detect(api_client, "what is my bank balance", user_role="customer", current_module="banking",
                  current_tab="accounts")
    outcome = detection_records_log(request_ids=[body["request_id"]])
    assert outcome.logged == [body["request_id"]]
    run_id = DetectionRecord.objects.get(request_id=body["request_id"]).mlflow_run_id

    client = MlflowClient(mlflow_store)
    trace = client.get_trace(trace_id_for(body["request_id"]))
    assert trace.info.state.value == "OK"
    assert {key: trace.info.tags[key] for key in ("user_role", "current_module", "current_tab", "prompt_version",
                                                  "request_id")} == {
        "user_role": "customer", "current_module": "banking", "current_tab": "accounts",
        "prompt_version": body["prompt_version"], "request_id": body["request_id"]}
    experiment = client.get_experiment_by_name("intent_detection")
    assert [t.info.trace_id for t in client.search_traces(locations=[experiment.experiment_id], run_id=run_id)] == [
        trace.info.trace_id]

    spans = spans_by_name(trace)
    assert set(spans) == {"detect_intent", "local_model", "template_match"}
    root = spans["detect_intent"]
    assert root.parent_id is None and all(s.parent_id == root.span_id for n, s in spans.items() if n != "detect_intent")
    assert root.inputs["message"] == "what is my bank balance" and root.outputs["intent"] == body["intent"]
    detail = DetectionDetail.objects.get(request_id=body["request_id"])
    top = spans["local_model"].outputs["top_intents"]
    assert [[item["intent"], item["probability"]] for item in top] == detail.alternatives and len(top) == 5
    assert spans["template_match"].outputs["workflow_template"] == body["workflow_template"]


def test_an_lm_detection_shows_its_redacted_prompt_response_and_tokens(api_client, small_catalog, mlflow_store,
                                                                        settings):
    settings.INTENT_LM, settings.INTENT_LM_API_KEY = "openai/fake-intent-model", "sk-test-not-a-real-key"
    with FakeLLMServer(answer("transfer")) as server:
        settings.INTENT_LM_API_BASE = server.api_base
        body = detect(api_client, "send 50 dollars to jane.doe@example.com from my savings")
    detection_records_log(request_ids=[body["request_id"]])

    trace = MlflowClient(mlflow_store).get_trace(trace_id_for(body["request_id"]))
    spans = spans_by_name(trace)
    assert set(spans) == {"detect_intent", "lm_call", "local_model", "template_match"}
    lm = spans["lm_call"]
    prompt = " ".join(message["content"] for message in lm.inputs["messages"])
    assert "[email]" in prompt and "jane.doe@example.com" not in prompt  # the prompt held the message: redacted
    assert "transfer" in lm.outputs["response"]
    assert lm.span_type == "CHAT_MODEL" and lm.end_time_ns > lm.start_time_ns
    assert lm.attributes["mlflow.chat.tokenUsage"]["input_tokens"] > 0
    assert spans["local_model"].outputs["second_opinion"]  # the local model's opinion beside the LM's answer
    assert "jane.doe@example.com" not in str(trace.to_dict())


def test_feedback_becomes_assessments_by_its_author(api_client, user, small_catalog, mlflow_store):
    body = detect(api_client, "i lost my credit card")
    detection_records_log(request_ids=[body["request_id"]])
    wrong = next(i["name"] for i in small_catalog["intents"] if i["name"] != body["intent"])
    response = api_client.post("/api/intent/feedback", {"request_id": body["request_id"], "correct_intent": wrong,
                                                        "comment": "not this one"}, format="json")
    assert response.status_code == 202
    detection_feedback_log(request_ids=[body["request_id"]])
    detection_feedback_log(request_ids=[body["request_id"]])  # a redelivery: nothing twice

    trace = MlflowClient(mlflow_store).get_trace(trace_id_for(body["request_id"]))
    assessments = {a.name: a for a in trace.info.assessments}
    assert len(trace.info.assessments) == 2
    assert assessments["expected_intent"].expectation.value == wrong
    assert assessments["is_correct"].feedback.value is False
    assert assessments["is_correct"].rationale == "not this one"
    assert {a.source.source_id for a in trace.info.assessments} == {user.username}
    assert {a.source.source_type for a in trace.info.assessments} == {"HUMAN"}


def test_sampling_and_retries(api_client, small_catalog, mlflow_store, settings):
    settings.INTENT_TRACE_SAMPLE_RATE = 0.0
    untraced = detect(api_client, "what is my bank balance")
    settings.INTENT_TRACE_SAMPLE_RATE = 1.0
    traced = detect(api_client, "pay my electricity bill")
    detection_records_log(request_ids=[untraced["request_id"], traced["request_id"]])
    client = MlflowClient(mlflow_store)
    experiment = client.get_experiment_by_name("intent_detection")
    assert [t.info.trace_id for t in client.search_traces(locations=[experiment.experiment_id])] == [
        trace_id_for(traced["request_id"])]

    # A batch written again (a retry after a crash between runs and traces) rewrites the same trace.
    record = DetectionRecord.objects.get(request_id=traced["request_id"])
    assert traces_log(logged=[(record.payload, record.mlflow_run_id)]) == 1
    (trace,) = client.search_traces(locations=[experiment.experiment_id])
    assert len(trace.data.spans) == 3


def table_rows(path, table: str) -> list[tuple]:
    import sqlite3

    with sqlite3.connect(path) as connection:
        return sorted(connection.execute(f'SELECT * FROM "{table}"').fetchall(), key=repr)


def test_the_bulk_writer_writes_the_rows_mlflows_log_spans_writes(api_client, small_catalog, mlflow_store, settings,
                                                                  tmp_path):
    from mlflow.tracing.client import TracingClient

    from intent.tracking.trace_bulk import trace_rows_insert
    from intent.tracking.traces import trace_spans_build

    settings.INTENT_LM, settings.INTENT_LM_API_KEY = "openai/fake-intent-model", "sk-test-not-a-real-key"
    with FakeLLMServer(answer("transfer")) as server:
        settings.INTENT_LM_API_BASE = server.api_base
        bodies = [detect(api_client, "move 50 dollars to savings", user_role="customer"),
                  detect(api_client, "what is the weather like on mars")]
    settings.INTENT_LM = "local"
    bodies.append(detect(api_client, "what is my bank balance"))
    spans = [span for body in bodies for span in trace_spans_build(
        DetectionRecord.objects.get(request_id=body["request_id"]).payload)]

    stores = {}
    for name in ("reference", "bulk"):
        path = tmp_path / f"{name}.db"
        client = MlflowClient(f"sqlite:///{path}")
        experiment_id = client.create_experiment("intent_detection", artifact_location=str(tmp_path / "artifacts"))
        stores[name] = (path, experiment_id, client._tracking_client.store)
    path, experiment_id, _ = stores["reference"]
    TracingClient(f"sqlite:///{path}").log_spans(experiment_id, spans)
    path, experiment_id, store = stores["bulk"]
    written = trace_rows_insert(store=store, experiment_id=experiment_id, spans=spans, metadata={})
    assert written == {trace_id_for(body["request_id"]) for body in bodies}
    assert trace_rows_insert(store=store, experiment_id=experiment_id, spans=spans, metadata={}) == set()  # a retry

    for table in ("trace_info", "trace_tags", "trace_request_metadata", "spans"):
        assert table_rows(stores["bulk"][0], table) == table_rows(stores["reference"][0], table), table
    assert len(table_rows(stores["bulk"][0], "spans")) == len(spans) == 4 + 4 + 3
    # and MLflow reads the bulk-written traces as its own
    trace = MlflowClient(f"sqlite:///{stores['bulk'][0]}").get_trace(trace_id_for(bodies[0]["request_id"]))
    assert [span.name for span in trace.data.spans][0] == "detect_intent" and trace.info.token_usage["input_tokens"] > 0


def test_through_a_tracking_server_traces_and_assessments_arrive_too(api_client, small_catalog, mlflow_server,
                                                                     settings):
    settings.MLFLOW_TRACKING_URI = mlflow_server.uri
    body = detect(api_client, "what is my bank balance", user_role="customer")
    assert detection_records_log(request_ids=[body["request_id"]]).logged == [body["request_id"]]
    run_id = DetectionRecord.objects.get(request_id=body["request_id"]).mlflow_run_id
    api_client.post("/api/intent/feedback", {"request_id": body["request_id"], "correct_intent": body["intent"]},
                    format="json")
    detection_feedback_log(request_ids=[body["request_id"]])

    client = MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name("intent_detection")
    (trace,) = client.search_traces(locations=[experiment.experiment_id], run_id=run_id)
    assert trace.info.trace_id == trace_id_for(body["request_id"]) and trace.info.tags["user_role"] == "customer"
    assert {span.name for span in trace.data.spans} == {"detect_intent", "local_model", "template_match"}
    trace = client.get_trace(trace.info.trace_id)
    assert {a.name: a.value for a in trace.info.assessments} == {"expected_intent": body["intent"],
                                                                 "is_correct": True}
