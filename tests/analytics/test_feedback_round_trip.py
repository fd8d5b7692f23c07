"""The whole ground-truth loop through both apps' real interfaces: detection request → MLflow run (the
worker's service) → POST /api/intent/feedback → feedback written on the run (the worker's service) → the
analytics sync → accuracy in prompt-analysis, overview, model-comparison and confusion."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from analytics.mirror.sync import runs_sync
from intent.services import detection_feedback_log, detection_records_log

pytestmark = pytest.mark.django_db
BASE = "/api/analytics/mlflow/"


@pytest.fixture
def staff_client(django_user_model) -> APIClient:
    staff = django_user_model.objects.create_user(username="stella", password="pw-stella-1234", is_staff=True)
    client = APIClient()
    client.force_authenticate(staff)
    return client


def test_feedback_reaches_accuracy_in_prompt_analysis(api_client, staff_client, small_catalog, mlflow_store):
    messages = ["what is my bank balance", "transfer 50 dollars to my savings account", "i lost my credit card"]
    detections = []
    for message in messages:
        response = api_client.post("/api/intent/detect", {"message": message}, format="json")
        assert response.status_code == 200, response.content
        detections.append(response.json())
    request_ids = [d["request_id"] for d in detections]
    logged = detection_records_log(request_ids=request_ids)
    assert sorted(logged.logged) == sorted(request_ids)

    # Before any feedback: the runs are mirrored, none labelled.
    runs_sync()
    version = detections[0]["prompt_version"]
    before = staff_client.get(f"{BASE}prompt-analysis?days=1").json()
    (row,) = [v for v in before["versions"] if v["prompt_version"] == version]
    assert row["runs"] == 3 and row["labelled_runs"] == 0 and row["accuracy"] is None

    # Two confirmations and one correction; the corrected intent is another catalog intent.
    wrong = next(intent["name"] for intent in small_catalog["intents"] if intent["name"] != detections[2]["intent"])
    labels = [detections[0]["intent"], detections[1]["intent"], wrong]
    for detection, label in zip(detections, labels, strict=True):
        response = api_client.post("/api/intent/feedback",
                                   {"request_id": detection["request_id"], "correct_intent": label}, format="json")
        assert response.status_code == 202, response.content
    detection_feedback_log(request_ids=request_ids)
    runs_sync()  # the beat's incremental sync (the refresh message waits in the broker, not run here)

    after = staff_client.get(f"{BASE}prompt-analysis?days=1").json()
    (row,) = [v for v in after["versions"] if v["prompt_version"] == version]
    assert row["labelled_runs"] == 3
    assert row["accuracy"] == pytest.approx(2 / 3)
    overview = staff_client.get(f"{BASE}overview?days=1").json()
    assert (overview["labelled_runs"], overview["accuracy"]) == (3, pytest.approx(2 / 3))
    (model,) = staff_client.get(f"{BASE}model-comparison?days=1").json()["models"]
    assert (model["labelled_runs"], model["accuracy"]) == (3, pytest.approx(2 / 3))
    confusion = staff_client.get(f"{BASE}confusion?days=1").json()
    assert confusion["labelled_runs"] == 3
    assert {(c["expected"], c["detected"], c["count"]) for c in confusion["matrix"]} >= {
        (wrong, detections[2]["intent"], 1)}
