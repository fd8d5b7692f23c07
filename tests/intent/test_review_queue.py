"""The review queue: each detection's detail stored with its request (message redacted, or none), the three
strategies returning what they claim, labelled items leaving, the permission, the unbiased accuracy of random
labels in the overview (against a Wilson interval computed here), and labels after the record's retention."""

from __future__ import annotations

import math
import random
import uuid

import pytest
from django.contrib.auth.models import Permission
from mlflow.tracking import MlflowClient
from rest_framework.test import APIClient

from analytics.mirror.sync import runs_sync
from intent.models import DetectionDetail, DetectionFeedback, DetectionRecord
from intent.services import detection_feedback_log, detection_records_log
from tests.intent.test_lm_path import answer
from tests.intent.test_tracking import detection_runs
from tests.llm_server import FakeLLMServer

URL = "/api/intent/review-queue/"
pytestmark = pytest.mark.django_db

MESSAGES = [
    "what is my bank balance", "transfer 50 dollars to my savings account", "i lost my credit card",
    "how much is the euro in dollars", "do i need a visa to visit japan", "pay my electricity bill",
    "move money between accounts", "what's the exchange rate for yen", "is my card blocked", "freeze my card",
    "my balance please", "send 20 to my checking",
]


@pytest.fixture
def reviewer(django_user_model) -> APIClient:
    user = django_user_model.objects.create_user(username="rhea", password="pw-rhea-12345")
    user.user_permissions.add(Permission.objects.get(codename="label_detections"))
    client = APIClient()
    client.force_authenticate(django_user_model.objects.get(pk=user.pk))
    return client


def detect_all(client: APIClient, messages: list[str]) -> list[dict]:
    bodies = []
    for message in messages:
        response = client.post("/api/intent/detect", {"message": message, "user_role": "customer",
                                                      "current_module": "banking"}, format="json")
        assert response.status_code == 200, response.content
        bodies.append(response.json())
    return bodies


def queue(client: APIClient, **params) -> dict:
    response = client.get(URL, params)
    assert response.status_code == 200, response.content
    return response.json()


def label(client: APIClient, request_id: str, intent: str) -> None:
    response = client.post("/api/intent/feedback", {"request_id": request_id, "correct_intent": intent}, format="json")
    assert response.status_code == 202, response.content


def test_a_detection_stores_its_detail_with_the_message_redacted(api_client, small_catalog):
    raw = {"email": "jane.doe@example.com", "card": "4111 1111 1111 1111", "phone": "+1 415 555 0134"}
    message = f"transfer 50 dollars to {raw['email']} from card {raw['card']}, call {raw['phone']}"
    (body,) = detect_all(api_client, [message])

    detail = DetectionDetail.objects.get(request_id=body["request_id"])
    assert detail.message and all(value not in detail.message for value in raw.values())
    assert "[email]" in detail.message and "[card]" in detail.message and "[phone]" in detail.message
    assert detail.detected_intent == body["intent"] and detail.confidence == pytest.approx(body["confidence"])
    assert (detail.user_role, detail.current_module, detail.prompt_version) == (
        "customer", "banking", body["prompt_version"])
    # The local model's ranking: best first, probabilities, the margin between the first two.
    probabilities = [probability for _, probability in detail.alternatives]
    assert 2 <= len(detail.alternatives) <= 5 and probabilities == sorted(probabilities, reverse=True)
    assert detail.alternatives[0][1] == pytest.approx(body["confidence"], abs=1e-6)
    assert detail.margin == pytest.approx(probabilities[0] - probabilities[1], abs=1e-6)
    assert detail.local_intent == "" and detail.disagreement is False  # the local model answered itself


def test_no_message_is_stored_when_storing_is_off(api_client, reviewer, small_catalog, settings):
    settings.INTENT_STORE_MESSAGES = False
    (body,) = detect_all(api_client, ["transfer 50 dollars to my savings account"])
    assert DetectionDetail.objects.get(request_id=body["request_id"]).message == ""
    answer_ = queue(reviewer, strategy="uncertain")
    assert answer_["messages_stored"] is False
    assert [item["message"] for item in answer_["items"]] == [None]


def test_uncertain_orders_by_the_margin_and_labelled_items_leave(api_client, reviewer, small_catalog):
    bodies = detect_all(api_client, MESSAGES)
    margins = {str(detail.request_id): detail.margin for detail in DetectionDetail.objects.all()}
    expected = sorted(margins, key=lambda request_id: margins[request_id])[:5]

    first = queue(reviewer, strategy="uncertain", limit=5)
    assert [item["request_id"] for item in first["items"]] == expected
    assert [item["margin"] for item in first["items"]] == sorted(item["margin"] for item in first["items"])
    item = first["items"][0]
    assert item["message"] in MESSAGES and item["context"]["current_module"] == "banking"
    assert item["alternatives"][0]["probability"] - item["alternatives"][1]["probability"] == pytest.approx(
        item["margin"], abs=1e-6)

    # A reviewer labels the two most uncertain (through the feedback endpoint): they leave the queue.
    by_id = {body["request_id"]: body for body in bodies}
    for labelled in expected[:2]:
        label(reviewer, labelled, by_id[labelled]["intent"])
    after = queue(reviewer, strategy="uncertain", limit=5)
    assert [item["request_id"] for item in after["items"]] == sorted(
        set(margins) - set(expected[:2]), key=lambda request_id: margins[request_id])[:5]
    assert not set(expected[:2]) & {item["request_id"] for item in queue(reviewer, strategy="random", limit=100)[
        "items"]}


def test_random_serves_a_uniform_sample_of_the_unlabelled_and_marks_it(api_client, reviewer, small_catalog):
    bodies = detect_all(api_client, MESSAGES)
    label(reviewer, bodies[0]["request_id"], bodies[0]["intent"])
    unlabelled = {body["request_id"] for body in bodies[1:]}

    seen: dict[str, int] = dict.fromkeys(unlabelled, 0)
    draws = 300
    for _ in range(draws):
        items = queue(reviewer, strategy="random", limit=1)["items"]
        assert len(items) == 1 and items[0]["request_id"] in unlabelled
        seen[items[0]["request_id"]] += 1
    # Uniform over the 11 unlabelled: each expected 300/11 ≈ 27 times; a chi-square test at p > 0.001.
    from scipy.stats import chisquare

    assert chisquare(list(seen.values())).pvalue > 0.001, seen
    assert set(DetectionDetail.objects.filter(sampled_at__isnull=False).values_list("request_id", flat=True)) == {
        uuid.UUID(request_id) for request_id in unlabelled}


def test_disagreement_lists_where_the_lm_and_the_local_model_differ(api_client, reviewer, small_catalog, settings):
    settings.INTENT_LM = "openai/fake-intent-model"
    settings.INTENT_LM_API_KEY = "sk-test-not-a-real-key"
    with FakeLLMServer(answer("balance")) as server:  # the LM says `balance` to everything
        settings.INTENT_LM_API_BASE = server.api_base
        bodies = detect_all(api_client, ["what is my bank balance", "i lost my credit card", "freeze my card"])
    details = {str(d.request_id): d for d in DetectionDetail.objects.all()}
    assert all(body["intent"] == "balance" for body in bodies)
    assert all(detail.local_intent for detail in details.values())  # the second opinion beside each LM answer
    disagreeing = {request_id for request_id, d in details.items() if d.local_intent != "balance"}
    assert disagreeing and len(disagreeing) < 3  # the balance question agrees; the card ones do not

    items = queue(reviewer, strategy="disagreement")["items"]
    assert {item["request_id"] for item in items} == disagreeing
    assert all(item["local_intent"] not in (None, "balance") and item["detected_intent"] == "balance"
               for item in items)


def test_the_queue_needs_the_label_permission_and_valid_parameters(api_client, reviewer, anonymous_client,
                                                                   small_catalog):
    assert anonymous_client.get(URL).status_code == 401
    forbidden = api_client.get(URL)
    assert forbidden.status_code == 403 and "label_detections" in forbidden.json()["detail"]
    for params, field in (({"strategy": "newest"}, "strategy"), ({"limit": 0}, "limit"), ({"limit": 101}, "limit"),
                          ({"limit": "7.0"}, "limit"), ({"days": 91}, "days"), ({"module": ""}, "module"),
                          ({"colour": "red"}, "colour")):
        response = reviewer.get(URL, params)
        assert response.status_code == 400, (params, response.content)
        assert field in response.content.decode(), (params, response.content)


def wilson(successes: int, trials: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval, written out (the reference for statsmodels' in the overview)."""
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z / (1 + z * z / trials) * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return centre - half, centre + half


def test_overview_reports_the_unbiased_accuracy_of_random_labels(api_client, reviewer, small_catalog,
                                                                  mlflow_store, django_user_model):
    staff = APIClient()
    staff.force_authenticate(django_user_model.objects.create_user(username="stan", password="pw", is_staff=True))
    bodies = detect_all(api_client, MESSAGES)
    by_id = {body["request_id"]: body for body in bodies}
    detection_records_log(request_ids=list(by_id))

    # Uncertain items get labelled first (a biased sample: half of them called wrong) ...
    uncertain = [item["request_id"] for item in queue(reviewer, strategy="uncertain", limit=4)["items"]]
    wrong = next(intent["name"] for intent in small_catalog["intents"])
    for request_id in uncertain:
        label(reviewer, request_id, wrong if by_id[request_id]["intent"] != wrong else "out_of_scope")
    # ... then random ones: 5 of them, 4 confirmed and one corrected.
    sampled = [item["request_id"] for item in queue(reviewer, strategy="random", limit=5)["items"]]
    verdicts = [True, True, False, True, True]
    for request_id, right in zip(sampled, verdicts, strict=True):
        detected = by_id[request_id]["intent"]
        label(reviewer, request_id, detected if right else (wrong if detected != wrong else "out_of_scope"))
    detection_feedback_log(request_ids=uncertain + sampled)
    runs_sync()

    overview = staff.get("/api/analytics/mlflow/overview?days=1").json()
    assert overview["labelled_runs"] == 9 and overview["accuracy"] == pytest.approx(4 / 9)
    sampled_accuracy = overview["sampled_accuracy"]
    assert (sampled_accuracy["labelled"], sampled_accuracy["correct"]) == (5, 4)
    assert sampled_accuracy["accuracy"] == pytest.approx(0.8)
    assert sampled_accuracy["ci95"] == pytest.approx(list(wilson(4, 5)), abs=1e-9)
    # A filter narrows it like any report: no random label in another module.
    other = staff.get("/api/analytics/mlflow/overview?days=1&module=travel").json()["sampled_accuracy"]
    assert other == {"labelled": 0, "correct": 0, "accuracy": None, "ci95": None}


def test_a_detection_past_its_records_retention_can_still_be_labelled(api_client, reviewer, small_catalog,
                                                                      mlflow_store):
    (body,) = detect_all(api_client, ["i lost my credit card"])
    detection_records_log(request_ids=[body["request_id"]])
    DetectionRecord.objects.all().delete()  # what TRACKING_RECORD_RETENTION_DAYS does to a logged record

    corrected = random.choice([i["name"] for i in small_catalog["intents"] if i["name"] != body["intent"]])
    label(reviewer, body["request_id"], corrected)
    outcome = detection_feedback_log(request_ids=[body["request_id"]])
    assert outcome.logged == [body["request_id"]]
    assert DetectionFeedback.objects.get(request_id=body["request_id"]).state == "logged"
    (run,) = detection_runs(mlflow_store)
    run = MlflowClient(mlflow_store).get_run(run.info.run_id)
    assert run.data.tags["expected_intent"] == corrected and run.data.metrics["is_correct"] == 0.0


def django_database_text() -> str:
    """Every row of every table of the Django database, as text."""
    from django.db import connection

    chunks = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            chunks.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(chunks)


def sqlite_text(path: str) -> str:
    """Every row of every table of a SQLite database (MLflow's store), as text, its WAL included."""
    import sqlite3

    with sqlite3.connect(path) as connection:
        tables = [name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return "\n".join(repr(row) for table in tables for row in connection.execute(f'SELECT * FROM "{table}"'))


def test_personal_data_is_never_stored_raw_anywhere(api_client, reviewer, small_catalog, mlflow_store, settings,
                                                   caplog):
    settings.INTENT_LOG_MESSAGES = True  # the run's message tag too: redacted like the stored message
    raw = ["jane.doe@example.com", "4111 1111 1111 1111", "4111111111111111", "+1 415 555 0134", "415 555 0134",
           "DE89 3704 0044 0532 0130 00"]
    caplog.set_level("DEBUG")
    (body,) = detect_all(api_client, ["send 50 to jane.doe@example.com, card 4111 1111 1111 1111, "
                                      "call +1 415 555 0134, iban DE89 3704 0044 0532 0130 00"])
    detection_records_log(request_ids=[body["request_id"]])
    response = reviewer.post("/api/intent/feedback", {"request_id": body["request_id"], "correct_intent": "transfer",
                                                      "comment": "it was jane.doe@example.com, 415 555 0134"},
                             format="json")
    assert response.status_code == 202
    detection_feedback_log(request_ids=[body["request_id"]])
    runs_sync()
    queued = reviewer.get(URL, {"strategy": "random", "limit": 100}).content.decode()

    detail = DetectionDetail.objects.get(request_id=body["request_id"])
    assert "[email]" in detail.message and "[iban]" in detail.message.lower()
    store = sqlite_text(mlflow_store.removeprefix("sqlite:///"))
    assert "[email]" in store  # the redacted message did reach MLflow (so the search below looks where it is)
    for place, text in (("django database", django_database_text()), ("mlflow store", store),
                        ("logs", caplog.text), ("review queue", queued)):
        for value in raw:
            assert value not in text, f"{value!r} found raw in the {place}"
