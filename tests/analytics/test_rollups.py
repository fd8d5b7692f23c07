"""Rollups equal aggregates of the raw mirrored rows: counts and extremes exactly, sums to float tolerance,
percentiles from the sketch within 1 % of exact nearest-rank and inside [min, max]; and they stay so through
updates, deletes, runs arriving a few at a time, and the folding of free-text values beyond a day's top N."""

from __future__ import annotations

import math
import random

import pytest
from django.utils import timezone

from analytics.mirror.rollups import DIMENSION_COLUMNS, triples_kept
from analytics.mirror.sketch import RELATIVE_ACCURACY, LatencySketch, sketch_key
from analytics.mirror.sync import runs_sync
from analytics.models import COMPOUND_SEPARATOR, OTHER, DailyRollup, MirroredRun, SyncState
from tests.analytics.conftest import DAY0_MS, DAY_MS
from tests.analytics.reference import COUNTS, SUMS, aggregate_exact, nearest_rank

pytestmark = pytest.mark.django_db

def within_sketch_accuracy(estimate: float | None, exact: float | None, low: float | None = None,
                           high: float | None = None) -> bool:
    """Within 1 % of the exact value (the sketch's bound, plus float slack) and inside [low, high]."""
    if exact is None:
        return estimate is None
    inside = (low is None or estimate >= low) and (high is None or estimate <= high)
    return inside and abs(estimate - exact) <= (RELATIVE_ACCURACY + 1e-12) * abs(exact)


def assert_rollups_exact(*, skip_days: set | frozenset = frozenset(), top: int | None = None) -> int:
    """Every rollup row (of days not in `skip_days`) against the raw rows; returns how many cells were
    compared. `top`: the fold of the free-text dimensions to expect. The triples built for a widget too."""
    compared = 0
    experiments = set(MirroredRun.objects.values_list("experiment_id", flat=True)) | set(
        DailyRollup.objects.values_list("experiment_id", flat=True))
    for experiment_id in experiments:
        for dimension in [*DIMENSION_COLUMNS, *triples_kept(experiment_id=experiment_id)]:
            exact = {key: cell for key, cell in aggregate_exact(
                experiment_id=experiment_id, dimension=dimension,
                top=top).items() if key[0] not in skip_days}
            rollups = {(r.day, r.value): r for r in DailyRollup.objects.filter(experiment_id=experiment_id,
                                                                              dimension=dimension)
                       if r.day not in skip_days}
            assert set(rollups) == set(exact), dimension
            for key, expected in exact.items():
                rollup = rollups[key]
                for name in COUNTS:
                    assert getattr(rollup, name) == expected[name], (dimension, key, name)
                for name in SUMS:
                    assert math.isclose(getattr(rollup, name), expected[name], rel_tol=1e-9, abs_tol=1e-9), (
                        dimension, key, name)
                assert (rollup.first_start_time, rollup.last_start_time) == (
                    expected["first_start_time"], expected["last_start_time"])
                assert (rollup.latency_min_ms, rollup.latency_max_ms) == (
                    expected["latency_min_ms"], expected["latency_max_ms"])
                sketch = LatencySketch.from_stored(rollup.latency_sketch)
                assert sketch.count == expected["latency_count"]
                for q in (0.5, 0.95, 0.99):
                    estimate = sketch.quantile(q, low=rollup.latency_min_ms, high=rollup.latency_max_ms)
                    assert within_sketch_accuracy(estimate, nearest_rank(expected["latencies"], q),
                                                  expected["latency_min_ms"], expected["latency_max_ms"]), (
                        dimension, key, q)
                compared += 1
    return compared


def log_days(run_logger, rng: random.Random, *, days: int, per_day: int) -> list[str]:
    return [run_logger.log_random(rng, start_ms=DAY0_MS + d * DAY_MS + rng.randrange(DAY_MS))
            for d in range(days) for _ in range(per_day)]


def log_spam(run_logger, rng: random.Random, *, count: int) -> int:
    """Runs a second apart from DAY0, two of three with a module of their own, roles among 40; returns the last
    start time (ms)."""
    clock = DAY0_MS
    for index in range(count):
        clock += 1000
        module = f"spam-{index}" if index % 3 else rng.choice(["banking", "travel"])
        run_logger.log_random(rng, start_ms=clock, module=module, role=f"role-{index % 40}")
    return clock


def test_rollups_equal_aggregates_of_the_raw_rows(run_logger):
    log_days(run_logger, random.Random(42), days=3, per_day=60)

    result = runs_sync()

    assert result.added == 180 and result.days_refreshed == 3
    assert assert_rollups_exact() > 3 * len(DIMENSION_COLUMNS)
    for dimension in DIMENSION_COLUMNS:  # every dimension partitions the day's runs
        per_day = {}
        for rollup in DailyRollup.objects.filter(dimension=dimension):
            per_day[rollup.day] = per_day.get(rollup.day, 0) + rollup.runs
        assert per_day == {r.day: r.runs for r in DailyRollup.objects.filter(dimension="all")}


def test_rollups_stay_exact_through_updates_and_deletes(run_logger):
    rng = random.Random(5)
    ids = log_days(run_logger, rng, days=2, per_day=40)
    runs_sync()
    for run_id in ids[:5]:
        run_logger.client.delete_run(run_id)
    for run_id in ids[-5:]:
        run_logger.client.set_tag(run_id, "detected_intent", "relabelled")
    log_days(run_logger, rng, days=3, per_day=10)

    result = runs_sync(full=True)

    assert (result.deleted, result.updated, result.added) == (5, 5, 30)
    assert DailyRollup.objects.get(dimension="intent", value="relabelled").runs == 5
    assert assert_rollups_exact() > 0


@pytest.mark.parametrize("case", ["one", "two", "identical", "heavy_tail", "lognormal", "tiny_and_huge", "zeros"])
def test_sketch_percentiles_are_within_one_percent_of_nearest_rank_and_inside_min_max(case):
    rng = random.Random(case)
    for _ in range(200):
        n = {"one": 1, "two": 2}.get(case, rng.randint(1, 400))
        if case == "identical":
            values = [rng.uniform(0.01, 20_000)] * n
        elif case == "heavy_tail":
            values = [rng.paretovariate(0.7) * 3 for _ in range(n)]
        elif case == "tiny_and_huge":
            values = [10 ** rng.uniform(-3, 7) for _ in range(n)]
        elif case == "zeros":
            values = [0.0 if rng.random() < 0.3 else rng.expovariate(0.01) for _ in range(n)]
        else:
            values = [math.exp(rng.gauss(rng.uniform(-2, 9), rng.uniform(0.1, 2))) for _ in range(n)]
        # In two parts merged, as days merge into a period, and through the stored form.
        cut = rng.randint(0, n)
        sketch = LatencySketch.from_keys(sketch_key(v) for v in values[:cut])
        sketch.add(LatencySketch.from_keys(sketch_key(v) for v in values[cut:]))
        sketch = LatencySketch.from_stored(sketch.stored())
        low, high = min(values), max(values)
        for q in (0.01, 0.5, 0.9, 0.95, 0.99, 1.0):
            estimate = sketch.quantile(q, low=low, high=high)
            exact = nearest_rank(values, q)
            assert within_sketch_accuracy(estimate, exact, low, high), (case, q, estimate, exact)
        if n == 1:
            assert sketch.quantile(0.95, low=low, high=high) == values[0]  # one run: exactly its latency
    assert LatencySketch().quantile(0.5) is None


def test_a_latency_on_a_bucket_edge_has_the_same_key_in_python_and_in_sqlite():
    import sqlite3

    from analytics.mirror.sketch import GAMMA, sql_key

    values = [GAMMA ** k for k in range(-400, 900, 7)] + [0.001, 0.5, 1.0, 10_512.0, 791.0, 1e300, 0.0, -1.0]
    connection = sqlite3.connect(":memory:")
    for value in values:
        assert connection.execute(f"SELECT {sql_key('?1')}", (value,)).fetchone()[0] == sketch_key(value), value


def test_rollups_stay_exact_when_runs_arrive_a_few_at_a_time(run_logger):
    rng = random.Random(21)
    clock = DAY0_MS + DAY_MS  # the second day, in order, as live traffic arrives
    for batch in range(5):  # each sync after the first adds a few runs to a day that has rollups already
        for _ in range(30 if batch == 0 else 7):
            clock += rng.randrange(60_000)
            run_logger.log_random(rng, start_ms=clock)
        result = runs_sync()
        if batch == 0:
            continue
        assert result.added == 7 and result.updated == 0
        assert assert_rollups_exact() > 0
    assert DailyRollup.objects.filter(dimension="all").order_by("day").last().runs == 30 + 4 * 7


def test_free_text_values_beyond_the_days_top_fold_into_other_and_filters_stay_exact(run_logger, settings,
                                                                                     django_user_model):
    """300 spam values of `current_module` (and roles) in a day: the rollups keep the day's 5 most frequent and
    one `other` row; totals stay exact; a filter on a folded value reads the raw rows and is exact too."""
    from rest_framework.test import APIClient

    settings.ANALYTICS_ROLLUP_TOP_VALUES = 5
    rng = random.Random(8)
    clock = log_spam(run_logger, rng, count=300)
    runs_sync()

    modules = DailyRollup.objects.filter(dimension="module")
    assert modules.count() == 6 and modules.get(value=OTHER).folded
    assert sum(modules.values_list("runs", flat=True)) == 300
    assert DailyRollup.objects.filter(dimension="role").count() == 6
    assert DailyRollup.objects.filter(dimension="intent", folded=True).count() == 0  # bounded by the catalog
    assert assert_rollups_exact(top=5) > 0

    # a few more runs arrive (rollups_add): new values go to `other`, known ones to their row
    for index in range(20):
        clock += 1000
        run_logger.log_random(rng, start_ms=clock, module="banking" if index % 2 else f"late-spam-{index}")
    result = runs_sync()
    assert result.added == 20
    assert DailyRollup.objects.filter(dimension="module").count() == 6
    assert sum(DailyRollup.objects.filter(dimension="module").values_list("runs", flat=True)) == 320
    # the pairs fold the same values as the dimension's own rows, added runs included: per module value (kept or
    # `other`), its pairs' rows hold exactly its runs
    modules = dict(DailyRollup.objects.filter(dimension="module").values_list("value", "runs"))
    for pair in ("intent+module", "module+tab", "module+error_type"):
        at = 1 if pair.startswith("intent") else 0
        by_module: dict[str, int] = {}
        for value, runs in DailyRollup.objects.filter(dimension=pair).values_list("value", "runs"):
            part = value.split(COMPOUND_SEPARATOR, 1)[at]
            by_module[part] = by_module.get(part, 0) + runs
        assert by_module == modules, pair

    staff = django_user_model.objects.create_user("staff", password="pw-staff-123", is_staff=True)
    client = APIClient()
    client.force_login(staff)
    since = {"until": "2026-11-20", "days": 1}
    overview = client.get("/api/analytics/mlflow/overview", since).json()
    assert overview["total_runs"] == 320 and len(overview["modules"]) <= 6
    folded_value = next(value for value in MirroredRun.objects.values_list("current_module", flat=True)
                        if value.startswith("spam-") and not DailyRollup.objects.filter(dimension="module",
                                                                                       value=value).exists())
    filtered = client.get("/api/analytics/mlflow/overview", {**since, "module": folded_value}).json()
    assert filtered["total_runs"] == MirroredRun.objects.filter(current_module=folded_value).count() == 1
    banking = client.get("/api/analytics/mlflow/overview", {**since, "module": "banking"}).json()
    assert banking["total_runs"] == MirroredRun.objects.filter(current_module="banking").count()


def test_migrating_to_the_pairs_marks_every_day_with_rollups_for_recompute(db):
    """The pairs' rows are written by a recompute: the migration that adds them queues every day that has
    rollups (the next sync recomputes them; days past the raw retention are left as they are)."""
    import importlib

    from django.apps import apps

    migration = importlib.import_module("analytics.migrations.0013_rollup_pairs")
    SyncState.objects.create(experiment_name="intent_detection", experiment_id="7", dirty_days=["2026-11-01"])
    SyncState.objects.create(experiment_name="other", experiment_id="")
    for day in ("2026-11-02", "2026-11-03"):
        DailyRollup.objects.create(experiment_id="7", day=day, dimension="all", value="", computed_at=timezone.now())
    DailyRollup.objects.create(experiment_id="8", day="2026-11-04", dimension="all", value="",
                               computed_at=timezone.now())
    migration.days_to_recompute(apps, None)
    assert SyncState.objects.get(experiment_id="7").dirty_days == ["2026-11-01", "2026-11-02", "2026-11-03"]
    assert SyncState.objects.get(experiment_name="other").dirty_days == []
