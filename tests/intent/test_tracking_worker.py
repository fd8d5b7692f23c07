"""Real Celery worker processes (prefork, not eager) on the session's broker (SQLite file by default,
Redis or RabbitMQ when CELERY_BROKER_URL says so): a worker killed mid-work and an MLflow server that
goes away lose no run and duplicate none."""

from __future__ import annotations

import signal
import time

import pytest

from intent import tracking
from intent.models import DetectionRecord
from tests.conftest import wait_for
from tests.intent.test_tracking import detect, detection_runs

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

MESSAGES = ["what is my balance", "send 20 dollars to my savings", "do i need a visa for japan",
            "what's the exchange rate to euros", "my card got declined"]


def logged() -> int:
    return DetectionRecord.objects.filter(state=DetectionRecord.State.LOGGED).count()


def test_worker_killed_with_sigkill_mid_work_loses_and_duplicates_nothing(
    api_client, small_catalog, mlflow_store, start_worker
):
    # given 600 detections queued, and a worker busy logging them one run at a time through MlflowClient
    ids = [detect(api_client, message=MESSAGES[i % len(MESSAGES)])["request_id"] for i in range(600)]
    victim = start_worker(name="victim", TRACKING_LEASE_S="3", TRACKING_BULK_WRITES="0")
    wait_for(lambda: logged() >= 20, timeout=120, interval=0.05, message="the first runs to be logged")
    # when it is killed in the middle of the work
    victim.kill(signal.SIGKILL)
    victim.popen.wait(timeout=10)
    done_at_kill = logged()
    assert done_at_kill < len(ids), "the worker finished before it could be killed; raise the count"
    # and a new worker (with beat, which re-sends what the dead one held) takes over, writing in bulk
    start_worker(name="survivor", beat=True, TRACKING_LEASE_S="3", TRACKING_FLUSH_AFTER_S="2",
                 TRACKING_FLUSH_INTERVAL_S="2")
    wait_for(lambda: logged() == len(ids), timeout=240, interval=1, message="every record to be logged")
    # then every detection has exactly one run
    request_ids = [run.data.tags["request_id"] for run in detection_runs(mlflow_store)]
    assert sorted(request_ids) == sorted(ids)
    assert {run.info.status for run in detection_runs(mlflow_store)} == {"FINISHED"}


def test_mlflow_server_down_for_15_seconds_loses_and_duplicates_nothing(
    api_client, small_catalog, mlflow_server, start_worker, settings
):
    settings.MLFLOW_TRACKING_URI = mlflow_server.uri
    tracking.experiment_cache_clear()
    tracking.store_init()
    start_worker(name="worker", beat=True, TRACKING_RETRY_BACKOFF_MAX_S="4", TRACKING_FLUSH_AFTER_S="5",
                 TRACKING_FLUSH_INTERVAL_S="3")
    before = [detect(api_client, message=m)["request_id"] for m in MESSAGES]
    wait_for(lambda: logged() == len(before), timeout=60, message="runs to reach the server")
    assert len(detection_runs(mlflow_server.uri)) == len(before)

    # the server goes away for ~15 s while requests keep coming: several retries (backoff up to 4 s) and flushes
    # (every 3 s) meet it down
    mlflow_server.stop()
    during: list[str] = []
    started = time.monotonic()
    while time.monotonic() - started < 15:
        during.append(detect(api_client, message=MESSAGES[len(during) % len(MESSAGES)])["request_id"])
        time.sleep(2)
    assert DetectionRecord.objects.filter(request_id__in=during, state="pending").count() == len(during)
    assert not DetectionRecord.objects.filter(state="dead").exists()

    mlflow_server.start()
    wait_for(lambda: logged() == len(before) + len(during), timeout=180, interval=1,
             message="every run to arrive after the server is back")
    request_ids = [run.data.tags["request_id"] for run in detection_runs(mlflow_server.uri)]
    assert sorted(request_ids) == sorted(before + during)


def test_logged_runs_ask_for_one_sync_per_debounce_period(settings, monkeypatch):
    """After logging runs a worker asks analytics for a sync, due at the end of a period of ANALYTICS_SYNC_TRIGGER_S
    that every batch logged meanwhile rides along with; none when the period is 0 (beat's sync only)."""
    from celery import current_app
    from django.core.cache import cache

    from intent.services.recording import mirror_sync_request

    sent = []
    monkeypatch.setattr(current_app, "send_task", lambda name, **options: sent.append((name, options)))
    cache.clear()
    settings.ANALYTICS_SYNC_TRIGGER_S = 0.5
    for _ in range(5):
        mirror_sync_request()
    assert sent == [("analytics.tasks.runs_sync_task", {"kwargs": {"triggered": True}, "countdown": 0.5})]
    time.sleep(0.6)
    mirror_sync_request()
    assert len(sent) == 2
    settings.ANALYTICS_SYNC_TRIGGER_S = 0
    cache.clear()
    mirror_sync_request()
    assert len(sent) == 2
