"""Rollups equal aggregates of the raw mirrored rows: counts exactly, sums to float tolerance, percentiles
from the histogram in the bucket of the exact value; and they stay so through updates and deletes."""

from __future__ import annotations

import math
import random
from datetime import timedelta

import pytest

from analytics.models import LATENCY_BUCKET_EDGES_MS, DailyRollup, MirroredRun, latency_bucket
from analytics.selectors import breakdown_get, latency_percentile_exact, rollup_percentile, runs_aggregate_exact
from analytics.services import runs_sync
from analytics.services.rollups import DIMENSION_COLUMNS
from tests.analytics.conftest import DAY0_MS, DAY_MS

pytestmark = pytest.mark.django_db

COUNTS = ("runs", "errors", "fallbacks", "out_of_scope", "template_matches", "confidence_count", "latency_count",
          "prompt_tokens", "completion_tokens", "labelled", "correct")
SUMS = ("confidence_sum", "confidence_sumsq", "latency_sum_ms", "latency_sumsq_ms", "cost_usd")


def assert_rollups_exact(*, skip_days: set | frozenset = frozenset()) -> int:
    """Every rollup row (of days not in `skip_days`) against the raw rows; returns how many cells were
    compared."""
    compared = 0
    experiments = set(MirroredRun.objects.values_list("experiment_id", flat=True)) | set(
        DailyRollup.objects.values_list("experiment_id", flat=True))
    for experiment_id in experiments:
        for dimension in DIMENSION_COLUMNS:
            exact = {key: cell for key, cell in runs_aggregate_exact(
                experiment_id=experiment_id, dimension=dimension).items() if key[0] not in skip_days}
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
                assert sum(rollup.latency_histogram) == expected["latency_count"]
                for q in (0.5, 0.95):
                    exact_p = latency_percentile_exact(experiment_id=experiment_id, day=key[0], dimension=dimension,
                                                       value=key[1], q=q)
                    estimate = rollup_percentile(rollup.latency_histogram, q)
                    if exact_p is None:
                        assert estimate is None
                    else:
                        assert abs(latency_bucket(estimate) - latency_bucket(exact_p)) <= 1, (dimension, key, q)
                compared += 1
    return compared


def log_days(run_logger, rng: random.Random, *, days: int, per_day: int) -> list[str]:
    return [run_logger.log_random(rng, start_ms=DAY0_MS + d * DAY_MS + rng.randrange(DAY_MS))
            for d in range(days) for _ in range(per_day)]


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


def test_percentiles_from_the_histogram_land_in_the_exact_values_bucket():
    rng = random.Random(3)
    for _ in range(200):
        values = [math.exp(rng.gauss(rng.uniform(-2, 9), rng.uniform(0.1, 2))) for _ in range(rng.randint(1, 300))]
        histogram = [0] * (len(LATENCY_BUCKET_EDGES_MS) + 1)
        for value in values:
            histogram[latency_bucket(value)] += 1
        ordered = sorted(values)
        for q in (0.01, 0.5, 0.9, 0.95, 0.99, 1.0):
            exact = ordered[max(1, math.ceil(q * len(ordered))) - 1]
            assert latency_bucket(rollup_percentile(histogram, q)) == latency_bucket(exact)
    assert rollup_percentile([0] * 38, 0.5) is None


def test_the_breakdown_selector_reads_the_rollups(run_logger):
    log_days(run_logger, random.Random(11), days=2, per_day=50)
    runs_sync()
    day0 = MirroredRun.objects.order_by("day").first().day

    breakdown = {b.value: b for b in breakdown_get(since=day0, until=day0 + timedelta(days=1), dimension="intent")}

    raw = runs_aggregate_exact(experiment_id=run_logger.experiment_id, dimension="intent")
    for intent, b in breakdown.items():
        cells = [cell for (day, value), cell in raw.items() if value == intent]
        assert b.runs == sum(c["runs"] for c in cells)
        assert b.errors == sum(c["errors"] for c in cells)
        n = sum(c["confidence_count"] for c in cells)
        assert math.isclose(b.confidence_mean, sum(c["confidence_sum"] for c in cells) / n)
    assert sum(b.runs for b in breakdown.values()) == 100


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
