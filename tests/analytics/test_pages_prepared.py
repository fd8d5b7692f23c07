"""A full read of a SQLite store into a SQLite mirror builds each page's rows ahead, in worker threads
(`PagesPrepared`): the mirror is the same, a page with rows mirrored already is compared as in any other read,
and the scratch databases go away whatever happens."""

from __future__ import annotations

import random
import tempfile
import threading

import pytest
from django.db import connection

from analytics.mlflow_source import PagesPrepared
from analytics.models import DailyRollup, MirroredRun, SyncState
from analytics.services import runs_sync
from analytics.services import sync as sync_module
from analytics.services.sync import SyncLeaseLost
from tests.analytics.conftest import DAY0_MS, HOUR_MS
from tests.analytics.test_rollups import assert_rollups_exact
from tests.analytics.test_sync import assert_mirror_equals_mlflow

pytestmark = [
    pytest.mark.django_db(transaction=True),  # the attached path reads outside a transaction
    pytest.mark.skipif(connection.vendor != "sqlite", reason="the attached path needs a SQLite mirror"),
]


def scratch_aliases() -> list[str]:
    return [row[1] for row in connection.cursor().execute("PRAGMA database_list").fetchall()
            if row[1].startswith("analytics_sync_scratch")]


@pytest.fixture
def scratch_root(tmp_path, monkeypatch):
    """Where the sync's scratch folders go (the temporary directory, moved to be watched)."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def log_days(run_logger, *, runs: int, seed: int, first_hour: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [run_logger.log_random(rng, start_ms=DAY0_MS + (first_hour + i) * HOUR_MS) for i in range(runs)]


def test_a_full_read_builds_its_pages_ahead_and_leaves_nothing_behind(run_logger, settings, scratch_root,
                                                                         monkeypatch):
    log_days(run_logger, runs=60, seed=1)
    settings.ANALYTICS_SYNC_PAGE_SIZE = 7  # 9 pages: both workers build, each drops what the sync is past
    settings.ANALYTICS_SYNC_WORKERS = 2
    built = []
    build = PagesPrepared._build

    def counted(self, number, page):
        result = build(self, number, page)
        built.append((number, len(page), result[0]))
        return result

    monkeypatch.setattr(PagesPrepared, "_build", counted)

    result = runs_sync()

    assert (result.source, result.added, result.runs_read) == ("attached", 60, 60)
    # 9 pages of 7, the first one cut in four so that the sync starts on a quarter of it
    assert [size for _, size, _ in sorted(built)] == [2, 2, 2, 1] + [7] * 7 + [4]
    assert {alias for _, _, alias in built} == {f"analytics_sync_scratch_{i}" for i in range(2)}  # two workers
    assert_mirror_equals_mlflow(run_logger)
    assert assert_rollups_exact() > 0
    assert list(scratch_root.iterdir()) == [] and scratch_aliases() == []


def test_an_incremental_read_builds_its_rows_on_the_mirrors_connection(run_logger, settings, scratch_root,
                                                                       monkeypatch):
    log_days(run_logger, runs=10, seed=2)
    runs_sync()
    log_days(run_logger, runs=5, seed=3, first_hour=10)
    seen = []
    settings.ANALYTICS_SYNC_PAGE_SIZE = 7
    build = PagesPrepared._build
    monkeypatch.setattr(PagesPrepared, "_build", lambda self, number, page: seen.append(number) or build(self, number, page))

    result = runs_sync()

    assert result.added == 5 and seen == []  # a window behind the watermark: one page or two, no workers
    assert_mirror_equals_mlflow(run_logger)


def test_a_sync_that_fails_half_way_stops_its_workers_and_the_next_one_compares_what_it_left(
        run_logger, settings, scratch_root):
    """Pages whose runs are mirrored already, with the watermark unset (a first sync that stopped half-way)
    go the way of any re-read (digests, the database's comparison): nothing is written twice."""
    log_days(run_logger, runs=40, seed=5)
    settings.ANALYTICS_SYNC_PAGE_SIZE = 5
    pages = []

    def another_sync_takes_over(done, total):  # after two pages (the first in 3 pieces): the lease is lost
        pages.append(done)
        if len(pages) == 4:
            SyncState.objects.update(lease_owner="another")

    with pytest.raises(SyncLeaseLost):
        runs_sync(progress=another_sync_takes_over)

    assert pages == [2, 4, 5, 10] and MirroredRun.objects.count() == 10  # what was committed; nothing after
    assert list(scratch_root.iterdir()) == [] and scratch_aliases() == []
    SyncState.objects.update(lease_owner="", lease_until=None)

    result = runs_sync()

    assert (result.added, result.updated, result.unchanged, result.deleted) == (30, 0, 10, 0)
    assert_mirror_equals_mlflow(run_logger)
    assert assert_rollups_exact() > 0
    assert runs_sync(full=True).updated == 0


def test_the_rollups_of_a_long_read_are_computed_beside_it_and_equal_the_raw_rows(run_logger, settings,
                                                                                 scratch_root, monkeypatch):
    rng = random.Random(6)
    for i in range(48):  # 12 days, 4 runs a day
        run_logger.log_random(rng, start_ms=DAY0_MS + i * 6 * HOUR_MS)
    settings.ANALYTICS_SYNC_PAGE_SIZE = 4
    monkeypatch.setattr(sync_module, "ROLLUP_ADD_MAX", 0)  # pages of new runs make their days dirty, as big ones do
    computed = []
    compute = sync_module._RollupsAhead._compute

    def recorded(experiment_id, days):
        computed.append((threading.current_thread().name, list(days)))
        return compute(experiment_id, days)

    monkeypatch.setattr(sync_module._RollupsAhead, "_compute", staticmethod(recorded))

    result = runs_sync()

    assert result.added == 48 and result.days_refreshed == 12
    # Once 7 days were complete, in the rollups' thread; the last days after the read, by the sync itself.
    assert [(name.startswith("mirror-rollups"), len(days)) for name, days in computed] == [(True, 7)]
    assert assert_rollups_exact() == DailyRollup.objects.count() > 12 * 9
    assert SyncState.objects.get().dirty_days == []
