"""Benchmark: monitors' evaluation over a mirror of N runs, the window rollups it reads, and what they cost the sync.

    python bench/monitors.py [--runs 1000000] [--monitors 100] [--repeats 7]
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/intentsite_bench_monitors python bench/monitors.py ...

The mirror is filled as `bench/analytics.py` fills it (its `mirror_fill`: N runs evenly over the last 30 days,
150 intents, 10 modules, 3 roles, 2 models, 3 prompt versions), rollups by the sync's own `rollups_refresh` (daily
and window rollups). Then:

- window rollups: rows per grain, and what they add to the sync: recomputing the last 9 days (the 5-minute
  rows' retention) with and without them (retention set to 0: no window rows), and adding a page of 1,000 new runs
  to today (`rollups_add`, the sync's steady state) with and without;
- `--monitors` monitors (a realistic mix: 70 % threshold over every metric, 20 % anomaly, 10 % drift per
  module or role; windows 5 minutes to 7 days; none, one or two filters), evaluated by `monitors_evaluate` (what
  beat runs every minute) `--repeats` times: median and p90 of the whole evaluation;
- the baseline, in the same process: the threshold monitors' values computed from the raw mirrored rows (one
  aggregate query per monitor over its window and filters, percentiles left out), what evaluating without
  window rollups would cost;
- a preview (backtest) of 7 days of one threshold monitor and one anomaly monitor.

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_analytics", REPO / "bench" / "analytics.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)  # its environment: a temporary database (or DATABASE_URL's), django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.db.models import Avg, Count, Q  # noqa: E402
from django.utils import timezone  # noqa: E402

from analytics.mirror.rollups import rollups_add, rollups_refresh  # noqa: E402
from analytics.models import MirroredRun, Monitor, WindowRollup  # noqa: E402
from analytics.monitors.preview import monitor_preview  # noqa: E402
from analytics.monitors.reading import cache_clear  # noqa: E402
from analytics.monitors.services import monitors_evaluate  # noqa: E402

THRESHOLD_METRICS = ["error_rate", "fallback_rate", "out_of_scope_rate", "latency_p50_ms", "latency_p95_ms",
                     "avg_confidence", "accuracy", "template_match_rate", "cost_usd", "runs", "intent_share"]
WINDOWS = [5, 15, 60, 360, 1440, 10_080]
FILTERS = [{}, {"module": "banking"}, {"user_role": "agent"}, {"module": "travel", "model_name": bench.LM},
           {"prompt_version": bench.PROMPT_VERSIONS[0]}]
RAW_COLUMNS = {"module": "current_module", "user_role": "user_role", "model_name": "model_name",
               "prompt_version": "prompt_version"}


def monitors_create(count: int) -> None:
    rng = random.Random(5)
    Monitor.objects.all().delete()
    for index in range(count):
        share = index / count
        fields = {"name": f"bench-{index:03d}", "window_minutes": rng.choice(WINDOWS), "filters": rng.choice(FILTERS),
                  "min_runs": 10, "channels": []}
        if share < 0.7:
            metric = THRESHOLD_METRICS[index % len(THRESHOLD_METRICS)]
            fields |= {"kind": "threshold", "metric": metric, "alert_threshold": 1e9,
                       "intent": "intent_007" if metric == "intent_share" else ""}
        elif share < 0.9:
            fields |= {"kind": "anomaly", "metric": rng.choice(["error_rate", "latency_p95_ms", "runs"]),
                       "window_minutes": rng.choice([5, 15, 60, 360])}
        else:
            fields |= {"kind": "drift", "segment": rng.choice(["module", "user_role"]),
                       "window_minutes": rng.choice([60, 1440])}
        Monitor.objects.create(**fields)


def timed(function, repeats: int) -> tuple[float, float, object]:
    times, result = [], None
    started = time.perf_counter()
    function()  # warm-up
    timed.first = time.perf_counter() - started
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.9 * len(times)))], result


def raw_baseline() -> None:
    """The threshold monitors' values from the raw rows: one aggregate per monitor over its window and filters."""
    now = timezone.now()
    for watched in Monitor.objects.filter(kind="threshold"):
        rows = MirroredRun.objects.filter(experiment_id=bench.EXPERIMENT_ID,
                                          start_time__gte=now - timedelta(minutes=watched.window_minutes))
        for name, value in watched.filters.items():
            rows = rows.filter(**{RAW_COLUMNS[name]: value})
        rows.aggregate(runs=Count("id"), errors=Count("id", filter=Q(is_error=True)),
                       fallbacks=Count("id", filter=Q(fallback_used=True)), confidence=Avg("confidence_score"))


def sync_costs(experiment_id: str) -> None:
    days = sorted(set(MirroredRun.objects.values_list("day", flat=True).distinct().order_by()))[-9:]
    fine, hourly = settings.ANALYTICS_FINE_ROLLUP_DAYS, settings.ANALYTICS_HOURLY_ROLLUP_DAYS
    figures = {}
    for label, retention in (("daily only", (0, 0)), ("daily + window", (fine, hourly))):
        settings.ANALYTICS_FINE_ROLLUP_DAYS, settings.ANALYTICS_HOURLY_ROLLUP_DAYS = retention
        started = time.perf_counter()
        rollups_refresh(experiment_id=experiment_id, days=days)
        recompute = time.perf_counter() - started
        ids = list(MirroredRun.objects.filter(day=days[-1]).order_by("-start_time").values_list("run_id", flat=True)[:1000])
        # The page's runs taken out of today's rollups first (a recompute without them), then added back.
        with transaction.atomic():
            rows = list(MirroredRun.objects.filter(run_id__in=ids).values())
            MirroredRun.objects.filter(run_id__in=ids).delete()
            rollups_refresh(experiment_id=experiment_id, days=[days[-1]])
            MirroredRun.objects.bulk_create([MirroredRun(**row) for row in rows])
            started = time.perf_counter()
            rollups_add(experiment_id=experiment_id, days=[days[-1]], run_ids=ids)
            add = time.perf_counter() - started
        figures[label] = (recompute, add)
    settings.ANALYTICS_FINE_ROLLUP_DAYS, settings.ANALYTICS_HOURLY_ROLLUP_DAYS = fine, hourly
    rollups_refresh(experiment_id=experiment_id, days=days)
    print("\nSync cost of the window rollups")
    print("| rollups | recompute the last 9 days | add 1,000 new runs to today |")
    print("|---|---|---|")
    for label, (recompute, add) in figures.items():
        print(f"| {label} | {recompute:.2f} s | {add * 1000:.0f} ms |")
    base, full = figures["daily only"], figures["daily + window"]
    print(f"| ratio | {full[0] / base[0]:.2f}× | {full[1] / base[1]:.2f}× |")


def table_size() -> str:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_total_relation_size('analytics_windowrollup')")
        else:
            try:
                cursor.execute("SELECT SUM(pgsize) FROM dbstat WHERE name LIKE '%windowrollup%'")
            except Exception:  # noqa: BLE001 - SQLite built without dbstat
                return "n/a"
        size = cursor.fetchone()[0] or 0
    return f"{size / 1e6:.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--monitors", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    print(f"database: {connection.vendor}; {args.runs:,} runs over {bench.DAYS} days")
    bench.mirror_fill(args.runs)
    counts = {grain: WindowRollup.objects.filter(grain_minutes=grain).count() for grain in (5, 60)}
    print(f"window rollups: {counts[5]:,} five-minute rows (kept {settings.ANALYTICS_FINE_ROLLUP_DAYS:g} days), "
          f"{counts[60]:,} hourly rows (kept {settings.ANALYTICS_HOURLY_ROLLUP_DAYS:g} days), table {table_size()}")
    sync_costs(bench.EXPERIMENT_ID)

    monitors_create(args.monitors)
    cache_clear()
    p50, p90, result = timed(monitors_evaluate, args.repeats)
    cold = timed.first
    kinds = dict(Monitor.objects.values_list("kind").annotate(n=Count("id")).order_by())
    print(f"\nEvaluation of {args.monitors} monitors ({kinds}): p50 {p50 * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms "
          f"({result.rows_read:,} window rollup rows read; states {result.states}); the first one, with the "
          f"process's cache of buckets empty: {cold * 1000:.0f} ms")
    thresholds = Monitor.objects.filter(kind="threshold").count()
    base50, base90, _ = timed(raw_baseline, max(1, args.repeats // 2))
    print(f"Baseline, raw rows: {thresholds} threshold monitors, one aggregate each (no percentiles): "
          f"p50 {base50 * 1000:.0f} ms, p90 {base90 * 1000:.0f} ms; the same monitors from window rollups are "
          f"part of the {p50 * 1000:.0f} ms above; ratio (all {args.monitors} vs {thresholds} raw) "
          f"{base50 / p50:.1f}×")

    for kind, fields in (("threshold", {"metric": "latency_p95_ms", "alert_threshold": 1500, "window_minutes": 15}),
                         ("anomaly", {"metric": "error_rate", "window_minutes": 60})):
        watched = Monitor.objects.create(name=f"preview-{kind}", kind=kind, min_runs=10, **fields)
        p50, _, preview = timed(lambda watched=watched: monitor_preview(monitor=watched, days=7), 3)
        print(f"Preview of 7 days, {kind} ({fields['window_minutes']} min window): {p50 * 1000:.0f} ms for "
              f"{preview.evaluations} evaluations every {preview.step_minutes} min, {len(preview.changes)} changes")


if __name__ == "__main__":
    main()
