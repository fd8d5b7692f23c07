"""Window rollups (5-minute and hourly buckets per module × role × model × prompt version) equal an aggregation of
the raw mirrored rows, whichever way the sync wrote them (runs added, days recomputed), and leave after their
retention."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from analytics.mirror.rollups import rollups_refresh
from analytics.mirror.sketch import LatencySketch
from analytics.mirror.sync import runs_sync
from analytics.mirror.windows import windows_purge
from analytics.models import MirroredRun, WindowRollup

from .reference import nearest_rank

pytestmark = pytest.mark.django_db


def recent_ms(hours_ago: float) -> int:
    return int((datetime.now(UTC) - timedelta(hours=hours_ago)).timestamp() * 1000)


def reference(grain: int) -> dict[tuple, dict]:
    cells: dict[tuple, list] = defaultdict(list)
    for run in MirroredRun.objects.all():
        start = run.start_time
        minute = start.minute - start.minute % grain
        bucket = start.replace(minute=minute, second=0, microsecond=0)
        cells[(bucket, run.current_module, run.user_role, run.model_name, run.prompt_version)].append(run)
    return {key: {
        "runs": len(runs), "errors": sum(r.is_error for r in runs), "fallbacks": sum(bool(r.fallback_used) for r in runs),
        "out_of_scope": sum(r.detected_intent == "out_of_scope" for r in runs),
        "confidence_sum": sum(r.confidence_score or 0 for r in runs),
        "latencies": [r.response_time_ms for r in runs if r.response_time_ms is not None],
        "intents": dict(Counter(r.detected_intent for r in runs)),
    } for key, runs in cells.items()}


def stored(grain: int) -> dict[tuple, WindowRollup]:
    return {(row.bucket, row.current_module, row.user_role, row.model_name, row.prompt_version): row
            for row in WindowRollup.objects.filter(grain_minutes=grain)}


def assert_equal_to_raw() -> None:
    for grain in (5, 60):
        expected, got = reference(grain), stored(grain)
        assert set(got) == set(expected), grain
        for key, cell in expected.items():
            row = got[key]
            assert (row.runs, row.errors, row.fallbacks, row.out_of_scope) == (
                cell["runs"], cell["errors"], cell["fallbacks"], cell["out_of_scope"]), key
            assert row.confidence_sum == pytest.approx(cell["confidence_sum"])
            assert row.intents == cell["intents"]
            sketch = LatencySketch.from_stored(row.latency_sketch)
            assert sketch.count == len(cell["latencies"])
            exact = nearest_rank(cell["latencies"], 0.95)
            assert sketch.quantile(0.95) == pytest.approx(exact, rel=0.0101)


def test_window_rollups_equal_the_raw_rows_when_runs_are_added_and_when_days_are_recomputed(run_logger):
    rng = random.Random(7)
    for _ in range(120):
        run_logger.log_random(rng, start_ms=recent_ms(rng.uniform(0, 30)))
    runs_sync()
    assert WindowRollup.objects.filter(grain_minutes=5).exists()
    assert_equal_to_raw()
    # More runs in the same buckets: added to existing rows (the steady state), still equal.
    for _ in range(40):
        run_logger.log_random(rng, start_ms=recent_ms(rng.uniform(0, 2)))
    runs_sync()
    assert_equal_to_raw()
    # A recompute of every day gives the same rows.
    before = {key: (row.runs, row.intents) for key, row in stored(5).items()}
    days = sorted(set(MirroredRun.objects.values_list("day", flat=True)))
    rollups_refresh(experiment_id=MirroredRun.objects.first().experiment_id, days=days)
    assert {key: (row.runs, row.intents) for key, row in stored(5).items()} == before
    assert_equal_to_raw()


def test_rows_older_than_their_retention_are_removed(run_logger, settings):
    rng = random.Random(3)
    for hours in (1, 2, 30, 60):
        run_logger.log_random(rng, start_ms=recent_ms(hours))
    settings.ANALYTICS_FINE_ROLLUP_DAYS = 1
    settings.ANALYTICS_HOURLY_ROLLUP_DAYS = 2
    runs_sync()
    fine = WindowRollup.objects.filter(grain_minutes=5).count()
    hourly = WindowRollup.objects.filter(grain_minutes=60).count()
    assert (fine, hourly) == (2, 3)  # the 30-hour-old run has no 5-minute row, the 60-hour-old one none at all
    settings.ANALYTICS_FINE_ROLLUP_DAYS = 0.05  # 72 minutes
    experiment_id = MirroredRun.objects.first().experiment_id
    assert windows_purge(experiment_id=experiment_id) == 1
    assert WindowRollup.objects.filter(grain_minutes=5).count() == 1
