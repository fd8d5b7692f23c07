"""End to end through the real sync: runs logged with MlflowClient into a real store, mirrored, then feedback
written on a run (contract B) and re-read by `runs_refresh_task`, and evaluation runs (contract C) mirrored
by the beat task and shown by prompt-analysis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from analytics.mirror.sync import runs_sync
from analytics.models import DailyRollup, MirroredRun
from analytics.tasks import TRANSIENT_ERRORS, runs_refresh_task, runs_sync_task
from tests.analytics.conftest import HOUR_MS
from tests.analytics.test_rollups import assert_rollups_exact

pytestmark = pytest.mark.django_db
BASE = "/api/analytics/mlflow/"


def today_ms(hour: int) -> int:
    midnight = datetime.combine(timezone.now().astimezone(UTC).date(), datetime.min.time(), tzinfo=UTC)
    return int(midnight.timestamp() * 1000) + hour * HOUR_MS


def feedback_write(client: MlflowClient, run_id: str, *, expected: str, correct: bool) -> None:
    """What the intent app writes on a detection run (contract B)."""
    client.set_tag(run_id, "expected_intent", expected)
    client.log_batch(run_id, metrics=[Metric("is_correct", 1.0 if correct else 0.0, 0, 0)])
    client.set_tag(run_id, "feedback_comment", "checked by hand")


def test_the_refresh_task_is_idempotent_and_retries_only_transient_errors():
    assert runs_refresh_task.name == "analytics.tasks.runs_refresh_task"  # the intent app sends it by name
    assert runs_refresh_task.acks_late and runs_refresh_task.reject_on_worker_lost
    assert runs_refresh_task.autoretry_for == TRANSIENT_ERRORS and runs_refresh_task.retry_backoff


def test_feedback_round_trip_through_mlflow_the_sync_and_the_reports(run_logger, staff_client):
    # given: three detections of today, mirrored by the sync
    logged = [
        run_logger.log(start_ms=today_ms(1), intent="balance", prompt_version="pv-one", latency_ms=2.0),
        run_logger.log(start_ms=today_ms(2), intent="transfer", prompt_version="pv-one", latency_ms=3.0),
        run_logger.log(start_ms=today_ms(3), intent="balance", prompt_version="pv-two", latency_ms=4.0,
                       model="openai/gpt-4o-mini"),
    ]
    runs_sync()
    overview = staff_client.get(BASE + "overview", {"days": 1}).json()
    assert overview["total_runs"] == 3 and overview["labelled_runs"] == 0 and overview["accuracy"] is None

    # when: feedback is written on two runs (long after the sync's window, as far as it knows), and the
    # intent app asks for them to be re-read
    feedback_write(run_logger.client, logged[0], expected="balance", correct=True)
    feedback_write(run_logger.client, logged[1], expected="balance", correct=False)
    result = runs_refresh_task(run_ids=[logged[0], logged[1]])

    # then: the mirror has the feedback in its columns (not in the JSON), the rollups count it, the reports show it
    assert result["updated"] == 2
    row = MirroredRun.objects.get(run_id=logged[1])
    assert (row.expected_intent, row.is_correct) == ("balance", False)
    assert "expected_intent" not in row.tags and "is_correct" not in row.metrics
    assert row.tags["feedback_comment"] == "checked by hand"
    total = DailyRollup.objects.get(dimension="all")
    assert (total.labelled, total.correct) == (2, 1)
    assert_rollups_exact()
    overview = staff_client.get(BASE + "overview", {"days": 1}).json()
    assert overview["labelled_runs"] == 2 and overview["accuracy"] == 0.5
    versions = {row["prompt_version"]: row for row in staff_client.get(BASE + "prompt-analysis").json()["versions"]}
    assert (versions["pv-one"]["labelled_runs"], versions["pv-one"]["accuracy"]) == (2, 0.5)
    assert (versions["pv-two"]["labelled_runs"], versions["pv-two"]["accuracy"]) == (0, None)
    models = {row["model_name"]: row for row in staff_client.get(BASE + "model-comparison").json()["models"]}
    assert models["local/tfidf-linear"]["accuracy"] == 0.5 and models["openai/gpt-4o-mini"]["labelled_runs"] == 0
    confusion = staff_client.get(BASE + "confusion").json()
    assert confusion["matrix"] == [{"expected": "balance", "detected": "balance", "count": 1},
                                   {"expected": "balance", "detected": "transfer", "count": 1}]

    # and: a later feedback that corrects the first one replaces it
    feedback_write(run_logger.client, logged[1], expected="transfer", correct=True)
    runs_refresh_task(run_ids=[logged[1]])
    assert staff_client.get(BASE + "overview", {"days": 1}).json()["accuracy"] == 1.0
    assert_rollups_exact()


def test_a_refresh_never_leaves_the_mirror_less_complete_than_a_sync(run_logger, staff_client):
    """30 runs logged, none mirrored yet, feedback on 2: the refresh mirrors all 30 (an incremental sync plus
    the 2 ids), not the 2 labelled ones ahead of the rest ("total_runs 2, labelled 2, accuracy 0.0")."""
    logged = [run_logger.log(start_ms=today_ms(0) + index * 1000, intent="balance") for index in range(30)]
    feedback_write(run_logger.client, logged[3], expected="transfer", correct=False)
    feedback_write(run_logger.client, logged[7], expected="balance", correct=True)

    result = runs_refresh_task(run_ids=[logged[3], logged[7]])

    assert result["added"] == 30
    overview = staff_client.get(BASE + "overview", {"days": 1}).json()
    assert (overview["total_runs"], overview["labelled_runs"], overview["accuracy"]) == (30, 2, 0.5)
    assert_rollups_exact()


def evaluation_log(client: MlflowClient, experiment_id: str, *, prompt_version: str, start_ms: int,
                   accuracy: float, finish: bool = True) -> str:
    """An evaluation run as `evaluate_intents` logs it (contract C)."""
    run = client.create_run(experiment_id, start_time=start_ms, tags={
        "prompt_version": prompt_version, "model_name": "local/tfidf-linear", "dataset": "data_small.json",
        "split": "test", "run_kind": "evaluation"})
    if finish:
        client.log_batch(run.info.run_id, metrics=[
            Metric(name, value, start_ms + 1000, 0) for name, value in (
                ("in_scope_accuracy", accuracy), ("oos_recall", 0.5), ("macro_f1", accuracy - 0.01),
                ("latency_p50_ms", 0.05), ("examples", 120.0))])
        client.set_terminated(run.info.run_id, "FINISHED", end_time=start_ms + 2000)
    return run.info.run_id


def test_prompt_analysis_shows_the_latest_evaluation_of_each_version(run_logger, staff_client):
    run_logger.log(start_ms=today_ms(1), prompt_version="pv-one")
    run_logger.log(start_ms=today_ms(2), prompt_version="pv-two")
    run_logger.log(start_ms=today_ms(3), prompt_version="pv-three")
    client = run_logger.client
    evaluation = client.create_experiment(settings.ANALYTICS_EVALUATION_EXPERIMENT_NAME)
    evaluation_log(client, evaluation, prompt_version="pv-one", start_ms=today_ms(0) - 48 * HOUR_MS, accuracy=0.80)
    newest = evaluation_log(client, evaluation, prompt_version="pv-one", start_ms=today_ms(0) - 24 * HOUR_MS,
                            accuracy=0.90)
    evaluation_log(client, evaluation, prompt_version="pv-one", start_ms=today_ms(0), accuracy=0.1,
                   finish=False)  # still running: no figures yet
    two = evaluation_log(client, evaluation, prompt_version="pv-two", start_ms=today_ms(0) - HOUR_MS, accuracy=0.7)

    result = runs_sync_task()  # the beat task: the detection experiment, then the evaluation one

    assert result["added"] == 3 and result["evaluation"]["added"] == 4
    versions = {row["prompt_version"]: row for row in staff_client.get(BASE + "prompt-analysis").json()["versions"]}
    assert set(versions) == {"pv-one", "pv-two", "pv-three"}  # evaluation runs are not detections
    one = versions["pv-one"]["evaluation"]
    assert one["run_id"] == newest
    assert one["in_scope_accuracy"] == 0.9 and one["oos_recall"] == 0.5 and one["examples"] == 120
    assert abs(one["macro_f1"] - 0.89) < 1e-12 and one["latency_p50_ms"] == 0.05
    assert datetime.fromisoformat(one["evaluated_at"]) == datetime.fromtimestamp(
        (today_ms(0) - 24 * HOUR_MS + 2000) / 1000, tz=UTC)
    assert versions["pv-two"]["evaluation"]["run_id"] == two
    assert versions["pv-three"]["evaluation"] is None
    assert staff_client.get(BASE + "overview", {"days": 1}).json()["total_runs"] == 3


def test_the_report_of_runs_synced_from_mlflow_equals_the_hand_count(run_logger, staff_client, settings):
    """The sync path end to end: runs logged with the real client, the mirror and rollups the sync wrote."""
    settings.MLFLOW_UI_URL = "http://mlflow.test"
    start = today_ms(0) - 2 * 24 * HOUR_MS
    run_logger.log(start_ms=start, latency_ms=10.0, tokens=(100, 10, 0.01))
    failed = run_logger.log(start_ms=start + HOUR_MS, error_category="lm_timeout", latency_ms=900.0, intent="transfer")
    run_logger.log(start_ms=start + 2 * HOUR_MS, error_category="lm_unavailable", fallback=True, latency_ms=5.0)
    runs_sync()
    body = staff_client.get(BASE + "report", {"days": 3}).json()
    assert body["overview"]["total_runs"] == 3 and body["overview"]["error_rate"] == pytest.approx(1 / 3)
    assert body["overview"]["tokens"] == {"prompt": 100, "completion": 10, "total": 110}
    assert body["errors"]["latest"] == [{
        "run_id": failed, "request_id": MirroredRun.objects.get(run_id=failed).request_id,
        "start_time": body["errors"]["latest"][0]["start_time"], "error_category": "lm_timeout",
        "error_type": "TimeoutError",
        "mlflow_url": f"http://mlflow.test/#/experiments/{run_logger.experiment_id}/runs/{failed}"}]
    assert datetime.fromisoformat(body["errors"]["latest"][0]["start_time"]) == datetime.fromtimestamp(
        (start + HOUR_MS) / 1000, tz=UTC)
    assert [row["runs"] for row in body["trends"]["days"]] == [3, 0, 0]
    assert body["sla"]["days_with_runs"] == 1
    assert timedelta(days=body["period"]["days"]) == timedelta(days=3)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_runs_the_refresh_sent_by_name(run_logger, start_worker):
    """What the intent app does after writing feedback: `send_task` by name, no import of analytics."""
    from celery import current_app

    from tests.conftest import wait_for

    run_id = run_logger.log(start_ms=today_ms(1), intent="balance")
    runs_sync()
    feedback_write(run_logger.client, run_id, expected="transfer", correct=False)
    start_worker(name="refresh")

    current_app.send_task("analytics.tasks.runs_refresh_task", kwargs={"run_ids": [run_id]})

    row = wait_for(lambda: MirroredRun.objects.filter(run_id=run_id, is_correct__isnull=False).first(), timeout=60,
                   message="the worker to refresh the run")
    assert (row.expected_intent, row.is_correct) == ("transfer", False)
    # The day's rollups are recomputed right after the row is written, in the next transaction.
    wait_for(lambda: DailyRollup.objects.get(dimension="all").labelled == 1, timeout=30,
             message="the refresh to recompute the day's rollups")
