"""Latency sketches as stored: 6 bytes a bucket, concatenable. Sketches concatenated (by Python or by the database's
group_concat / string_agg) read back as their exact sum, whatever bytes they hold (zeros, bytes that are not UTF-8);
a count past the stored width is refused; and migration 0017 converts every stored JSON sketch to bytes and back."""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from analytics.mirror.sketch import (
    COUNT_MAX,
    KEY_MAX,
    KEY_MIN,
    STORED,
    ZERO_KEY,
    LatencySketch,
    sketch_encode,
    stored_sum,
)
from analytics.models import DailyRollup, WindowRollup
from analytics.reports.cells import Cells
from analytics.reports.scope import Scope

Dimension = DailyRollup.Dimension


def random_sketch(rng: random.Random) -> tuple[list[int], list[int]]:
    """Keys ascending, each once, across the whole key range (negative keys: 0xFF bytes; zero counts' bytes)."""
    keys = sorted(rng.sample([ZERO_KEY, KEY_MIN, KEY_MAX, -1, 0, 1, 255, 256, *range(-300, 700)], rng.randint(1, 60)))
    counts = [rng.choice([1, 2, 255, 256, 65_536, COUNT_MAX, rng.randint(1, 10_000)]) for _ in keys]
    return keys, counts


def summed(sketches: list[tuple[list[int], list[int]]]) -> list[list[int]]:
    totals: dict[int, int] = {}
    for keys, counts in sketches:
        for key, count in zip(keys, counts, strict=True):
            totals[key] = totals.get(key, 0) + count
    return [sorted(totals), [totals[key] for key in sorted(totals)]]


def test_stored_sketches_concatenated_read_back_as_their_exact_sum():
    rng = random.Random(18)
    for _ in range(200):
        sketches = [random_sketch(rng) for _ in range(rng.randint(1, 12))]
        blobs = [sketch_encode(keys, counts) for keys, counts in sketches]
        assert all(len(blob) == len(keys) * STORED.itemsize for blob, (keys, _) in zip(blobs, sketches, strict=True))
        assert LatencySketch.from_stored(blobs[0]).stored() == [list(sketches[0][0]), list(sketches[0][1])]
        assert LatencySketch.from_joined(b"".join(blobs)).stored() == summed(sketches)
        merged = LatencySketch()
        for blob in blobs:
            merged.add(LatencySketch.from_stored(blob))
        assert merged.stored() == summed(sketches)
        # The sync's sum of a stored row (bytes) and of new runs' cell (lists), as stored again.
        if len(sketches) >= 2 and all(count < COUNT_MAX // 2 for _, counts in sketches[:2] for count in counts):
            both = stored_sum(blobs[0], [sketches[1][0], sketches[1][1]])
            assert LatencySketch.from_stored(both).stored() == summed(sketches[:2])
    assert LatencySketch.from_stored(b"").quantile(0.5) is None
    assert LatencySketch.from_joined(None).count == 0
    assert stored_sum(b"", []) == b""


def test_a_bucket_counting_beyond_the_stored_width_is_refused_not_wrapped():
    with pytest.raises(OverflowError):
        sketch_encode([1], [COUNT_MAX + 1])
    with pytest.raises(OverflowError):
        stored_sum(sketch_encode([1], [COUNT_MAX]), [[1], [1]])


@pytest.mark.django_db
def test_the_database_concatenates_stored_sketches_byte_for_byte():
    """The report's read of a breakdown's sketches (one group_concat / string_agg per value) gives the exact sum of the
    rows' sketches, bytes 0x00 and 0xFF included (SQLite's group_concat calls its result text: cast back)."""
    rng = random.Random(7)
    first, now = date(2026, 11, 1), timezone.now()
    expected: dict[str, list[tuple[list[int], list[int]]]] = {"v1": [], "v2": []}
    rows = []
    for offset in range(20):
        for value in expected:
            keys, counts = random_sketch(rng)
            counts = [min(count, 1_000_000) for count in counts]
            expected[value].append((keys, counts))
            rows.append(DailyRollup(experiment_id="1", day=first + timedelta(days=offset),
                                    dimension=Dimension.PROMPT_VERSION, value=value, runs=sum(counts),
                                    latency_count=sum(counts), latency_sketch=[keys, counts], computed_at=now))
    DailyRollup.objects.bulk_create(rows)
    scope = Scope(experiment_id="1", since=first, until=first + timedelta(days=19))
    cells = Cells(scope, totalled=[Dimension.PROMPT_VERSION], sketches=True)
    by_version = cells.by_value(Dimension.PROMPT_VERSION)
    assert sorted(by_version) == ["v1", "v2"]
    for value, sketches in expected.items():
        assert by_version[value].sketch.stored() == summed(sketches)
    # The same rows read one by one, as the daily series reads them.
    stored = DailyRollup.objects.filter(value="v1").order_by("day").values_list("latency_sketch", flat=True)
    assert [LatencySketch.from_stored(blob).stored() for blob in stored] == [
        [keys, counts] for keys, counts in expected["v1"]]


@pytest.mark.django_db(transaction=True)
def test_migration_0017_converts_every_json_sketch_to_bytes_and_back():
    executor = MigrationExecutor(connection)
    before, after = [("analytics", "0016_sketch_text")], [("analytics", "0017_sketch_binary")]
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    texts = ['[[-3,0,5,700],[1,256,65536,7]]', "[]", '[[-32768],[4]]']
    for position, text in enumerate(texts):
        old.get_model("analytics", "DailyRollup").objects.create(
            experiment_id="1", day=date(2026, 11, 1 + position), dimension="all", value="", latency_sketch=text,
            computed_at=now)
        old.get_model("analytics", "WindowRollup").objects.create(
            experiment_id="1", grain_minutes=5, bucket=now + timedelta(minutes=5 * position), day=now.date(),
            latency_sketch=text, computed_at=now)
    executor = MigrationExecutor(connection)
    executor.migrate(after)
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())  # the latest state: today's models read it
    for model in (DailyRollup, WindowRollup):
        read = [sketch if (sketch := LatencySketch.from_stored(blob).stored())[0] else [] for blob in
                model.objects.order_by("id").values_list("latency_sketch", flat=True)]
        assert read == [json.loads(text) if json.loads(text) else [] for text in texts]
        assert model.objects.filter(latency_sketch=b"").count() == 1
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    with connection.cursor() as cursor:
        cursor.execute("SELECT latency_sketch FROM analytics_dailyrollup ORDER BY id")
        assert [json.loads(row[0]) for row in cursor.fetchall()] == [json.loads(text) for text in texts]
    MigrationExecutor(connection).migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
