"""Retention: mirrored raw rows past ANALYTICS_RAW_RETENTION_DAYS go while the daily rollups stay (reports over
those days answer the same before and after, and no sync, full read, reconcile, late tag or deletion in MLflow
brings rows back or changes a frozen day); stored message text and details go by their own settings; MLflow's
old runs go through its API when asked; the command prints what it removed (or would)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core import checks
from django.core.management import call_command
from django.utils import timezone
from mlflow.entities import ViewType

from analytics.checks import retention_check
from analytics.mirror.retention import raw_horizon
from analytics.mirror.sync import runs_refresh, runs_sync
from analytics.models import DailyRollup, MirroredRun
from intent.models import DetectionDetail
from intent.services.retention import expired_data_purge

pytestmark = pytest.mark.django_db
BASE = "/api/analytics/mlflow/"
DAYS = 21


@pytest.fixture
def history(run_logger, settings) -> dict[str, int]:
    """Runs over the last 21 days (one to five a day), mirrored; run id -> start time (ms)."""
    settings.ANALYTICS_CACHE_TIMEOUT_S = 0  # every answer computed: what is read is what is there
    settings.ANALYTICS_RAW_RETENTION_DAYS = 0  # mirrored in full first, as a mirror older than the setting would be
    rng = random.Random(16)
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    starts = {}
    for days_ago in range(DAYS):
        for _ in range(rng.randint(1, 5)):
            start = midnight - timedelta(days=days_ago) + timedelta(seconds=rng.randint(0, 3600 * 6))
            start_ms = int(start.timestamp() * 1000)
            starts[run_logger.log_random(rng, start_ms=start_ms)] = start_ms
    runs_sync()
    assert MirroredRun.objects.count() == len(starts)
    return starts


def rounded(value):
    """A report's answer with its floats to 9 significant digits: a kept day recomputed by a full sync may sum its
    latencies in another order (a last-bit difference); every count stays exact."""
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [rounded(item) for item in value]
    return value


def reports(client) -> dict:
    return rounded({name: client.get(f"{BASE}{name}?days={DAYS}").json()
                    for name in ("overview", "trends", "model-comparison")})


def rollups(*, before=None) -> list[tuple]:
    """The daily rollups (of the days before `before`: frozen ones, compared exactly)."""
    rows = DailyRollup.objects.all() if before is None else DailyRollup.objects.filter(day__lt=before)
    return sorted(rows.values_list("day", "dimension", "value", "runs", "errors", "labelled", "correct",
                                   "latency_sum_ms", "confidence_sum"))


def test_raw_rows_go_and_reports_over_those_days_answer_the_same(history, run_logger, staff_client, settings):
    settings.ANALYTICS_RAW_RETENTION_DAYS = 10
    horizon = raw_horizon()
    before, rollups_before = reports(staff_client), rollups(before=horizon)
    horizon_ms = int(datetime(horizon.year, horizon.month, horizon.day, tzinfo=UTC).timestamp() * 1000)
    old = {run_id for run_id, start in history.items() if start < horizon_ms}
    assert old and len(old) < len(history)

    dry = expired_data_purge(dry_run=True)
    assert dry["mirrored_runs"] == len(old) and MirroredRun.objects.count() == len(history)
    removed = expired_data_purge()
    assert removed["mirrored_runs"] == len(old)
    assert set(MirroredRun.objects.values_list("run_id", flat=True)) == set(history) - old
    assert rollups(before=horizon) == rollups_before and reports(staff_client) == before

    # Nothing brings the rows back, or changes a frozen day: a full read, a reconcile, a late tag on an old run
    # read again on purpose, an old run deleted in MLflow.
    settings.ANALYTICS_RECONCILE_INTERVAL_S = 0
    runs_sync(full=True)
    runs_sync()
    oldest = min(old, key=history.get)
    run_logger.client.set_tag(oldest, "expected_intent", "balance")
    run_logger.client.log_metric(oldest, "is_correct", 0.0)
    runs_refresh(run_ids=[oldest])
    run_logger.client.delete_run(sorted(old - {oldest})[0])
    runs_sync(full=True)
    assert set(MirroredRun.objects.values_list("run_id", flat=True)) == set(history) - old
    assert rollups(before=horizon) == rollups_before and reports(staff_client) == before

    # A run of a kept day still counts as always.
    recent = max(history, key=history.get)
    run_logger.client.delete_run(recent)
    runs_sync()
    assert reports(staff_client)["overview"]["total_runs"] == before["overview"]["total_runs"] - 1


def detail(request_id_suffix: int, *, days_ago: float, message: str = "pay my bill") -> DetectionDetail:
    return DetectionDetail.objects.create(
        request_id=f"00000000-0000-0000-0000-{request_id_suffix:012d}", message=message,
        created_at=timezone.now() - timedelta(days=days_ago), model_name="local/tfidf-linear", prompt_version="v1",
        detected_intent="pay_bill", confidence=0.9, status="success")


def test_message_text_and_details_go_by_their_own_retention(settings):
    settings.INTENT_MESSAGE_RETENTION_DAYS, settings.ANALYTICS_RAW_RETENTION_DAYS = 30, 90
    fresh, texts_expired, gone = detail(1, days_ago=29), detail(2, days_ago=31), detail(3, days_ago=91)

    out = StringIO()
    call_command("purge_expired_data", "--dry-run", stdout=out)
    assert "would go:         2 stored message texts erased" in out.getvalue()
    assert "would go:         1 detection details deleted" in out.getvalue()
    assert DetectionDetail.objects.exclude(message="").count() == 3

    out = StringIO()
    call_command("purge_expired_data", stdout=out)
    assert "        1 detection details deleted" in out.getvalue()
    assert not DetectionDetail.objects.filter(pk=gone.pk).exists()
    texts_expired.refresh_from_db()
    fresh.refresh_from_db()
    assert texts_expired.message == "" and texts_expired.message_erased_at is not None
    assert fresh.message == "pay my bill" and fresh.message_erased_at is None


def trace_log(uri: str, experiment_id: str, *, start_ms: int) -> str:
    """A detection's trace as the worker writes it, started at `start_ms`; its trace id."""
    import uuid

    from mlflow.tracing.client import TracingClient

    from intent.tracking.traces import trace_id_for, trace_spans_build

    request_id = str(uuid.uuid4())
    payload = {"start_time": start_ms, "end_time": start_ms + 2, "status": "FINISHED", "params": {},
               "metrics": {"confidence_score": 0.9},
               "tags": {"request_id": request_id, "detected_intent": "balance", "user_role": "customer"},
               "trace": {"message": "my balance", "alternatives": [["balance", 0.9]], "local_ms": 1.0}}
    TracingClient(uri).log_spans(experiment_id, trace_spans_build(payload))
    return trace_id_for(request_id)


def test_mlflow_runs_past_their_retention_are_deleted_through_its_api(history, run_logger, settings, mlflow_store):
    settings.ANALYTICS_RAW_RETENTION_DAYS, settings.TRACKING_MLFLOW_RETENTION_DAYS = 10, 15
    cutoff_ms = int((timezone.now() - timedelta(days=15)).timestamp() * 1000)
    expected = {run_id for run_id, start in history.items() if start < cutoff_ms}
    assert expected
    old_trace = trace_log(mlflow_store, run_logger.experiment_id, start_ms=cutoff_ms - 86_400_000)
    new_trace = trace_log(mlflow_store, run_logger.experiment_id, start_ms=cutoff_ms + 86_400_000)

    assert expired_data_purge(dry_run=True)["mlflow_runs"] == len(expected)
    assert not [run for run in run_logger.runs() if run.info.lifecycle_stage == "deleted"]
    removed = expired_data_purge()
    assert removed["mlflow_runs"] == len(expected) and removed["mlflow_traces"] == 1
    deleted = {run.info.run_id for run in run_logger.client.search_runs(
        [run_logger.experiment_id], run_view_type=ViewType.DELETED_ONLY, max_results=1000)}
    assert deleted == expected
    assert [t.info.trace_id for t in run_logger.client.search_traces(locations=[run_logger.experiment_id])] == [
        new_trace] != [old_trace]


def test_mlflow_retention_shorter_than_the_mirrors_is_refused(settings):
    settings.ANALYTICS_RAW_RETENTION_DAYS, settings.TRACKING_MLFLOW_RETENTION_DAYS = 90, 30
    (error,) = retention_check()
    assert error.id == "analytics.E003" and error.level == checks.ERROR
    settings.ANALYTICS_RAW_RETENTION_DAYS = 0  # raw rows kept forever: no MLflow run may go either
    assert [e.id for e in retention_check()] == ["analytics.E003"]
    settings.ANALYTICS_RAW_RETENTION_DAYS, settings.TRACKING_MLFLOW_RETENTION_DAYS = 30, 30
    assert retention_check() == []


@pytest.fixture
def unsynced_history(run_logger, settings) -> dict[str, int]:
    """Runs over the last 21 days in MLflow, not mirrored yet: the history a fresh mirror meets."""
    settings.ANALYTICS_CACHE_TIMEOUT_S = 0
    rng = random.Random(21)
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    starts = {}
    for days_ago in range(DAYS):
        for _ in range(rng.randint(1, 4)):
            start_ms = int((midnight - timedelta(days=days_ago, seconds=-rng.randint(0, 3600 * 6))).timestamp() * 1000)
            starts[run_logger.log_random(rng, start_ms=start_ms)] = start_ms
    return starts


def test_a_fresh_mirror_takes_in_history_before_the_horizon_once(unsynced_history, staff_client, settings):
    settings.ANALYTICS_RAW_RETENTION_DAYS = 10
    runs_sync()  # the first sync of a fresh mirror: a full read

    per_day: dict[str, int] = {}
    for start_ms in unsynced_history.values():
        day = datetime.fromtimestamp(start_ms / 1000, tz=UTC).date().isoformat()
        per_day[day] = per_day.get(day, 0) + 1
    trends = staff_client.get(f"{BASE}trends?days={DAYS}").json()["days"]
    assert {row["day"]: row["runs"] for row in trends if row["runs"]} == per_day  # old days included, exactly
    before = reports(staff_client)

    assert expired_data_purge()["mirrored_runs"] == sum(n for day, n in per_day.items()
                                                        if day < raw_horizon().isoformat())
    runs_sync(full=True)  # a frozen day is never read again
    assert MirroredRun.objects.filter(day__lt=raw_horizon()).count() == 0
    assert reports(staff_client) == before


def test_the_purge_keeps_the_raw_rows_of_a_day_waiting_for_its_rollups(history, settings):
    from analytics.models import SyncState

    settings.ANALYTICS_RAW_RETENTION_DAYS = 10
    horizon = raw_horizon()
    waiting = horizon - timedelta(days=3)
    state = SyncState.objects.get(experiment_name="intent_detection")
    state.dirty_days = [waiting.isoformat()]
    state.save(update_fields=["dirty_days"])
    kept = MirroredRun.objects.filter(day=waiting).count()
    assert kept

    expired_data_purge()
    assert MirroredRun.objects.filter(day=waiting).count() == kept  # its rollups are not done: its rows stay
    assert MirroredRun.objects.filter(day__lt=horizon).exclude(day=waiting).count() == 0
