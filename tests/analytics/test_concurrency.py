"""Exactly once: two syncs at once give the rows of one; a sync that dies or loses its lease halfway leaves
nothing inconsistent, and the next one finishes the job."""

from __future__ import annotations

import random
import threading
from datetime import date, timedelta

import pytest
from django.db import connections
from django.utils import timezone

from analytics.mirror.pages import SyncLeaseLost
from analytics.mirror.sync import runs_sync
from analytics.models import MirroredRun, SyncState
from tests.analytics.conftest import DAY0_MS, DAY_MS
from tests.analytics.test_rollups import assert_rollups_exact
from tests.analytics.test_sync import assert_mirror_equals_mlflow, snapshot

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
    assert runs_sync().added == 5
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
