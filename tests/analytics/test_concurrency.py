"""Exactly once: two syncs at once give the rows of one; a sync that dies or loses its lease halfway leaves
nothing inconsistent, and the next one finishes the job."""

from __future__ import annotations

import random
import threading
import time
import uuid
from datetime import date, timedelta

import pytest
from django.db import connections
from django.utils import timezone

from analytics.mirror.pages import SyncLeaseLost
from analytics.mirror.sync import runs_sync
from analytics.models import MirroredRun, SyncState, WorkerHeartbeat, worker_key
from tests.analytics.conftest import DAY0_MS, DAY_MS
from tests.analytics.test_rollups import assert_rollups_exact
from tests.analytics.test_sync import assert_mirror_equals_mlflow, snapshot
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def log_many(run_logger, count: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    for _ in range(count):
        run_logger.log_random(rng, start_ms=DAY0_MS + rng.randrange(3 * DAY_MS))


def test_two_syncs_at_once_give_the_rows_of_one(run_logger, settings):
    log_many(run_logger, 300)
    settings.ANALYTICS_SYNC_PAGE_SIZE = 20  # many pages: the syncs overlap in time if both run
    barrier = threading.Barrier(2)
    results, errors = [], []

    def sync() -> None:
        try:
            barrier.wait(timeout=30)
            results.append(runs_sync())
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=sync) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)

    assert errors == []
    assert len(results) == 2
    assert sum(result.added for result in results) == 300  # each run added once, by one of them
    assert all(result.updated == 0 and result.deleted == 0 for result in results)
    assert [r.skipped for r in results].count(True) <= 1
    assert MirroredRun.objects.count() == 300
    assert_mirror_equals_mlflow(run_logger)
    assert_rollups_exact()
    before = snapshot()
    again = runs_sync()
    assert (again.added, again.updated, again.deleted) == (0, 0, 0) and snapshot() == before


def test_a_sync_is_skipped_while_another_holds_the_experiment_and_runs_once_the_lease_expires(run_logger):
    log_many(run_logger, 5)
    state = SyncState.objects.create(experiment_name="intent_detection", lease_owner="other-worker",
                                     lease_until=timezone.now() + timedelta(minutes=5))

    busy = runs_sync()

    assert busy.skipped and busy.added == 0 and not MirroredRun.objects.exists()
    SyncState.objects.filter(pk=state.pk).update(lease_until=timezone.now() - timedelta(seconds=1))  # it died
    again = runs_sync()
    assert not again.skipped and MirroredRun.objects.count() == 5
    assert SyncState.objects.get().lease_owner == ""


def test_a_sync_that_loses_its_lease_rolls_its_page_back(run_logger, settings):
    log_many(run_logger, 60)
    settings.ANALYTICS_SYNC_PAGE_SIZE = 20

    def steal_after_first_page(done: int, total: int | None) -> None:
        if done == 20:  # another worker took over (this one outlived its lease)
            SyncState.objects.update(lease_owner="thief", lease_until=timezone.now() + timedelta(minutes=5))

    with pytest.raises(SyncLeaseLost):
        runs_sync(progress=steal_after_first_page)

    assert MirroredRun.objects.count() == 20  # the first page committed; the second was rolled back
    assert SyncState.objects.get().lease_owner == "thief"  # and the new owner keeps its lease


def test_a_sync_that_dies_halfway_is_finished_by_the_next_one(run_logger, settings):
    log_many(run_logger, 60)
    settings.ANALYTICS_SYNC_PAGE_SIZE = 20

    def die_after_two_pages(done: int, total: int | None) -> None:
        if done == 40:
            raise RuntimeError("worker lost")

    with pytest.raises(RuntimeError):
        runs_sync(progress=die_after_two_pages)

    state = SyncState.objects.get()
    assert MirroredRun.objects.count() == 40  # two pages committed, each with its rollups or its dirty days
    assert "worker lost" in state.last_error and state.lease_owner == ""
    assert state.watermark_ms is None  # not advanced: the next sync reads from the start again
    assert_rollups_exact(skip_days={date.fromisoformat(day) for day in state.dirty_days})

    result = runs_sync()

    assert (result.added, result.unchanged) == (20, 40)
    assert SyncState.objects.get().dirty_days == []
    assert_mirror_equals_mlflow(run_logger)
    assert_rollups_exact()


def dead_worker_lease(*, started_s_ago: float, beat_s_ago: float | None) -> SyncState:
    """The detection experiment's lease, taken `started_s_ago` by a worker last heard of `beat_s_ago` (None: never),
    and valid for ten more minutes."""
    hostname, pid = "gone@host", 4242
    if beat_s_ago is not None:
        WorkerHeartbeat.objects.create(hostname=hostname, pid=pid, started_at=timezone.now() - timedelta(hours=1),
                                       seen_at=timezone.now() - timedelta(seconds=beat_s_ago))
    return SyncState.objects.create(
        experiment_name="intent_detection", lease_owner=f"{uuid.uuid4().hex}.{worker_key(hostname=hostname, pid=pid)}",
        lease_until=timezone.now() + timedelta(minutes=10), last_started_at=timezone.now() - timedelta(seconds=started_s_ago))


@pytest.mark.parametrize(("started_s_ago", "beat_s_ago", "taken_over"), [
    (60, 45, True),  # its worker stopped beating: the sync died with it
    (60, None, True),  # its worker is gone altogether
    (60, 1, False),  # its worker is alive: the sync is slow, not dead
    (5, None, False),  # taken moments ago: the worker may not have written its first heartbeat yet
])
def test_a_lease_held_by_a_worker_that_stopped_beating_is_taken_over(run_logger, settings, started_s_ago, beat_s_ago,
                                                                      taken_over):
    settings.WORKER_HEARTBEAT_S = 10  # stale after 30 s
    log_many(run_logger, 3)
    dead_worker_lease(started_s_ago=started_s_ago, beat_s_ago=beat_s_ago)

    result = runs_sync()

    assert result.skipped is not taken_over
    assert MirroredRun.objects.count() == (3 if taken_over else 0)


def test_a_worker_killed_mid_sync_holds_the_mirror_up_only_until_its_heartbeat_is_stale(run_logger, start_worker):
    log_many(run_logger, 150)
    worker_env = {"ANALYTICS_SYNC_INTERVAL_S": "1", "ANALYTICS_SYNC_PAGE_SIZE": "1", "WORKER_HEARTBEAT_S": "1",
                  "ANALYTICS_SYNC_LEASE_S": "600"}
    # given a real worker (with beat) SIGKILLed while its sync holds the lease, one page in
    first = start_worker(name="killed", beat=True, **worker_env)
    wait_for(lambda: SyncState.objects.filter(lease_owner__contains=".").exists() and MirroredRun.objects.exists(),
             timeout=60, interval=0.02, message="the first sync to hold the lease and write a page")
    first.kill()
    first.popen.wait(timeout=10)
    state = SyncState.objects.get(experiment_name="intent_detection")
    assert state.lease_until > timezone.now() + timedelta(minutes=9), "the dead sync's lease runs ten more minutes"
    assert MirroredRun.objects.count() < 150, "the kill came after the sync had finished: nothing to test"

    # when another worker starts, its sync takes the lease over once the dead worker's heartbeat is 3 s stale
    started = time.monotonic()
    start_worker(name="next", beat=True, **worker_env)
    wait_for(lambda: MirroredRun.objects.count() == 150, timeout=60, message="the mirror to be complete")
    assert time.monotonic() - started < 60
    assert_mirror_equals_mlflow(run_logger)


def test_a_sync_failing_while_the_database_is_away_gives_its_lease_back_once_it_returns(run_logger, monkeypatch):
    from django.db import OperationalError, connection

    from analytics.mirror import sync as sync_module

    monkeypatch.setattr(sync_module, "LEASE_RELEASE_RETRY_S", 10.0)
    log_many(run_logger, 5)
    refused = {"releases": 0}

    def database_away(execute, sql, params, many, context):
        if sql.startswith('UPDATE "analytics_syncstate"') and "last_error" in sql and refused["releases"] < 2:
            refused["releases"] += 1
            raise OperationalError("server closed the connection unexpectedly")
        return execute(sql, params, many, context)

    def connection_dropped(done: int, total: int | None) -> None:
        raise OperationalError("terminating connection due to administrator command")

    # given a sync that fails on a dropped connection and whose first two attempts to free its lease fail too
    with connection.execute_wrapper(database_away), pytest.raises(OperationalError):
        runs_sync(progress=connection_dropped)

    # then the lease was given back on the third attempt (not left to run ten more minutes), and the next sync runs
    assert refused["releases"] == 2
    state = SyncState.objects.get()
    assert state.lease_owner == "" and "terminating connection" in state.last_error
    again = runs_sync()
    assert not again.skipped and MirroredRun.objects.count() == 5
