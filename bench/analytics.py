"""Benchmark: the analytics report endpoints on a mirror of N synthetic runs over 30 days.

    python bench/analytics.py [--runs 1000000] [--repeats 21] [--seed-runs 3000] [--keep]
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/intentsite_bench_analytics python bench/analytics.py ...

How the mirror is filled: N `MirroredRun` rows are generated in Python (start times spread evenly over the
30 days before now; ~25 % LM runs with log-normal latencies around 700 ms, the rest ~1 ms; 6 % with an
error category, half of them failed; 150 intents, 10 modules, 3 roles, 2 models, 3 prompt versions; 1 %
labelled with feedback) and bulk-inserted with the sync's own writer (`rows_upsert`: executemany on SQLite,
COPY on PostgreSQL), 100 k rows per transaction. The rollups are then computed by the sync's own
`rollups_refresh`, a few days per call: exactly what a full sync leaves behind.

The board widgets' triple (`intent+role+module`, two filters and a breakdown by a third) is asked for by their
boards and built as the sync builds it (`triples_build`): its build time, rows, and the steady state's rollup step
with it kept are printed.

Each endpoint is then called in-process through DRF (`APIRequestFactory`, a staff user, the view itself:
URL routing and authentication aside, everything a request does: validation, selectors, serialization, rendering),
`--repeats` times after one warm-up; the figure is the median (p50) and the 90th percentile.

The seed's approach (`mlflow.search_runs` over the experiment + pandas for the overview) is measured in the
same process on a real MLflow SQLite store of `--seed-runs` runs written the same way (MLflow's own tables,
created by MlflowClient), and scaled linearly to N (its cost is per run: it reads every run of the period).

The database is a temporary SQLite file (or DATABASE_URL's database, created if missing: never the dev
db.sqlite3). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
WORK = Path(tempfile.mkdtemp(prefix="intentsite-bench-analytics-"))
DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{WORK / 'db.sqlite3'}"
if "db.sqlite3" in DATABASE_URL and str(REPO / "db.sqlite3") in DATABASE_URL:
    sys.exit("refusing to benchmark on the dev database")
os.environ.update({
    "DJANGO_SETTINGS_MODULE": "intentsite.settings",
    "DATABASE_URL": DATABASE_URL,
    "CELERY_BROKER_URL": f"sqla+sqlite:///{WORK / 'broker.sqlite'}",
    "MLFLOW_TRACKING_URI": f"sqlite:///{WORK / 'mlflow.db'}",
    "MLFLOW_ARTIFACT_ROOT": str(WORK / "artifacts"),
    "INTENTSITE_VAR_DIR": str(WORK / "var"),
    "SECRET_KEY": os.environ.get("SECRET_KEY") or "bench-only-" + os.urandom(24).hex(),
    # one client measuring thousands of calls: not what the throttles are for
    "THROTTLE_DETECT_RATE": "100000000/min", "THROTTLE_ANALYTICS_RATE": "100000000/min",
    "LOG_LEVEL": "WARNING",
})


def postgres_database_ensure(url: str) -> None:
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(("postgresql", parts.netloc, "/postgres", "", ""))
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


if DATABASE_URL.startswith("postgres"):
    postgres_database_ensure(DATABASE_URL)

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402
from rest_framework.test import APIRequestFactory, force_authenticate  # noqa: E402

from analytics.boards.apis import BoardDataApi  # noqa: E402
from analytics.boards.services import boards_triples_request  # noqa: E402
from analytics.mirror.bulk import rows_upsert  # noqa: E402
from analytics.mirror.mapping import WRITTEN_FIELDS  # noqa: E402
from analytics.mirror.rollups import rollups_add, rollups_refresh  # noqa: E402
from analytics.mirror.sketch import sketch_key  # noqa: E402
from analytics.mirror.triples import triples_build  # noqa: E402
from analytics.models import DailyRollup, MirroredRun, SyncState  # noqa: E402
from analytics.reports import apis as reports  # noqa: E402

EXPERIMENT_ID = "1"
DAYS = 30
INTENTS = [f"intent_{i:03d}" for i in range(149)] + ["out_of_scope"]
MODULES = ["banking", "credit_cards", "kitchen_and_dining", "home", "auto_and_commute", "travel", "utility",
           "work", "small_talk", "meta"]
ROLES = ["customer", "agent", "admin"]
TABS = ["", "accounts", "cards", "payments", "settings"]
PROMPT_VERSIONS = ["3f2a9c1b7d4e", "a81c44e0b2f9", "0d6e5b3c9a17"]
ERRORS = ["lm_timeout", "lm_unavailable", "lm_rate_limit", "parse_error", "invalid_output"]
LM, LOCAL = "openai/gpt-4o-mini", "local/tfidf-linear"
CHUNK = 100_000


def run_values(rng: random.Random) -> dict:
    """One synthetic detection's contract values (shared by the mirror rows and the seed's MLflow store)."""
    lm = rng.random() < 0.25
    error = rng.choice(ERRORS) if rng.random() < 0.06 else None
    failed = error is not None and rng.random() < 0.5
    intent = rng.choice(INTENTS)
    labelled = rng.random() < 0.01
    return {
        "lm": lm, "error": error, "failed": failed, "intent": intent,
        "latency": math.exp(rng.gauss(6.6, 0.7)) if lm else math.exp(rng.gauss(0.0, 0.5)),
        "role": rng.choice(ROLES), "module": rng.choice(MODULES), "tab": rng.choice(TABS),
        "prompt_version": rng.choice(PROMPT_VERSIONS), "confidence": round(rng.random(), 4),
        "template": float(rng.random() < 0.4),
        "tokens": (rng.randint(80, 600), rng.randint(5, 80), rng.random() / 2000) if lm else None,
        "expected": (intent if rng.random() < 0.9 else rng.choice(INTENTS)) if labelled else None,
    }


def run_row(rng: random.Random, begin: datetime, mirrored_at: datetime) -> dict:
    """One synthetic mirrored run starting at `begin`."""
    v = run_values(rng)
    tokens = v["tokens"]
    return {
        "run_id": uuid.UUID(int=rng.getrandbits(128), version=4).hex, "experiment_id": EXPERIMENT_ID,
        "status": "FAILED" if v["failed"] else "FINISHED", "lifecycle": "active", "start_time": begin,
        "end_time": begin + timedelta(milliseconds=v["latency"]), "day": begin.date(),
        "detected_intent": v["intent"], "user_role": v["role"], "current_module": v["module"],
        "current_tab": v["tab"], "prompt_version": v["prompt_version"], "dspy_version": "3.4.1",
        "request_id": str(uuid.UUID(int=rng.getrandbits(128))),
        "fallback_used": v["error"] is not None and not v["failed"], "error_category": v["error"] or "",
        "error_type": "TimeoutError" if v["error"] else "", "is_error": v["failed"],
        "model_name": LM if v["lm"] else LOCAL, "category_source": "database", "requires_workflow": False,
        "answered_by": LOCAL if v["error"] is not None and not v["failed"] else LM if v["lm"] else LOCAL,
        "message_length": 40, "message_word_count": 8, "confidence_score": v["confidence"],
        "response_time_ms": v["latency"], "template_match_rate": v["template"],
        "available_workflow_templates": 16, "available_agent_templates": 9,
        "prompt_tokens": tokens[0] if tokens else None, "completion_tokens": tokens[1] if tokens else None,
        "cost_usd": tokens[2] if tokens else None, "latency_bucket": sketch_key(v["latency"]),
        "tags": {"mlflow.runName": "bench"}, "params": {}, "metrics": {},
        "expected_intent": v["expected"],
        "is_correct": None if v["expected"] is None else v["expected"] == v["intent"],
        "source_digest": "", "mirrored_at": mirrored_at, "experiment": "", "variant": "",
    }


def mirror_fill(n: int, *, seed: int = 1) -> float:
    """N mirrored rows over the last 30 days, then their rollups; returns seconds."""
    rng = random.Random(seed)
    started = time.perf_counter()
    end = datetime.now(UTC)
    start = end - timedelta(days=DAYS)
    step = (end - start) / n
    mirrored_at = datetime.now(UTC)
    for first in range(0, n, CHUNK):
        rows = []
        for i in range(first, min(n, first + CHUNK)):
            rows.append(run_row(rng, start + step * i, mirrored_at))
        with transaction.atomic():
            rows_upsert(model=MirroredRun, rows=rows, fields=WRITTEN_FIELDS)
        print(f"  ... {min(n, first + CHUNK):,} / {n:,} rows", file=sys.stderr, flush=True)
    inserted = time.perf_counter() - started
    days = sorted(set(MirroredRun.objects.values_list("day", flat=True).distinct().order_by()))
    for index in range(0, len(days), 4):
        rollups_refresh(experiment_id=EXPERIMENT_ID, days=days[index:index + 4])
    SyncState.objects.update_or_create(experiment_name=settings.MLFLOW_EXPERIMENT_NAME,
                                       defaults={"experiment_id": EXPERIMENT_ID})
    with connection.cursor() as cursor:  # what autovacuum leaves behind: planner statistics, and on PostgreSQL
        # the visibility map that lets the covering indexes answer without reading the table (index-only scans)
        cursor.execute("VACUUM ANALYZE" if connection.vendor == "postgresql" else "ANALYZE")
    total = time.perf_counter() - started
    print(f"  mirror: {n:,} rows inserted in {inserted:.1f} s, rollups ({rollups_size()}) "
          f"in {total - inserted:.1f} s")
    return total


class _Undo(Exception):
    pass


def rollups_add_timed(n: int, repeats: int) -> float:
    """Median ms of the steady-state sync's rollup step: `rollups_add` of `n` new runs of the last hour into
    today's rollups (each attempt rolled back)."""
    rng = random.Random(5)
    times = []
    for _ in range(repeats):
        now = datetime.now(UTC)
        rows = [run_row(rng, now - timedelta(seconds=rng.uniform(0, 3600)), now) for _ in range(n)]
        try:
            with transaction.atomic():
                rows_upsert(model=MirroredRun, rows=rows, fields=WRITTEN_FIELDS)
                days = {row["day"] for row in rows}
                began = time.perf_counter()
                rollups_add(experiment_id=EXPERIMENT_ID, days=days, run_ids=[row["run_id"] for row in rows])
                times.append((time.perf_counter() - began) * 1000)
                raise _Undo
        except _Undo:
            pass
    return statistics.median(times)


def timed(view, params: dict, user, repeats: int, **kwargs) -> tuple[float, float]:
    factory = APIRequestFactory()
    times = []
    for attempt in range(repeats + 1):
        request = factory.get("/", params)
        force_authenticate(request, user=user)
        began = time.perf_counter()
        response = view(request, **kwargs)
        if hasattr(response, "render"):
            response.render()
        elapsed = time.perf_counter() - began
        assert response.status_code == 200, response.content[:500]
        if attempt:  # the first call warms caches up
            times.append(elapsed * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.9 * len(times)))]


CASES = [
    ("overview", reports.OverviewApi, {}),
    ("trends", reports.TrendsApi, {}),
    ("errors", reports.ErrorsApi, {}),
    ("model-comparison", reports.ModelComparisonApi, {}),
    ("prompt-analysis", reports.PromptAnalysisApi, {}),
    ("report", reports.ReportApi, {}),
    ("report ?format=csv", reports.ReportApi, {"format": "csv"}),
    ("confusion", reports.ConfusionApi, {}),
    ("overview days=30", reports.OverviewApi, {"days": 30}),
    ("trends module=banking (1 filter: rollup)", reports.TrendsApi, {"module": "banking"}),
    ("overview module=banking (pairs)", reports.OverviewApi, {"module": "banking"}),
    ("overview module+model (2 filters: raw)", reports.OverviewApi, {"module": "banking", "model_name": LM}),
    ("report module=banking (pairs)", reports.ReportApi, {"module": "banking"}),
    ("report module+model (2 filters: raw)", reports.ReportApi, {"module": "banking", "model_name": LM}),
]
# Board widgets (one per board, read through the boards' data API): one breakdown, up to two filters, 90 days.
WIDGETS = [
    ("widget runs by intent, module=banking", {"metric": "runs", "breakdown": "intent",
                                               "filters": {"module": "banking"}}),
    ("widget p95 by intent, module=banking", {"metric": "latency_p95_ms", "breakdown": "intent",
                                              "filters": {"module": "banking"}}),
    ("widget error rate by model, role=agent", {"metric": "error_rate", "breakdown": "model_name",
                                                "filters": {"user_role": "agent"}}),
    ("widget accuracy by day, module+version", {"metric": "accuracy", "breakdown": "day",
                                                "filters": {"module": "banking", "prompt_version": "a81c44e0b2f9"}}),
    ("widget p50 by version, module+version", {"metric": "latency_p50_ms", "breakdown": "prompt_version",
                                               "filters": {"module": "banking", "prompt_version": "a81c44e0b2f9"}}),
    ("widget runs by tab, intent=balance", {"metric": "runs", "breakdown": "tab", "filters": {"intent": "balance"}}),
    ("widget runs by intent, module+role (triple)", {"metric": "runs", "breakdown": "intent",
                                                     "filters": {"module": "banking", "user_role": "agent"}}),
    ("widget p95 by intent, module+role (triple)", {"metric": "latency_p95_ms", "breakdown": "intent",
                                                    "filters": {"module": "banking", "user_role": "agent"}}),
]


def widget_boards(owner) -> list[tuple[str, str]]:
    """(label, board id) of one board per widget case."""
    from analytics.models import Board

    Board.objects.filter(owner=owner).delete()
    return [(label, str(Board.objects.create(name=label, owner=owner, widgets=[
        {"title": label, "days": 90, "until": None, "chart": "bar", "width": 6, "height": 2, **widget}]).pk))
        for label, widget in WIDGETS]


def rollups_size() -> str:
    """The daily rollups' rows and, where the database says it, their bytes on disk (indexes included)."""
    rows = DailyRollup.objects.count()
    table = DailyRollup._meta.db_table
    with connection.cursor() as cursor:
        try:
            if connection.vendor == "postgresql":
                cursor.execute("SELECT pg_total_relation_size(%s)", [table])
            else:
                cursor.execute("SELECT SUM(pgsize) FROM dbstat WHERE name = %s OR name IN (SELECT name FROM "
                               "sqlite_master WHERE type = 'index' AND tbl_name = %s)", [table, table])
            size = cursor.fetchone()[0]
        except Exception:  # noqa: BLE001 - SQLite without the dbstat table: rows only
            return f"{rows:,} rows"
    return f"{rows:,} rows, {size / 1e6:.0f} MB"


def seed_baseline(n: int, repeats: int) -> float:
    """Seconds per run of the seed's overview: `mlflow.search_runs` of the 7-day window + pandas."""
    import sqlite3

    import mlflow
    from mlflow.tracking import MlflowClient

    path = WORK / "mlflow.db"
    client = MlflowClient(f"sqlite:///{path}")
    experiment_id = client.create_experiment("intent_detection_seed", artifact_location=(WORK / "art").as_uri())
    rng = random.Random(7)
    now_ms = int(time.time() * 1000)
    step = 7 * 86_400_000 // n
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    for i in range(n):
        v = run_values(rng)
        run_id = uuid.UUID(int=rng.getrandbits(128), version=4).hex
        start = now_ms - 7 * 86_400_000 + i * step
        end = start + max(1, round(v["latency"]))
        conn.execute("INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, "
                     "start_time, end_time, source_version, lifecycle_stage, artifact_uri, experiment_id, "
                     "deleted_time) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                     (run_id, "bench", "UNKNOWN", "", "", "unknown", "FAILED" if v["failed"] else "FINISHED", start,
                      end, "", "active", f"{(WORK / 'art').as_uri()}/{run_id}", int(experiment_id), None))
        tags = {"user_role": v["role"], "current_module": v["module"], "detected_intent": v["intent"],
                "prompt_version": v["prompt_version"], "status": "error" if v["failed"] else "success",
                "fallback_used": str(v["error"] is not None and not v["failed"]).lower()}
        conn.executemany('INSERT INTO tags ("key", value, run_uuid) VALUES (?,?,?)',
                         [(k, val, run_id) for k, val in tags.items()])
        conn.executemany('INSERT INTO params ("key", value, run_uuid) VALUES (?,?,?)',
                         [("model_name", LM if v["lm"] else LOCAL, run_id)])
        metrics = {"confidence_score": v["confidence"], "response_time_ms": v["latency"],
                   "template_match_rate": v["template"]}
        conn.executemany('INSERT INTO metrics ("key", value, timestamp, run_uuid, step, is_nan) VALUES (?,?,?,?,?,?)',
                         [(k, val, end, run_id, 0, 0) for k, val in metrics.items()])
        conn.executemany('INSERT INTO latest_metrics ("key", value, timestamp, step, is_nan, run_uuid) '
                         "VALUES (?,?,?,?,?,?)", [(k, val, end, 0, 0, run_id) for k, val in metrics.items()])
    conn.execute("COMMIT")
    conn.close()
    mlflow.set_tracking_uri(f"sqlite:///{path}")

    def overview() -> None:
        since = int(time.time() * 1000) - 7 * 86_400_000
        frame = mlflow.search_runs(experiment_ids=[experiment_id], filter_string=f"attributes.start_time >= {since}",
                                   max_results=50_000)
        latency = frame["metrics.response_time_ms"]
        {
            "total_runs": len(frame), "success_rate": (frame["tags.status"] == "success").mean(),
            "avg_confidence": frame["metrics.confidence_score"].mean(), "p50": latency.quantile(0.5),
            "p95": latency.quantile(0.95), "p99": latency.quantile(0.99),
            "intents": frame["tags.detected_intent"].value_counts().to_dict(),
            "roles": frame["tags.user_role"].value_counts().to_dict(),
            "modules": frame["tags.current_module"].value_counts().to_dict(),
        }

    overview()
    times = []
    for _ in range(max(1, repeats // 7)):
        began = time.perf_counter()
        overview()
        times.append(time.perf_counter() - began)
    return statistics.median(times) / n


def mirror_clear() -> None:
    """No mirror, rollups or triples (a PostgreSQL database is reused from run to run): the fill starts from none."""
    from analytics.models import RollupTriple, RollupTripleBuilt

    for model in (MirroredRun, DailyRollup, RollupTriple, RollupTripleBuilt):
        model.objects.all().delete()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--seed-runs", type=int, default=3000, help="Runs of the seed-approach baseline store.")
    parser.add_argument("--keep", action="store_true", help="Keep the database (Postgres) / work folder.")
    args = parser.parse_args()
    vendor = connection.vendor
    print(f"bench/analytics.py: {args.runs:,} runs over {DAYS} days, {vendor} "
          f"({connection.settings_dict['NAME']}), Python {sys.version.split()[0]}")
    call_command("migrate", verbosity=0)
    mirror_clear()
    mirror_fill(args.runs)
    print(f"  sync's steady state: rollups_add of 1,000 new runs into today's rollups: "
          f"{rollups_add_timed(1000, 5):.0f} ms (median of 5)")
    staff, _ = get_user_model().objects.get_or_create(username="bench", defaults={"is_staff": True})
    per_run_s = seed_baseline(args.seed_runs, args.repeats)
    seed_7_days_s = per_run_s * args.runs * 7 / DAYS
    print(f"  seed approach (mlflow.search_runs + pandas, overview of 7 days): {per_run_s * 1e6:.0f} µs/run "
          f"measured at {args.seed_runs:,} runs, scaled linearly to the {args.runs * 7 // DAYS:,} runs of 7 days: "
          f"{seed_7_days_s:.1f} s")
    # Computed on every request (the cache off): what the first request after each sync costs.
    settings.ANALYTICS_CACHE_TIMEOUT_S = 0
    print(f"  {'endpoint (computed from the rollups)':<44} {'p50 ms':>9} {'p90 ms':>9}")
    for label, view_class, params in CASES:
        # The raw-row cases take seconds at 1 M runs: fewer repeats.
        p50, p90 = timed(view_class.as_view(), params, staff, args.repeats if "raw" not in label else 5)
        ratio = f"  (seed / this: {seed_7_days_s * 1000 / p50:,.0f}x)" if label == "overview" else ""
        print(f"  {label:<44} {p50:9.2f} {p90:9.2f}{ratio}")
    boards = widget_boards(staff)
    # The triple the two-filter widgets need (`intent+role+module`): asked for by the boards, built as the next sync
    # builds it; what it costs to build, to keep (the steady state's rollups_add again) and to store.
    triples = boards_triples_request()
    began = time.perf_counter()
    built = triples_build(experiment_id=EXPERIMENT_ID)
    print(f"  triples {', '.join(triples)} built in {time.perf_counter() - began:.1f} s: "
          f"{sum(built.values()):,} rows (rollups now {rollups_size()}); rollups_add of 1,000 new runs with it: "
          f"{rollups_add_timed(1000, 5):.0f} ms (median of 5)")
    data = BoardDataApi.as_view()
    for label, pk in boards:
        p50, p90 = timed(data, {}, staff, args.repeats if "raw" not in label else 5, pk=pk)
        print(f"  {label:<44} {p50:9.2f} {p90:9.2f}")
    # As served between two syncs: a finished sync gives the mirror a version, answers are cached under it.
    settings.ANALYTICS_CACHE_TIMEOUT_S = 3600
    SyncState.objects.filter(experiment_name=settings.MLFLOW_EXPERIMENT_NAME).update(last_finished_at=timezone.now())
    print(f"  {'endpoint (cached until the next sync)':<44} {'p50 ms':>9} {'p90 ms':>9}")
    for label, view_class, params in CASES[:6]:
        p50, p90 = timed(view_class.as_view(), params, staff, args.repeats)
        print(f"  {label:<44} {p50:9.2f} {p90:9.2f}")
    for label, pk in boards:
        p50, p90 = timed(data, {}, staff, args.repeats, pk=pk)
        print(f"  {label:<44} {p50:9.2f} {p90:9.2f}")
    if not args.keep:
        mirror_clear()
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
