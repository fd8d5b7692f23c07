"""Every detection becomes exactly one MLflow run with the whole contract, read back with the real client
from a real store; interrupted attempts are completed, not duplicated; failures end as dead letters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
from django.core.management import call_command
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from intent import tracking
from intent.models import DetectionRecord, PromptVersion
from intent.services import detection_record_log, detection_records_log, prompt_versions_log
from tests.conftest import REPO
from tests.llm_server import FakeLLMServer

URL = "/api/intent/detect"
pytestmark = pytest.mark.django_db

METRICS = {"confidence_score", "response_time_ms", "template_match_rate", "available_workflow_templates",
           "available_agent_templates"}
TAGS = {"user_role", "current_module", "current_tab", "detected_intent", "dspy_version", "prompt_version",
        "request_id", "status", "fallback_used"}
PARAMS = {"model_name", "message_length", "message_word_count", "requires_workflow", "category_source"}


def detection_runs(uri: str):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("intent_detection")
    return client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL, max_results=10_000)


def detect(api_client, **payload) -> dict:
    response = api_client.post(URL, payload, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def test_request_path_writes_a_record_and_queues_it_without_touching_mlflow(
    api_client, small_catalog, mlflow_store, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        body = detect(api_client, message="what is my balance")
    record = DetectionRecord.objects.get(request_id=body["request_id"])
    assert record.state == DetectionRecord.State.PENDING
    assert len(callbacks) == 1  # the task is queued only once the transaction commits
    assert detection_runs(mlflow_store) == []  # nothing reached MLflow from the request


def test_each_request_becomes_one_run_with_the_whole_contract(
    api_client, small_catalog, mlflow_store, settings
):
    ok = detect(api_client, message="send 300 dollars from checking to savings", user_role="customer",
                current_module="banking", current_tab="accounts")
    with FakeLLMServer(503) as server:
        settings.INTENT_LM = "openai/fake-intent-model"
        settings.INTENT_LM_API_BASE = server.api_base
        settings.INTENT_LM_API_KEY = "sk-test"
        failed = detect(api_client, message="what is my balance", user_role="admin")
    ids = [ok["request_id"], failed["request_id"]]

    outcome = detection_records_log(request_ids=ids)

    assert sorted(outcome.logged) == sorted(ids)
    runs = {run.data.tags["request_id"]: run for run in detection_runs(mlflow_store)}
    assert set(runs) == set(ids)
    good = runs[ok["request_id"]]
    assert good.info.status == "FINISHED"
    assert METRICS <= set(good.data.metrics)
    assert TAGS <= set(good.data.tags)
    assert PARAMS == set(good.data.params)
    assert good.data.tags["detected_intent"] == "transfer" == ok["intent"]
    assert good.data.tags["user_role"] == "customer"
    assert good.data.tags["current_module"] == "banking"
    assert good.data.tags["current_tab"] == "accounts"
    assert good.data.tags["status"] == "success"
    assert good.data.tags["fallback_used"] == "false"
    assert good.data.tags["prompt_version"] == ok["prompt_version"]
    assert "error_category" not in good.data.tags
    assert "message" not in good.data.tags  # not logged by default
    assert good.data.metrics["confidence_score"] == pytest.approx(ok["confidence"])
    assert good.data.metrics["response_time_ms"] == pytest.approx(ok["response_time_ms"])
    assert good.data.metrics["template_match_rate"] == 1.0  # money_transfer matched
    assert good.data.metrics["available_workflow_templates"] == 1.0
    assert good.data.params == {
        "model_name": "local/tfidf-linear", "message_length": str(len("send 300 dollars from checking to savings")),
        "message_word_count": "7", "requires_workflow": "true", "category_source": "database",
    }
    assert good.info.end_time >= good.info.start_time

    bad = runs[failed["request_id"]]
    assert bad.info.status == "FAILED"
    assert bad.data.tags["status"] == "error"
    assert bad.data.tags["error_category"] == "lm_unavailable"
    assert bad.data.tags["error_type"] == "LMServerError"
    assert bad.data.tags["fallback_used"] == "true"
    assert bad.data.params["model_name"] == "openai/fake-intent-model"

    assert set(DetectionRecord.objects.values_list("state", flat=True)) == {"logged"}


def test_lm_token_usage_is_logged_when_reported(api_client, small_catalog, mlflow_store, settings):
    fields = {"intent": "balance", "confidence": 0.8, "requires_workflow": False, "workflow_template": "",
              "agent_template": "", "reasoning": "asks for balance"}
    with FakeLLMServer(lambda body: fields) as server:
        settings.INTENT_LM = "openai/fake-intent-model"
        settings.INTENT_LM_API_BASE = server.api_base
        settings.INTENT_LM_API_KEY = "sk-test"
        body = detect(api_client, message="what is my balance")
    detection_records_log(request_ids=[body["request_id"]])
    (run,) = detection_runs(mlflow_store)
    assert run.data.metrics["prompt_tokens"] == 321  # what the server's usage said
    assert run.data.metrics["completion_tokens"] == 42


def test_logging_again_makes_no_second_run(api_client, small_catalog, mlflow_store):
    body = detect(api_client, message="what is my balance")
    detection_records_log(request_ids=[body["request_id"]])
    second = detection_records_log(request_ids=[body["request_id"]])
    assert second.skipped == [body["request_id"]]
    DetectionRecord.objects.update(state="pending")  # even a record that forgot it was logged
    detection_records_log(request_ids=[body["request_id"]])
    assert len(detection_runs(mlflow_store)) == 1


def test_batch_retried_after_it_committed_writes_nothing_twice(api_client, small_catalog, mlflow_store):
    ids = [detect(api_client, message=m)["request_id"] for m in ("what is my balance", "transfer money")]
    payloads = [DetectionRecord.objects.get(request_id=i).payload for i in ids]
    tracking.runs_log_bulk(payloads=payloads)  # committed, then the worker died before marking the records
    DetectionRecord.objects.update(attempts=1)

    outcome = detection_records_log(request_ids=ids)

    assert sorted(outcome.logged) == sorted(ids)
    runs = detection_runs(mlflow_store)
    assert sorted(run.data.tags["request_id"] for run in runs) == sorted(ids)
    assert {run.info.run_id for run in runs} == {uuid.UUID(i).hex for i in ids}  # the run id is the request id


@pytest.mark.parametrize("bulk_writes", [True, False])
def test_attempt_killed_after_creating_the_run_is_completed_not_duplicated(
    api_client, small_catalog, mlflow_store, settings, bulk_writes
):
    # the interrupted attempt went through the client; the retry may take either path
    settings.TRACKING_BULK_WRITES = bulk_writes
    tracking.experiment_cache_clear()
    body = detect(api_client, message="what is my balance")
    record = DetectionRecord.objects.get(request_id=body["request_id"])

    # the worker died right after its first call (the run exists, unfinished, without metrics; its id unsaved)
    tracking.tracking_client().create_run(tracking.experiment_id_get(), start_time=record.payload["start_time"],
                                          tags=record.payload["tags"])
    DetectionRecord.objects.filter(pk=record.pk).update(attempts=1)  # that attempt had claimed the record

    state, _ = detection_record_log(request_id=body["request_id"])

    assert state == "logged"
    (run,) = detection_runs(mlflow_store)
    assert run.info.status == "FINISHED"
    assert set(run.data.metrics) >= METRICS
    assert DetectionRecord.objects.get(pk=record.pk).mlflow_run_id == run.info.run_id


def test_unreachable_mlflow_is_retried_then_dead_lettered_then_replayed(
    api_client, small_catalog, mlflow_store, settings
):
    body = detect(api_client, message="what is my balance")
    settings.MLFLOW_TRACKING_URI = "http://127.0.0.1:9"  # nothing listens there
    tracking.experiment_cache_clear()

    first = detection_records_log(request_ids=[body["request_id"]])
    assert first.retry == [body["request_id"]]
    assert DetectionRecord.objects.get(request_id=body["request_id"]).state == "pending"

    settings.TRACKING_RETRY_WINDOW_S = 0
    second = detection_records_log(request_ids=[body["request_id"]])
    assert second.dead == [body["request_id"]]
    record = DetectionRecord.objects.get(request_id=body["request_id"])
    assert record.state == "dead" and record.attempts == 2 and "127.0.0.1:9" in record.last_error

    settings.MLFLOW_TRACKING_URI = mlflow_store
    settings.TRACKING_RETRY_WINDOW_S = 900
    tracking.experiment_cache_clear()
    settings.CELERY_TASK_ALWAYS_EAGER = True  # the command's own work is under test here, not the worker's
    call_command("replay_dead_letters")
    assert DetectionRecord.objects.get(request_id=body["request_id"]).state == "logged"
    assert len(detection_runs(mlflow_store)) == 1


def test_messages_are_logged_redacted_only_when_asked(api_client, small_catalog, mlflow_store, settings):
    settings.INTENT_LOG_MESSAGES = True
    body = detect(api_client, message="email bob@example.com or call +1 555 123 4567 about card 4111 1111 1111 1111")
    detection_records_log(request_ids=[body["request_id"]])
    (run,) = detection_runs(mlflow_store)
    assert run.data.tags["message"] == "email [email] or call [phone] about card [card]"


def test_each_prompt_version_is_recorded_once_with_its_state(api_client, small_catalog, mlflow_store):
    first = detect(api_client, message="what is my balance")
    detect(api_client, message="transfer money")
    assert PromptVersion.objects.count() == 1
    detection_records_log(request_ids=list(DetectionRecord.objects.values_list("request_id", flat=True)))
    assert prompt_versions_log() == 0  # nothing left to record

    client = MlflowClient(mlflow_store)
    experiment = client.get_experiment_by_name("intent_prompt_versions")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags["prompt_version"] == first["prompt_version"]
    state = json.loads(open(client.download_artifacts(run.info.run_id, "prompt_version.json")).read())
    assert state == PromptVersion.objects.get().description
    assert state["backend"] == "local" and "catalog_version" in state


PROMPT_VERSION_SCRIPT = """
import sys
import uuid
from intent.program import FALLBACK_CATALOG, IntentDetector, LMSettings, LMIntentDetector
from intent.program.local_model import LocalIntentModel
texts, labels = FALLBACK_CATALOG.training_data()
model = LocalIntentModel.fit(texts, labels)
program = LMIntentDetector()
if sys.argv[1] == "changed":
    sig = program.detect.signature
    program.detect.signature = sig.with_instructions(sig.instructions.replace("exactly one", "precisely one"))
local = IntentDetector(catalog=FALLBACK_CATALOG, local_model=model)
lm = IntentDetector(catalog=FALLBACK_CATALOG, local_model=model, program=program,
                    lm_settings=LMSettings(model="openai/gpt-4o-mini", api_key="unused"))
print(local.prompt_version, lm.prompt_version)
"""


def test_prompt_version_is_stable_across_processes_and_changes_with_the_instructions():
    def versions(variant: str, hash_seed: str) -> list[str]:
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        out = subprocess.run([sys.executable, "-c", PROMPT_VERSION_SCRIPT, variant], capture_output=True,
                             text=True, env=env, cwd=str(REPO))
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    first, second, changed = versions("same", "1"), versions("same", "2"), versions("changed", "3")
    assert first == second
    assert changed[0] == first[0]  # the local backend does not read the instructions
    assert changed[1] != first[1]


def test_a_process_follows_an_experiment_reset_under_its_name(api_client, small_catalog, mlflow_store, monkeypatch):
    """After `recreate_experiments --reset` (old experiment renamed and deleted, a new one under the name),
    runs land in the new experiment once the cached id is older than EXPERIMENT_RECHECK_S: no restart."""
    client = MlflowClient(mlflow_store)
    old_id = tracking.experiment_id_get()
    client.rename_experiment(old_id, "intent_detection.old")
    client.delete_experiment(old_id)
    new_id = client.create_experiment("intent_detection")

    assert tracking.experiment_id_get() == old_id  # within the recheck period: the cached id
    monkeypatch.setattr(tracking.store, "EXPERIMENT_RECHECK_S", 0.0)
    assert tracking.experiment_id_get() == new_id

    response = api_client.post("/api/intent/detect", {"message": "what is my balance"}, format="json")
    assert response.status_code == 200
    detection_records_log(request_ids=[response.json()["request_id"]])
    runs = client.search_runs([new_id])
    assert [run.data.tags["request_id"] for run in runs] == [response.json()["request_id"]]
    assert client.search_runs([old_id], run_view_type=ViewType.ALL) == []
