"""Feedback on a detection: validated (401/404/400/409), stored without MLflow I/O on the request path, then
written on the detection's MLflow run (contract B) by the task, idempotently, the latest feedback winning;
it waits for a run not logged yet, survives a lost message and an MLflow outage, and asks analytics to
re-read the run by task name."""

from __future__ import annotations

import uuid

import pytest
from mlflow.tracking import MlflowClient
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from intent.models import DetectionFeedback, DetectionRecord
from intent.services import (
    detection_feedback_flush,
    detection_feedback_log,
    detection_feedback_replay,
    detection_records_log,
)
from intentsite.celery import app
from tests.conftest import free_port, wait_for
from tests.intent.test_tracking import detect, detection_runs

URL = "/api/intent/feedback"
pytestmark = pytest.mark.django_db


def feedback(api_client, **payload):
    return api_client.post(URL, payload, format="json")


def run_of(uri: str, request_id: str):
    (run,) = [run for run in detection_runs(uri) if run.data.tags["request_id"] == request_id]
    return MlflowClient(uri).get_run(run.info.run_id)


def broker_messages() -> list[tuple[str, dict]]:
    """Drain the session broker's default queue: (task name, kwargs) of each message."""
    drained = []
    with app.connection_for_read() as connection:
        queue = connection.SimpleQueue("celery")
        try:
            while True:
                try:
                    message = queue.get(timeout=0.5)
                except queue.Empty:
                    break
                args, kwargs, _ = message.decode()
                drained.append((message.headers["task"], kwargs))
                message.ack()
        finally:
            queue.close()
    return drained


@pytest.fixture
def eager(settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True  # the tasks' own work runs inline here; a real worker runs below


def test_anonymous_gets_401(anonymous_client):
    response = anonymous_client.post(URL, {"request_id": str(uuid.uuid4()), "correct_intent": "balance"},
                                     format="json")
    assert response.status_code == 401


def test_unknown_request_id_is_404(api_client, small_catalog):
    response = feedback(api_client, request_id=str(uuid.uuid4()), correct_intent="balance")
    assert response.status_code == 404
    assert "request_id" in response.json()["detail"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"correct_intent": "balance"}, "request_id"),
        ({"request_id": "not-a-uuid", "correct_intent": "balance"}, "request_id"),
        ({"request_id": "REQ", "correct_intent": ""}, "correct_intent"),
        ({"request_id": "REQ", "correct_intent": "balance", "comment": "x" * 501}, "comment"),
        ({"request_id": "REQ", "correct_intent": "balance", "expected": "x"}, "expected"),
        ({"request_id": 12345, "correct_intent": "balance"}, "request_id"),  # a UUID is a string
        ({"request_id": "REQ", "correct_intent": 7}, "correct_intent"),
        ({"request_id": "REQ", "correct_intent": "balance", "comment": ["a", "list"]}, "comment"),
    ],
)
def test_bad_feedback_is_a_400_naming_the_field(api_client, small_catalog, payload, field):
    request_id = detect(api_client, message="what is my balance")["request_id"]
    payload = {key: (request_id if value == "REQ" else value) for key, value in payload.items()}
    response = feedback(api_client, **payload)
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not DetectionFeedback.objects.exists()


@pytest.mark.parametrize("intent", ["launch_rocket", "greeting"])  # unknown; only in the fallback catalog
def test_an_intent_not_in_the_catalog_is_a_409_naming_the_field(api_client, small_catalog, intent):
    """Well-formed, but not in the catalog as it is now (which the schema cannot list): a conflict, not a 400."""
    request_id = detect(api_client, message="what is my balance")["request_id"]
    response = feedback(api_client, request_id=request_id, correct_intent=intent)
    assert response.status_code == 409, response.content
    assert response.json() == {"correct_intent": [f"{intent!r} is not an intent of the active catalog (nor out_of_scope)."]}
    assert not DetectionFeedback.objects.exists()


def client_of(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def test_only_the_asker_or_a_reviewer_may_label_a_detection_and_every_label_is_kept(
        api_client, user, small_catalog, django_user_model):
    from django.contrib.auth.models import Permission

    from intent.models import DetectionLabel

    request_id = detect(api_client, message="what is my balance")["request_id"]
    assert DetectionRecord.objects.get(request_id=request_id).user == user
    mallory = client_of(django_user_model.objects.create_user("mallory", password="pw-mallory-123"))
    reviewer_user = django_user_model.objects.create_user("rita", password="pw-rita-12345")
    reviewer_user.user_permissions.add(Permission.objects.get(codename="label_detections"))
    reviewer = client_of(reviewer_user)

    # another user: the same 404 as an unknown id, and no detected_intent in the answer
    stranger = feedback(mallory, request_id=request_id, correct_intent="transfer")
    assert stranger.status_code == 404
    assert stranger.json() == {"detail": f"No detection with request_id {request_id}"}  # as for an unknown id
    assert not DetectionFeedback.objects.exists()

    # the asker, then a reviewer: both accepted, the latest wins, both are kept with their authors
    assert feedback(api_client, request_id=request_id, correct_intent="transfer").status_code == 202
    assert feedback(reviewer, request_id=request_id, correct_intent="balance").status_code == 202
    latest = DetectionFeedback.objects.get(request_id=request_id)
    assert (latest.expected_intent, latest.is_correct, latest.user, latest.revision) == ("balance", True,
                                                                                       reviewer_user, 2)
    assert [(label.expected_intent, label.user.username) for label in DetectionLabel.objects.order_by("id")] == [
        ("transfer", "alice"), ("balance", "rita")]


def test_feedback_comments_are_redacted_before_anything_is_stored(api_client, small_catalog, mlflow_store, settings):
    from intent.models import DetectionLabel

    settings.INTENT_LOG_MESSAGES = False
    request_id = detect(api_client, message="what is my balance")["request_id"]
    detection_records_log(request_ids=[request_id])
    comment = "mail me at jane.doe@example.com, card 4111 1111 1111 1111, phone +1 415 555 2671"
    response = feedback(api_client, request_id=request_id, correct_intent="transfer", comment=comment)
    assert response.status_code == 202
    assert response.json()["comment"] == "mail me at [email], card [card], phone [phone]"
    detection_feedback_log(request_ids=[request_id])
    stored = [DetectionFeedback.objects.get().comment, DetectionLabel.objects.get().comment,
              run_of(mlflow_store, request_id).data.tags["feedback_comment"]]
    for text in stored:
        for raw in ("jane.doe@example.com", "4111", "555"):
            assert raw not in text, text


def test_fallback_catalog_intents_are_accepted_when_the_database_has_none(api_client):
    request_id = detect(api_client, message="hello there")["request_id"]
    assert feedback(api_client, request_id=request_id, correct_intent="greeting").status_code == 202
    assert feedback(api_client, request_id=request_id, correct_intent="balance").status_code == 409


def test_request_path_stores_the_feedback_and_queues_it_without_touching_mlflow(
    api_client, small_catalog, mlflow_store, django_capture_on_commit_callbacks
):
    request_id = detect(api_client, message="what is my balance")["request_id"]
    detection_records_log(request_ids=[request_id])
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = feedback(api_client, request_id=request_id, correct_intent="out_of_scope", comment="just testing")
    assert response.status_code == 202, response.content
    assert response.json() == {
        "request_id": request_id, "detected_intent": "balance", "expected_intent": "out_of_scope",
        "is_correct": False, "comment": "just testing", "revision": 1, "state": "pending",
    }
    assert len(callbacks) == 1  # queued only once the transaction commits
    row = DetectionFeedback.objects.get(request_id=request_id)
    assert row.user.username == "alice"
    assert "expected_intent" not in run_of(mlflow_store, request_id).data.tags  # MLflow untouched so far


def test_feedback_is_written_on_the_run_idempotently_and_the_latest_wins(api_client, small_catalog, mlflow_store):
    request_id = detect(api_client, message="what is my balance")["request_id"]
    detection_records_log(request_ids=[request_id])
    broker_messages()
    # given a feedback saying the detection was wrong
    feedback(api_client, request_id=request_id, correct_intent="transfer", comment="I meant a transfer")
    # when the task logs it
    outcome = detection_feedback_log(request_ids=[request_id])
    # then the run carries contract B
    assert outcome.logged == [request_id]
    run = run_of(mlflow_store, request_id)
    assert run.data.tags["expected_intent"] == "transfer"
    assert run.data.metrics["is_correct"] == 0.0
    assert run.data.tags["feedback_comment"] == "I meant a transfer"
    assert run.info.status == "FINISHED"  # the detection's run is otherwise unchanged
    assert run.data.tags["detected_intent"] == "balance"
    # and analytics was asked, by task name, to re-read that run
    # (only this run's: the session's broker is shared by this process's tests, and a worker killed at an earlier
    # test's teardown can leave messages that reach the queue later)
    refresh = [kwargs for name, kwargs in broker_messages()
               if name == "analytics.tasks.runs_refresh_task" and run.info.run_id in kwargs["run_ids"]]
    assert refresh == [{"run_ids": [run.info.run_id]}]
    # a redelivered task writes nothing more
    assert detection_feedback_log(request_ids=[request_id]).skipped == [request_id]
    # a second feedback replaces the first: now correct, without comment
    body = feedback(api_client, request_id=request_id, correct_intent="balance").json()
    assert body["revision"] == 2 and body["is_correct"] is True and body["state"] == "pending"
    detection_feedback_log(request_ids=[request_id])
    run = run_of(mlflow_store, request_id)
    assert run.data.tags["expected_intent"] == "balance"
    assert run.data.metrics["is_correct"] == 1.0
    assert "feedback_comment" not in run.data.tags
    # a row that forgot it was logged writes the same values again: still one run, same answer
    DetectionFeedback.objects.update(state="pending")
    detection_feedback_log(request_ids=[request_id])
    assert len(detection_runs(mlflow_store)) == 1
    assert run_of(mlflow_store, request_id).data.metrics["is_correct"] == 1.0
    assert DetectionFeedback.objects.get().state == "logged"


def test_a_worker_holding_an_older_revision_does_not_mark_the_newer_one_done(
    api_client, small_catalog, mlflow_store
):
    from intent.outbox import outbox_claim
    from intent.services import feedback as feedback_service

    request_id = detect(api_client, message="what is my balance")["request_id"]
    detection_records_log(request_ids=[request_id])
    feedback(api_client, request_id=request_id, correct_intent="transfer")
    claimed = outbox_claim(model=DetectionFeedback, request_ids=[request_id])  # a worker takes revision 1 ...
    feedback(api_client, request_id=request_id, correct_intent="balance")  # ... while revision 2 arrives
    assert detection_feedback_log(request_ids=[request_id]).skipped == [request_id]  # still leased
    # the worker writes revision 1, but cannot mark revision 2 done: it hands it back for a retry
    assert feedback_service._write(claimed).retry == [request_id]
    assert DetectionFeedback.objects.get().state == "pending"
    # and the retry writes revision 2
    assert detection_feedback_log(request_ids=[request_id]).logged == [request_id]
    run = run_of(mlflow_store, request_id)
    assert run.data.tags["expected_intent"] == "balance"
    assert run.data.metrics["is_correct"] == 1.0


def test_feedback_waits_for_the_detection_run_and_is_written_once_it_is_logged(
    api_client, small_catalog, mlflow_store, eager
):
    request_id = detect(api_client, message="send 300 dollars to my savings")["request_id"]
    # the detection's run is not logged yet (no worker ran): the feedback waits
    response = feedback(api_client, request_id=request_id, correct_intent="transfer")
    assert response.status_code == 202
    assert DetectionFeedback.objects.get().state == "pending"
    assert detection_runs(mlflow_store) == []
    # logging the detection queues the waiting feedback (eagerly here)
    detection_records_log(request_ids=[request_id])
    row = DetectionFeedback.objects.get()
    assert row.state == "logged"
    run = run_of(mlflow_store, request_id)
    assert row.mlflow_run_id == run.info.run_id
    assert run.data.tags["expected_intent"] == "transfer"
    assert run.data.metrics["is_correct"] == 1.0


def test_flush_resends_feedback_whose_message_was_lost(
    api_client, small_catalog, mlflow_store, django_capture_on_commit_callbacks, eager
):
    request_id = detect(api_client, message="what is my balance")["request_id"]
    detection_records_log(request_ids=[request_id])
    with django_capture_on_commit_callbacks(execute=False):  # the message never reaches the broker
        feedback(api_client, request_id=request_id, correct_intent="balance")
    assert detection_feedback_flush(older_than_s=3600) == 0  # too young: its message may still come
    assert detection_feedback_flush(older_than_s=0) == 1
    assert DetectionFeedback.objects.get().state == "logged"
    assert run_of(mlflow_store, request_id).data.tags["expected_intent"] == "balance"


def test_mlflow_unreachable_is_retried_then_dead_lettered_then_replayed(
    api_client, small_catalog, mlflow_store, settings, eager
):
    request_id = detect(api_client, message="what is my balance")["request_id"]
    detection_records_log(request_ids=[request_id])
    settings.MLFLOW_TRACKING_URI = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings.CELERY_TASK_ALWAYS_EAGER = False
    feedback(api_client, request_id=request_id, correct_intent="transfer")
    outcome = detection_feedback_log(request_ids=[request_id])
    assert outcome.retry == [request_id] and outcome.last_error
    settings.TRACKING_RETRY_WINDOW_S = 0
    assert detection_feedback_log(request_ids=[request_id]).dead == [request_id]
    assert DetectionFeedback.objects.get().state == "dead"
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.MLFLOW_TRACKING_URI = mlflow_store
    assert detection_feedback_replay() == 1
    assert DetectionFeedback.objects.get().state == "logged"
    assert run_of(mlflow_store, request_id).data.tags["expected_intent"] == "transfer"


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_round_trip_through_a_real_worker(api_client, small_catalog, mlflow_store, start_worker):
    start_worker(name="feedback")
    request_id = detect(api_client, message="what is my balance")["request_id"]
    response = feedback(api_client, request_id=request_id, correct_intent="out_of_scope", comment="not a question")
    assert response.status_code == 202
    wait_for(lambda: DetectionFeedback.objects.filter(state="logged").exists(), timeout=90,
             message="the worker to write the feedback")
    run = run_of(mlflow_store, request_id)
    assert run.data.tags["expected_intent"] == "out_of_scope"
    assert run.data.metrics["is_correct"] == 0.0
    assert run.data.tags["feedback_comment"] == "not a question"
    assert DetectionRecord.objects.get().state == "logged"
