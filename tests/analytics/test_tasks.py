"""The sync as Celery runs it: real worker and beat processes (prefork, DatabaseScheduler) on the session's
broker (SQLite file by default, Redis when CELERY_BROKER_URL points at one); a detection request reaches the
mirror within two beat intervals of its run being logged."""

from __future__ import annotations

import time

import pytest
from django.conf import settings
from django.db import OperationalError

from analytics.mirror.sources.base import MlflowSourceError, MlflowSourceUnavailable
from analytics.models import MirroredRun, SyncState
from analytics.tasks import runs_sync_task
from intent.models import DetectionRecord
from tests.conftest import wait_for
from tests.intent.test_tracking import detect

INTERVAL_S = 2.0
# What a beat tick may add on top of two intervals on a shared 2-core machine: the sync itself and
# the worker picking the message up from a polling broker.
SLACK_S = 3.0


def test_the_task_is_idempotent_and_retries_only_transient_errors():
    assert runs_sync_task.acks_late and runs_sync_task.reject_on_worker_lost
    assert MlflowSourceUnavailable in runs_sync_task.autoretry_for
    assert OperationalError in runs_sync_task.autoretry_for
    assert not any(issubclass(error, cls) for cls in runs_sync_task.autoretry_for
                   for error in (MlflowSourceError, ValueError, KeyError))
    assert runs_sync_task.retry_backoff
    entry = settings.CELERY_BEAT_SCHEDULE["analytics-sync"]
    assert entry["task"] == runs_sync_task.name
    assert entry["options"]["expires"] <= entry["schedule"] == settings.ANALYTICS_SYNC_INTERVAL_S
    assert entry["options"]["expire_seconds"] <= entry["schedule"]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_detection_reaches_the_mirror_within_two_beat_intervals(api_client, small_catalog, mlflow_store,
                                                                   start_worker):
    from django_celery_beat.models import PeriodicTask

    start_worker(name="analytics", beat=True, concurrency=2, ANALYTICS_SYNC_INTERVAL_S=str(INTERVAL_S))
    entry = wait_for(lambda: PeriodicTask.objects.filter(name="analytics-sync").first(), timeout=30,
                     message="beat to store the analytics-sync entry")
    assert entry.interval.every == INTERVAL_S and entry.expire_seconds == INTERVAL_S  # the expiry reached the DB
    wait_for(lambda: SyncState.objects.filter(last_succeeded_at__isnull=False).exists(), timeout=60,
             message="the first beat-driven sync")

    request_id = detect(api_client, message="send 20 dollars to my savings", user_role="customer",
                        current_module="banking")["request_id"]
    record = wait_for(lambda: DetectionRecord.objects.filter(request_id=request_id, state="logged").first(),
                      timeout=60, message="the worker to log the run")
    logged_at = time.time()  # polled every 0.25 s: at most that late

    row = wait_for(lambda: MirroredRun.objects.filter(request_id=request_id).first(),
                   timeout=2 * INTERVAL_S + SLACK_S, interval=0.1, message="the run to reach the mirror")
    delay = time.time() - logged_at

    assert delay <= 2 * INTERVAL_S + SLACK_S
    assert row.run_id == record.mlflow_run_id
    assert (row.detected_intent, row.user_role, row.current_module, row.status) == (
        "transfer", "customer", "banking", "FINISHED")
    state = SyncState.objects.get(experiment_name=settings.MLFLOW_EXPERIMENT_NAME)
    assert state.last_error == "" and state.mirrored_runs == MirroredRun.objects.count() == 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_tracking_backlog_does_not_starve_the_sync(api_client, small_catalog, mlflow_store, start_worker):
    """Beat's sync has a queue of its own: 5,000 records waiting to be logged (a message each, as requests arriving
    one by one send them: more than a minute of work) do not hold it past its expiry; it runs every interval."""
    import copy
    import uuid

    from django.utils import timezone

    from intent.outbox import DETECTIONS_TRACK, task_send

    interval_s = 5.0
    seed = DetectionRecord.objects.get(request_id=detect(api_client, message="what is my balance")["request_id"])
    records = []
    for _ in range(5_000):
        request_id = str(uuid.uuid4())
        payload = copy.deepcopy(seed.payload)
        payload["tags"]["request_id"] = request_id
        records.append(DetectionRecord(request_id=request_id, created_at=timezone.now(), payload=payload))
    DetectionRecord.objects.bulk_create(records, batch_size=500)
    ids = [record.request_id for record in records]
    for request_id in ids:
        task_send(name=DETECTIONS_TRACK, args=[[request_id]])

    # one worker serving both queues, as `celery worker` does by default
    start_worker(name="backlogged", beat=True, concurrency=2, ANALYTICS_SYNC_INTERVAL_S=str(interval_s))
    syncs: list = []
    deadline = time.monotonic() + 5 * interval_s + 15
    while len(syncs) < 4 and time.monotonic() < deadline:
        succeeded = SyncState.objects.filter(experiment_name=settings.MLFLOW_EXPERIMENT_NAME).values_list(
            "last_succeeded_at", flat=True).first()
        if succeeded is not None and succeeded not in syncs:
            syncs.append(succeeded)
        time.sleep(0.1)
    pending = DetectionRecord.objects.filter(state=DetectionRecord.State.PENDING).count()

    assert len(syncs) == 4, f"{len(syncs)} sync(s) in {5 * interval_s + 15:.0f} s with a backlog"
    gaps = [(later - earlier).total_seconds() for earlier, later in zip(syncs, syncs[1:], strict=False)]
    assert max(gaps) <= 2 * interval_s, gaps  # a tick may be late, none is skipped for the backlog
    assert pending > 500, f"the backlog drained ({pending} left): the test did not hold the sync behind one"
