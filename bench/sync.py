"""Benchmark: the analytics mirror's sync (`analytics.mirror.sync.runs_sync`) on big SQLite MLflow stores.

    python bench/sync.py [--full-runs 100000] [--repeats 3] [--client-runs 5000] [--big-runs 1000000]
                         [--delta-runs 1000] [--deltas 3] [--keep]

1. Full sync of `--full-runs` runs into an empty mirror through the default path for a SQLite store and a
   SQLite mirror, the attached one (runs/s, end to end: read, compare, upsert, rollups, state); the same
   through the SQL path, for the ratio.
   Each `--repeats` times, interleaved, the mirror emptied before each: medians, since a shared machine's
   speed drifts.
2. The baseline: `--client-runs` runs synced through `MlflowClient.search_runs` (the client path), and the
   same store through the SQL path (rows built in Python) and the attached path, for the ratios.
3. Delta: a store of `--big-runs` runs, mirrored in full, then `--delta-runs` new runs appended `--deltas`
   times a minute apart, each followed by an incremental sync (timed: the median is the figure; each reads
   the overlap window again, so the runs of the deltas before it too). Also timed: a sync with nothing
   new, and a forced reconcile of the whole run-id set.

How the stores are made: MLflow itself creates and migrates each store and the experiment (MlflowClient,
alembic revision of MLflow 3.17.2). The runs are then written straight into MLflow's tables with sqlite3
`executemany`, in one transaction per 50 k runs, shaped exactly like a run the intent worker logs
(`create_run` with the contract's tags + `mlflow.runName`, one `log_batch` of 5 params and 5–8 metrics,
`set_terminated`): rows in `runs`, `tags`, `params`, `metrics` and `latest_metrics`, as MLflow writes them.
For 100 k runs and more, MLflow's secondary indexes on those tables are dropped first and created again
afterwards with MLflow's own statements (same schema). Start times are spread evenly over the 30 days
before now. That is 15-40x faster than logging through the client (~100 runs/s); the test suite checks
that the SQL path and the client path read the same runs.

Everything lives in a temporary folder (removed unless --keep). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# BENCH_WORK_DIR: reuse a folder kept by an earlier --keep run (its Django database and stores).
WORK = Path(os.environ.get("BENCH_WORK_DIR") or tempfile.mkdtemp(prefix="intentsite-bench-sync-"))
os.environ.update({
    "DJANGO_SETTINGS_MODULE": "intentsite.settings",
    "DATABASE_URL": os.environ.get("BENCH_DATABASE_URL", f"sqlite:///{WORK / 'db.sqlite3'}"),
    "CELERY_BROKER_URL": f"sqla+sqlite:///{WORK / 'broker.sqlite'}",
    "MLFLOW_TRACKING_URI": f"sqlite:///{WORK / 'mlflow.db'}",
    "MLFLOW_ARTIFACT_ROOT": str(WORK / "artifacts"),
    "INTENTSITE_VAR_DIR": str(WORK / "var"),
    "SECRET_KEY": os.environ.get("SECRET_KEY") or "bench-only-" + os.urandom(24).hex(),
    # one client measuring thousands of calls: not what the throttles are for
    "THROTTLE_DETECT_RATE": "100000000/min", "THROTTLE_ANALYTICS_RATE": "100000000/min",
    "LOG_LEVEL": "WARNING",
})

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from analytics.mirror.sources import sources_reset  # noqa: E402
from analytics.mirror.sync import runs_sync  # noqa: E402
from analytics.models import DailyRollup, MirroredRun, SyncState  # noqa: E402

EXPERIMENT = "intent_detection"
DAY_MS = 86_400_000
INTENTS = [f"intent_{i:03d}" for i in range(149)] + ["out_of_scope"]
MODULES = ["banking", "credit_cards", "kitchen_and_dining", "home", "auto_and_commute", "travel", "utility",
           "work", "small_talk", "meta"]
ROLES = ["customer", "agent", "admin"]
TABS = ["", "accounts", "cards", "payments", "settings"]
PROMPT_VERSIONS = ["3f2a9c1b7d4e", "a81c44e0b2f9", "0d6e5b3c9a17"]
ERRORS = ["lm_timeout", "lm_unavailable", "lm_rate_limit", "parse_error", "invalid_output"]
WORDS = ["sheep", "otter", "heron", "lynx", "moose"]


def store_create(path: Path) -> str:
    """A store and experiment made by MLflow itself (schema, alembic revision, experiment row)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{path}")
    return client.create_experiment(EXPERIMENT, artifact_location=(WORK / "artifacts").as_uri())


def store_fill(path: Path, experiment_id: str, n: int, *, start_ms: int, end_ms: int, seed: int) -> float:
    """Append n runs with start times spread evenly over [start_ms, end_ms); returns seconds taken."""
    rng = random.Random(seed)
    started = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1000000")
    # MLflow's secondary indexes of these tables are dropped for a big load and created again after it,
    # with MLflow's own statements: the same schema, built in one sorted pass instead of row by row.
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN "
        "('runs', 'tags', 'params', 'metrics', 'latest_metrics')").fetchall() if n >= 100_000 else []
    for name, _ in indexes:
        conn.execute(f'DROP INDEX "{name}"')
    artifact_root = (WORK / "artifacts").as_uri()
    step = (end_ms - start_ms) / max(n, 1)
    chunk = 50_000
    for first in range(0, n, chunk):
        runs, tags, params, metrics, latest = [], [], [], [], []
        for i in range(first, min(n, first + chunk)):
            run_id = uuid.UUID(int=rng.getrandbits(128), version=4).hex
            start = int(start_ms + i * step)
            lm = rng.random() < 0.25
            error = rng.choice(ERRORS) if rng.random() < 0.06 else None
            failed = error is not None and rng.random() < 0.5
            latency = math.exp(rng.gauss(6.6, 0.7)) if lm else math.exp(rng.gauss(0.0, 0.5))
            end = start + max(1, round(latency))
            name = f"{rng.choice(WORDS)}-{rng.choice(WORDS)}-{rng.randrange(1000)}"
            intent = rng.choice(INTENTS)
            message_words = rng.randint(2, 20)
            runs.append((run_id, name, "UNKNOWN", "", "", "unknown", "FAILED" if failed else "FINISHED", start, end,
                         "", "active", f"{artifact_root}/{run_id}/artifacts", int(experiment_id), None))
            run_tags = {
                "mlflow.runName": name, "user_role": rng.choice(ROLES), "current_module": rng.choice(MODULES),
                "current_tab": rng.choice(TABS), "detected_intent": intent, "dspy_version": "3.4.1",
                "prompt_version": rng.choice(PROMPT_VERSIONS), "request_id": str(uuid.UUID(int=rng.getrandbits(128))),
                "status": "error" if failed else "success", "fallback_used": str(error is not None and not failed).lower(),
            }
            if error:
                run_tags.update(error_category=error, error_type="TimeoutError")
            tags.extend((key, value, run_id) for key, value in run_tags.items())
            run_params = {"model_name": "openai/gpt-4o-mini" if lm else "local/tfidf-linear",
                          "message_length": str(message_words * 5), "message_word_count": str(message_words),
                          "requires_workflow": str(rng.random() < 0.3).lower(), "category_source": "database"}
            params.extend((key, value, run_id) for key, value in run_params.items())
            run_metrics = {"confidence_score": round(rng.random(), 4), "response_time_ms": latency,
                           "template_match_rate": float(rng.random() < 0.4), "available_workflow_templates": 16.0,
                           "available_agent_templates": 9.0}
            if lm:
                run_metrics.update(prompt_tokens=float(rng.randint(80, 600)), completion_tokens=float(rng.randint(5, 80)),
                                   cost_usd=rng.random() / 2000)
            metrics.extend((key, value, end, run_id, 0, 0) for key, value in run_metrics.items())
            latest.extend((key, value, end, 0, 0, run_id) for key, value in run_metrics.items())
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, "
                         "status, start_time, end_time, source_version, lifecycle_stage, artifact_uri, experiment_id, "
                         "deleted_time) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", runs)
        conn.executemany('INSERT INTO tags ("key", value, run_uuid) VALUES (?,?,?)', tags)
        conn.executemany('INSERT INTO params ("key", value, run_uuid) VALUES (?,?,?)', params)
        conn.executemany('INSERT INTO metrics ("key", value, timestamp, run_uuid, step, is_nan) VALUES (?,?,?,?,?,?)',
                         metrics)
        conn.executemany('INSERT INTO latest_metrics ("key", value, timestamp, step, is_nan, run_uuid) '
                         "VALUES (?,?,?,?,?,?)", latest)
        conn.execute("COMMIT")
        if n >= 100_000:
            print(f"  ... {min(n, first + chunk):,} / {n:,} runs written", file=sys.stderr, flush=True)
    for _, sql in indexes:
        conn.execute(sql)
    conn.close()
    return time.perf_counter() - started


def use_store(path: Path, *, source: str = "auto") -> None:
    settings.MLFLOW_TRACKING_URI = f"sqlite:///{path}"
    settings.ANALYTICS_SYNC_SOURCE = source
    sources_reset()


def mirror_reset() -> None:
    MirroredRun.objects.all().delete()
    DailyRollup.objects.all().delete()
    SyncState.objects.all().delete()


def now_ms() -> int:
    return int(time.time() * 1000)


def report(label: str, result) -> None:
    print(f"  {label}: {result.runs_read:,} runs read, {result.added:,} added, {result.updated:,} updated, "
          f"{result.deleted:,} deleted, {result.days_refreshed} days of rollups in {result.seconds:.2f} s "
          f"-> {result.runs_per_s:,.0f} runs/s ({result.source})")


def bench_full(n: int, repeats: int) -> None:
    path = WORK / "full.db"
    experiment_id = store_create(path)
    end = now_ms()
    seconds = store_fill(path, experiment_id, n, start_ms=end - 30 * DAY_MS, end_ms=end, seed=1)
    print(f"1. full sync of {n:,} runs ({n:,} runs generated in {seconds:.1f} s, {n / seconds:,.0f} runs/s); "
          f"each sync {repeats}x into an empty mirror, the median is the figure")
    variants = {  # label -> source
        "attached path (the default)": "auto",
        "sql path (rows built in Python)": "sql",
    }
    # Interleaved (each variant once per round): a shared machine's speed drifts over minutes.
    rates: dict[str, list[float]] = {label: [] for label in variants}
    last = {}
    for _ in range(repeats):
        for label, source in variants.items():
            use_store(path, source=source)
            mirror_reset()
            last[label] = runs_sync()
            rates[label].append(last[label].runs_per_s)
    medians = {label: statistics.median(values) for label, values in rates.items()}
    for label in variants:
        report(f"{label}: last", last[label])
        print(f"    median {medians[label]:,.0f} runs/s (runs: {', '.join(f'{rate:,.0f}' for rate in rates[label])})")
    use_store(path)
    report("  default path, full re-sync (nothing changed)", runs_sync(full=True))
    default, *others = medians
    for other in others:
        print(f"  {default} / {other}: {medians[default] / medians[other]:.2f}x")


def bench_client(n: int) -> None:
    path = WORK / "client.db"
    experiment_id = store_create(path)
    end = now_ms()
    store_fill(path, experiment_id, n, start_ms=end - 30 * DAY_MS, end_ms=end, seed=2)
    print(f"2. the same sync through MlflowClient.search_runs, the SQL path and the attached path ({n:,} runs)")
    results = {}
    for source in ("client", "sql", "attached"):
        use_store(path, source=source)
        mirror_reset()
        results[source] = runs_sync()
        report(f"{source} path".ljust(13), results[source])
    for source in ("sql", "attached"):
        print(f"  {source} path / client path: {results[source].runs_per_s / results['client'].runs_per_s:.1f}x")


def bench_delta(n: int, delta: int, deltas: int) -> None:
    path = WORK / "big.db"
    experiment_id = store_create(path)
    end = now_ms() - 60_000 * (deltas + 1)
    seconds = store_fill(path, experiment_id, n, start_ms=end - 30 * DAY_MS, end_ms=end, seed=3)
    print(f"3. delta on a {n:,}-run store (generated in {seconds:.1f} s, "
          f"{path.stat().st_size / 1e9:.2f} GB; overlap window {settings.ANALYTICS_SYNC_OVERLAP_S:.0f} s)")
    use_store(path)
    mirror_reset()
    report("initial full sync", runs_sync())
    times = []
    for k in range(deltas):
        start = end + k * 60_000
        store_fill(path, experiment_id, delta, start_ms=start, end_ms=start + 60_000, seed=100 + k)
        result = runs_sync()
        report(f"delta {k + 1} (+{delta:,} runs)", result)
        times.append(result.seconds)
    print(f"  delta of {delta:,} runs: median {statistics.median(times):.3f} s over {deltas}")
    report("sync with nothing new", runs_sync())
    settings.ANALYTICS_RECONCILE_INTERVAL_S = 0
    report("sync with a forced reconcile", runs_sync())
    settings.ANALYTICS_RECONCILE_INTERVAL_S = 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full-runs", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3, help="Full syncs per variant in part 1 (median).")
    parser.add_argument("--client-runs", type=int, default=5_000)
    parser.add_argument("--big-runs", type=int, default=1_000_000)
    parser.add_argument("--delta-runs", type=int, default=1_000)
    parser.add_argument("--deltas", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="Keep the work folder.")
    args = parser.parse_args()
    print(f"work folder: {WORK}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"SQLite {sqlite3.sqlite_version}, Django database: {connection.vendor}")
    call_command("migrate", verbosity=0)
    try:
        if args.full_runs:
            bench_full(args.full_runs, args.repeats)
        if args.client_runs:
            bench_client(args.client_runs)
        if args.big_runs:
            bench_delta(args.big_runs, args.delta_runs, args.deltas)
    finally:
        if not args.keep:
            shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
