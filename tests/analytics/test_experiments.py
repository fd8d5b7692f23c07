"""POST /api/analytics/mlflow/experiments/recreate and `manage.py recreate_experiments`: create, restore, reset."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from mlflow.entities import ViewType
from rest_framework.test import APIClient

from analytics.mirror.sync import runs_sync
from analytics.models import DailyRollup, MirroredRun, SyncState, WindowRollup
from tests.analytics.conftest import DAY0_MS, HOUR_MS
from tests.conftest import free_port

pytestmark = pytest.mark.django_db
URL = "/api/analytics/mlflow/experiments/recreate"
OTHERS = ["intent_prompt_versions", "intent_evaluation", "intent_optimization", "intent_experiments"]


@pytest.fixture
def superuser_client(django_user_model) -> APIClient:
    root = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")
    client = APIClient()
    client.force_authenticate(root)
    return client


def test_missing_experiments_are_created_and_present_ones_left_alone(run_logger, superuser_client):
    from tests.openapi import AnswerChecker

    response = superuser_client.post(URL, {}, format="json")
    AnswerChecker(superuser_client)(response, path=URL, method="post")

    body = response.json()
    assert response.status_code == 200, body
    assert body["created"] == OTHERS and body["unchanged"] == ["intent_detection"]
    assert body["restored"] == [] and body["reset"] == [] and body["orphaned_runs"] == 0
    assert body["experiment_ids"]["intent_detection"] == run_logger.experiment_id
    for name in OTHERS:
        experiment = run_logger.client.get_experiment_by_name(name)
        assert experiment.lifecycle_stage == "active" and experiment.experiment_id == body["experiment_ids"][name]
    again = superuser_client.post(URL, {"reset": False}, format="json").json()
    assert again["created"] == [] and again["unchanged"] == ["intent_detection", *OTHERS]


def test_a_deleted_experiment_is_restored_with_its_runs(run_logger, superuser_client):
    run_ids = [run_logger.log(start_ms=DAY0_MS + i) for i in range(3)]
    runs_sync()
    run_logger.client.delete_experiment(run_logger.experiment_id)
    runs_sync(full=True)  # the mirror follows MLflow: the runs are deleted there
    assert MirroredRun.objects.count() == 0

    body = superuser_client.post(URL, {}, format="json").json()
    runs_sync()  # the restore asked for a reconcile: the runs come back into the mirror

    assert body["restored"] == ["intent_detection"]
    assert body["experiment_ids"]["intent_detection"] == run_logger.experiment_id  # same id
    assert run_logger.client.get_experiment(run_logger.experiment_id).lifecycle_stage == "active"
    assert {run.info.run_id for run in run_logger.runs() if run.info.lifecycle_stage == "active"} == set(run_ids)
    assert set(MirroredRun.objects.values_list("run_id", flat=True)) == set(run_ids)


def test_reset_creates_anew_counts_the_orphans_and_restarts_the_mirror(run_logger, superuser_client, settings):
    old_id = run_logger.experiment_id
    settings.ANALYTICS_HOURLY_ROLLUP_DAYS = 10_000  # the runs' fixed day keeps its hourly window rollups
    kept = [run_logger.log(start_ms=DAY0_MS + i * HOUR_MS) for i in range(3)]
    run_logger.client.delete_run(run_logger.log(start_ms=DAY0_MS + 5 * HOUR_MS))  # already deleted: no orphan
    runs_sync()
    assert MirroredRun.objects.filter(experiment_id=old_id).count() == 3
    assert WindowRollup.objects.filter(experiment_id=old_id, grain_minutes=60).count() == 3
    evaluation = run_logger.client.create_experiment("intent_evaluation")  # a deleted one is reset too
    run_logger.client.create_run(evaluation)
    run_logger.client.delete_experiment(evaluation)

    response = superuser_client.post(URL, {"reset": True}, format="json")

    body = response.json()
    assert response.status_code == 200, body
    assert body["reset"] == ["intent_detection", "intent_evaluation"]
    assert body["created"] == ["intent_prompt_versions", "intent_optimization", "intent_experiments"]
    assert body["orphaned_runs"] == 3 and body["mirrored_runs_dropped"] == 3
    new_id = body["experiment_ids"]["intent_detection"]
    assert new_id != old_id and body["experiment_ids"]["intent_evaluation"] != evaluation
    client = run_logger.client
    assert client.get_experiment_by_name("intent_detection").experiment_id == new_id
    old = client.get_experiment(old_id)
    assert old.lifecycle_stage == "deleted" and old.name == body["archived_as"]["intent_detection"]
    assert old.name.startswith("intent_detection.reset-")
    assert {run.info.run_id for run in client.search_runs([old_id], run_view_type=ViewType.ALL)} >= set(kept)
    assert client.search_runs([new_id], run_view_type=ViewType.ALL) == []
    # The mirror of the old id is gone and its sync starts afresh on the new experiment.
    assert not MirroredRun.objects.filter(experiment_id=old_id).exists()
    assert not DailyRollup.objects.filter(experiment_id=old_id).exists()
    assert not WindowRollup.objects.filter(experiment_id=old_id).exists()
    state = SyncState.objects.get(experiment_name=settings.MLFLOW_EXPERIMENT_NAME)
    assert state.experiment_id == "" and state.watermark_ms is None and state.mirrored_runs == 0
    run_logger.experiment_id = new_id
    fresh = run_logger.log(start_ms=DAY0_MS)
    runs_sync()
    assert list(MirroredRun.objects.values_list("run_id", "experiment_id")) == [(fresh, new_id)]


def test_only_superusers_may_recreate(mlflow_store, django_user_model, anonymous_client, api_client):
    staff = django_user_model.objects.create_user("staff", password="pw-staff-123", is_staff=True)
    as_staff = APIClient()
    as_staff.force_authenticate(staff)

    assert anonymous_client.post(URL, {}, format="json").status_code == 401
    assert api_client.post(URL, {}, format="json").status_code == 403
    assert as_staff.post(URL, {"reset": True}, format="json").status_code == 403
    assert as_staff.get("/api/analytics/mlflow/health").status_code == 200  # staff, yet not a superuser


def test_bad_input_is_a_400_naming_the_field(mlflow_store, superuser_client):
    not_boolean = superuser_client.post(URL, {"reset": "perhaps"}, format="json")
    unknown = superuser_client.post(URL, {"rest": True}, format="json")
    get = superuser_client.get(URL)
    # the schema says boolean: 1, 0, "true" and "yes" too are 400s (DRF's BooleanField would take them)
    lenient = [superuser_client.post(URL, {"reset": value}, format="json") for value in (1, 0, "true", "yes")]

    assert not_boolean.status_code == 400 and "reset" in not_boolean.json()
    assert [response.status_code for response in lenient] == [400] * 4
    assert unknown.status_code == 400 and unknown.json() == {"rest": ["Unknown field."]}
    assert get.status_code == 405


def test_an_unreachable_mlflow_is_a_503(mlflow_store, superuser_client, settings):
    settings.MLFLOW_TRACKING_URI = f"http://127.0.0.1:{free_port()}"

    response = superuser_client.post(URL, {}, format="json")

    assert response.status_code == 503 and "MLflow" in response.json()["detail"]


def test_the_command_does_the_same_and_says_so(run_logger):
    run_logger.log(start_ms=DAY0_MS)
    run_logger.log(start_ms=DAY0_MS + 1)
    created, reset = StringIO(), StringIO()

    call_command("recreate_experiments", stdout=created)
    call_command("recreate_experiments", "--reset", stdout=reset)

    assert ("created: intent_prompt_versions, intent_evaluation, intent_optimization, intent_experiments"
            in created.getvalue())
    assert "unchanged: intent_detection" in created.getvalue()
    assert ("reset: intent_detection, intent_prompt_versions, intent_evaluation, intent_optimization, "
            "intent_experiments" in reset.getvalue())
    assert "orphaned runs: 2 (left in intent_detection.reset-" in reset.getvalue()
    new = run_logger.client.get_experiment_by_name("intent_detection")
    assert new.experiment_id != run_logger.experiment_id and new.lifecycle_stage == "active"


def test_the_openapi_schema_describes_health_and_recreate_with_examples(anonymous_client):
    schema = anonymous_client.get("/api/schema/", HTTP_ACCEPT="application/json")

    body = schema.json() if schema["Content-Type"].startswith("application/json") else None
    text = schema.content.decode()
    assert schema.status_code == 200
    assert "/api/analytics/mlflow/health" in text and "/api/analytics/mlflow/experiments/recreate" in text
    assert "Degraded: the sync is late" in text and "orphaned_runs" in text
    if body is not None:
        assert set(body["paths"]["/api/analytics/mlflow/health"]["get"]["responses"]) == {
            "200", "401", "403", "429", "503"}
        assert set(body["paths"][URL]["post"]["responses"]) == {
            "200", "400", "401", "403", "413", "415", "429", "502", "503"}
