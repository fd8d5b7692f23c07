"""Freshness: how long after its answer a detection shows in the overview report (`total_runs` of
GET /api/analytics/mlflow/overview?days=1), p50 / p95 / max. The goal: within 10 s at p95.

    python bench/freshness.py [--profile embedded|distributed] [--tracking direct|http] [--rate 5] [--requests 60]
                              [--no-trigger | --compare] [--trigger-s S] [--settle-timeout-s 240] [--keep]

    python bench/freshness.py --compare                                 # embedded: before/after in one run
    python bench/freshness.py --profile distributed --compare           # PostgreSQL + Redis
    python bench/freshness.py --profile distributed --tracking http     # the workers write through `mlflow server`

Profiles, each in a temporary folder (and, distributed, two fresh PostgreSQL databases, dropped at the end):
  embedded     SQLite app database, SQLite broker (`sqla+sqlite`), MLflow on SQLite; gunicorn (2 × 4 threads) and
               `celery worker --beat --concurrency 2`, as `make demo` runs them.
  distributed  PostgreSQL (127.0.0.1:5432) for the app and for MLflow (`postgresql+psycopg://`, or `--tracking http`:
               an `mlflow server` on it), a `redis-server` of its own as the broker; gunicorn (2 × 4), a worker
               (`-Q celery,periodic --concurrency 2`) and a beat, as bench/soak_stack.py starts them.
The service's settings keep their defaults (beat's sync every 60 s, the worker's sync trigger after 2 s), except the
throttles; `--trigger-s` sets ANALYTICS_SYNC_TRIGGER_S, `--no-trigger` sets it to 0 (only beat's sync: the "before").
`--compare` measures both on the same stack (trigger first, then the workers restarted without it) and prints the
ratio of the p95s.

How: a warm-up (each web process loads the model; the first sync) until overview counts it; then a client sends
--requests detections at --rate (request i due at start + i / rate, 4 threads, urllib, a superuser's token) while
a poller reads the overview every 0.25 s (its answer's arrival time and total_runs). Runs are counted, not named:
the k-th answered request (by answer time) counts as visible at the first poll answered after it with total_runs >=
baseline + k + 1; freshness = that poll's time - the answer's time (so it includes up to 0.25 s of polling).
Where the time goes, from the app's tables afterwards (`manage.py shell`): answer -> the outbox record marked logged
(broker + MLflow write), logged -> the mirrored row written (waiting for a sync and its reading), mirrored -> visible
(the rest of that sync, the overview recomputed, the poll); and the syncs the worker's log shows (count, median s).

Caveats: counting pairs the k-th answer with the k-th run to show; if runs were mirrored out of answer order that
pairing can only shorten the max (the "inversions" column counts requests mirrored by a later sync than a
later-answered one: 0 means the pairing is exact). Nothing else may write runs to the stack meanwhile (it is the
bench's own). Crossing midnight UTC during a run breaks `days=1`. The no-trigger figure depends on where beat's
60 s period falls relative to the 12 s load (one run is one sample of it): the runs answered before a beat sync wait
for it, the others a whole period. Embedded, the worker restarted for it restarts the beat inside it, whose first sync
comes 60 s later: the load then sits at the period's start, close to the worst case (a stream over a whole period:
p50 ~30 s, p95 ~57 s). The machine's other load counts too: note it.
Prints figures, asserts nothing; exit 0 unless something crashed. Processes: bench/soak_stack.py's Stack and Proc.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soak_stack import PG, REPO, Proc, Stack, free_port, port_open, postgres_ensure, psql, wait_until  # noqa: E402

GOAL_S = 10.0
POLL_S = 0.25
DEFAULTS = {"ANALYTICS_SYNC_INTERVAL_S": "60", "ANALYTICS_SYNC_TRIGGER_S": "2", "ANALYTICS_SYNC_TRIGGER_OVERLAP_S": "60"}
BREAKDOWN = """
import json
from intent.models import DetectionRecord
from analytics.models import MirroredRun
ids = IDS
logged = {str(r): t.timestamp() for r, t in DetectionRecord.objects.filter(request_id__in=ids)
          .values_list("request_id", "logged_at") if t}
mirrored = {r: t.timestamp() for r, t in MirroredRun.objects.filter(request_id__in=ids)
            .values_list("request_id", "mirrored_at")}
print(json.dumps({"logged": logged, "mirrored": mirrored}))
"""


def stack_up(args) -> Stack:
    distributed = args.profile == "distributed"
    work = Path(tempfile.mkdtemp(prefix="intentsite-freshness-"))
    suffix = uuid.uuid4().hex[:8]
    stack = Stack(work=work, env={}, app_db=f"fresh_app_{suffix}" if distributed else "",
                  mlflow_db=f"fresh_mlflow_{suffix}" if distributed else "", mlflow_port=free_port(),
                  redis_port=free_port())
    env = {
        **os.environ, "DJANGO_SETTINGS_MODULE": "intentsite.settings", "PYTHONUNBUFFERED": "1",
        "MLFLOW_ARTIFACT_ROOT": str(work / "artifacts"), "INTENTSITE_VAR_DIR": str(work / "var"),
        # the fitted offline model, kept outside the checkout and shared between runs (fitting it takes a while)
        "INTENT_MODEL_CACHE_DIR": os.environ.get("INTENT_MODEL_CACHE_DIR",
                                                 str(Path(tempfile.gettempdir()) / "intentsite-bench-models")),
        "SECRET_KEY": os.environ.get("SECRET_KEY") or "bench-only-" + os.urandom(24).hex(),
        "ALLOWED_HOSTS": "127.0.0.1,localhost", "LOG_LEVEL": "WARNING",
        "THROTTLE_DETECT_RATE": "1000000/min", "THROTTLE_ANALYTICS_RATE": "1000000/min",
    }
    if distributed:
        if not shutil.which("redis-server"):
            raise SystemExit("freshness: the distributed profile needs `redis-server` on PATH")
        postgres_ensure()
        for database in (stack.app_db, stack.mlflow_db):
            psql(f"CREATE DATABASE {database}")
        env.update({"DATABASE_URL": f"postgres://{PG}/{stack.app_db}",
                    "CELERY_BROKER_URL": f"redis://127.0.0.1:{stack.redis_port}/0",
                    "MLFLOW_TRACKING_URI": (f"http://127.0.0.1:{stack.mlflow_port}" if args.tracking == "http"
                                            else f"postgresql+psycopg://{PG}/{stack.mlflow_db}")})
    else:
        env.update({"DATABASE_URL": f"sqlite:///{work / 'db.sqlite3'}",
                    "CELERY_BROKER_URL": f"sqla+sqlite:///{work / 'broker.sqlite'}",
                    "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"})
    stack.env = env
    (work / "var").mkdir()
    try:
        if distributed:
            stack.redis_start()
            if args.tracking == "http":
                stack.mlflow_start()
        stack.manage("migrate", "--noinput")
        if distributed and args.tracking == "http":
            wait_until(stack.mlflow_up, timeout=180, what="mlflow server to answer /health")
        stack.manage("mlflow_init")
        stack.manage("load_intent_catalog")
        stack.manage("shell", "-c", "from intent.detectors import detector_get; detector_get()")
        out = stack.manage("create_demo_user", "--username", "bench", "--password", uuid.uuid4().hex)
        stack.token = next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("API token: "))
        port = free_port()
        stack.web_url = f"http://127.0.0.1:{port}"
        stack.procs["web"] = Proc("gunicorn", [sys.executable, "-m", "gunicorn", "intentsite.wsgi", "--bind",
                                               f"127.0.0.1:{port}", "--workers", "2", "--threads", "4"],
                                  env=env, logs=work)
        if distributed:
            stack.procs["beat"] = Proc("beat", [sys.executable, "-m", "celery", "-A", "intentsite", "beat",
                                                "--loglevel", "INFO", "--schedule", str(work / "beat-schedule")],
                                       env=env, logs=work)
        wait_until(lambda: port_open(port), timeout=60, what="gunicorn to listen")
    except BaseException:
        stack_down(stack, args)
        raise
    return stack


def stack_down(stack: Stack, args) -> None:
    stack.stop()
    if args.keep:
        print(f"freshness: kept {stack.work}" + (f" and databases {stack.app_db}, {stack.mlflow_db}"
                                                 if stack.app_db else ""), file=sys.stderr)
        return
    for database in (stack.app_db, stack.mlflow_db):
        if database:
            psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    shutil.rmtree(stack.work, ignore_errors=True)


def worker_start(stack: Stack, args, trigger_s: str | None, name: str) -> Proc:
    """The Celery worker (embedded: with beat in it), replacing the one running; trigger_s None: the default."""
    for worker in stack.workers:
        worker.kill(15)  # SIGTERM: a warm shutdown
    env = dict(stack.env)
    if trigger_s is not None:
        env["ANALYTICS_SYNC_TRIGGER_S"] = trigger_s
    command = [sys.executable, "-m", "celery", "-A", "intentsite", "worker", "--concurrency", "2", "--loglevel",
               "INFO", "-n", f"{name}@%h"]
    command += (["-Q", "celery,periodic"] if args.profile == "distributed"
                else ["--beat", "--schedule", str(stack.work / "beat-schedule")])
    worker = Proc(name, command, env=env, logs=stack.work)
    stack.workers = [worker]
    log = stack.work / f"{name}.log"
    wait_until(lambda: " ready." in log.read_text(errors="replace"), timeout=120, what=f"worker {name} to be ready")
    return worker


def call(stack: Stack, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(f"{stack.web_url}{path}", method="POST" if body else "GET",
                                     data=json.dumps(body).encode() if body else None,
                                     headers={"Authorization": f"Token {stack.token}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def total_runs(stack: Stack) -> int:
    return call(stack, "/api/analytics/mlflow/overview?days=1")["total_runs"]


def percentile(values: list[float], q: float) -> float:
    """Nearest rank (inf for a request never seen)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)] if ordered else math.nan


def syncs_seen(log: Path, since_byte: int) -> tuple[int, float]:
    """Syncs the worker finished after this offset of its log: how many, their median seconds."""
    text = log.read_bytes()[since_byte:].decode(errors="replace")
    seconds = [float(s) for s in re.findall(r"runs_sync_task\[[^\]]+\] succeeded in ([\d.]+)s", text)]
    return len(seconds), statistics.median(seconds) if seconds else math.nan


def measure(stack: Stack, args, messages: list[str], label: str, expected: int) -> dict:
    """One configuration: settle, then the load and the polls. `expected`: runs the overview should show first."""
    wait_until(lambda: total_runs(stack) >= expected, timeout=args.settle_timeout_s,
               what="the previous runs to show in overview")
    baseline = total_runs(stack)
    log = stack.work / f"{stack.workers[0].name}.log"
    log_offset = log.stat().st_size
    polls: list[tuple[float, int]] = []
    stopped = threading.Event()

    def poller() -> None:
        while not stopped.is_set():
            began = time.monotonic()
            try:
                polls.append((time.time(), total_runs(stack)))
            except (OSError, ValueError, KeyError):
                pass
            stopped.wait(max(0.0, POLL_S - (time.monotonic() - began)))

    thread = threading.Thread(target=poller, daemon=True)
    thread.start()
    started = time.monotonic()

    def send(i: int) -> tuple[float, str | None]:
        time.sleep(max(0.0, started + i / args.rate - time.monotonic()))
        try:
            answer = call(stack, "/api/intent/detect", {"message": messages[i % len(messages)]})
        except (OSError, ValueError):
            return time.time(), None
        return time.time(), answer["request_id"]

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = sorted(a for a in pool.map(send, range(args.requests)) if a[1])
    load_s = time.monotonic() - started
    deadline = time.monotonic() + args.settle_timeout_s
    while time.monotonic() < deadline and not (polls and polls[-1][1] >= baseline + len(answers)):
        time.sleep(POLL_S)
    stopped.set()
    thread.join()
    fresh, visible_at = [], []
    for k, (answered, _) in enumerate(answers):
        seen = next((t for t, n in polls if t >= answered and n >= baseline + k + 1), None)
        fresh.append(seen - answered if seen is not None else math.inf)
        visible_at.append(seen)
    ids = [rid for _, rid in answers]
    found = json.loads(stack.manage("shell", "-c", BREAKDOWN.replace("IDS", json.dumps(ids))).strip()
                       .splitlines()[-1]) if ids else {"logged": {}, "mirrored": {}}
    logged, mirrored = found["logged"], found["mirrored"]

    def median_of(pairs) -> float:
        values = [b - a for a, b in pairs if a is not None and b is not None]
        return statistics.median(values) if values else math.nan

    times = [(at, logged.get(rid), mirrored.get(rid), seen) for (at, rid), seen in zip(answers, visible_at,
                                                                                       strict=True)]
    marks = [m for _, _, m, _ in times]
    inversions = sum(1 for i, m in enumerate(marks) if m is not None
                     and any(later is not None and m > later + 0.5 for later in marks[i + 1:]))
    syncs, sync_s = syncs_seen(log, log_offset)
    return {"label": label, "sent": args.requests, "answered": len(answers), "load_s": load_s,
            "visible": sum(math.isfinite(f) for f in fresh), "p50": percentile(fresh, 50),
            "p95": percentile(fresh, 95), "max": max(fresh, default=math.nan),
            "late": sum(f > GOAL_S for f in fresh),
            "to_logged": median_of((a, lg) for a, lg, _, _ in times),
            "to_mirrored": median_of((lg, m) for _, lg, m, _ in times),
            "to_visible": median_of((m, s) for _, _, m, s in times),
            "inversions": inversions, "syncs": syncs, "sync_s": sync_s}


def table_print(results: list[dict], args, trigger: str) -> None:
    print(f"\nfreshness: profile={args.profile}" + (f" (tracking {args.tracking})" if args.profile == "distributed"
                                                     else "") +
          f", {args.requests} requests at {args.rate:g}/s, poll every {POLL_S} s; settings: " +
          ", ".join(f"{k}={os.environ.get(k, v)}" for k, v in DEFAULTS.items() if k != "ANALYTICS_SYNC_TRIGGER_S") +
          f", ANALYTICS_SYNC_TRIGGER_S={trigger} (no-trigger: 0)")
    head = ("configuration", "answered", "visible", "p50 s", "p95 s", "max s", f"> {GOAL_S:g} s",
            "answer→logged s", "logged→mirrored s", "mirrored→visible s", "syncs (median s)", "inversions")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in results:
        print(f"| {r['label']} | {r['answered']}/{r['sent']} | {r['visible']} | {r['p50']:.1f} | {r['p95']:.1f} | "
              f"{r['max']:.1f} | {r['late']} | {r['to_logged']:.2f} | {r['to_mirrored']:.2f} | "
              f"{r['to_visible']:.2f} | {r['syncs']} ({r['sync_s']:.2f}) | {r['inversions']} |")
    if len(results) == 2 and results[0]["p95"] > 0:
        print(f"\np95 before / after: {results[1]['p95'] / results[0]['p95']:.1f}× "
              f"({results[1]['p95']:.1f} s without the trigger, {results[0]['p95']:.1f} s with it)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=("embedded", "distributed"), default="embedded")
    parser.add_argument("--tracking", choices=("direct", "http"), default="direct",
                        help="distributed: the workers write MLflow's PostgreSQL store, or through `mlflow server`")
    parser.add_argument("--rate", type=float, default=5.0, help="detections per second")
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--trigger-s", default=None, help="ANALYTICS_SYNC_TRIGGER_S (default: the service's)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--no-trigger", action="store_true", help="ANALYTICS_SYNC_TRIGGER_S=0: beat's sync only")
    mode.add_argument("--compare", action="store_true", help="with the trigger, then without, on the same stack")
    parser.add_argument("--settle-timeout-s", type=float, default=240)
    parser.add_argument("--keep", action="store_true", help="keep the folder (logs) and the databases")
    args = parser.parse_args()
    began = time.monotonic()
    trigger = args.trigger_s or os.environ.get("ANALYTICS_SYNC_TRIGGER_S", DEFAULTS["ANALYTICS_SYNC_TRIGGER_S"])
    configurations = [("trigger", args.trigger_s), ("no-trigger", "0")]
    configurations = configurations if args.compare else configurations[1:] if args.no_trigger else configurations[:1]
    data = json.loads((REPO / "intent" / "data" / "clinc150" / "data_full.json").read_text())
    messages = [text for text, _ in data["test"]]
    stack = stack_up(args)
    results: list[dict] = []
    try:
        expected = 0
        for n, (label, trigger_s) in enumerate(configurations):
            worker_start(stack, args, trigger_s, f"worker-{label}")
            if n == 0:  # each web process loads the model on its first request; the first sync
                warm = [call(stack, "/api/intent/detect", {"message": m})["request_id"] for m in messages[-12:]]
                expected = len(warm)
            result = measure(stack, args, messages, label, expected)
            expected += result["answered"]
            results.append(result)
            print(f"freshness: {label} done: p95 {result['p95']:.1f} s", file=sys.stderr, flush=True)
    finally:
        stack_down(stack, args)
    table_print(results, args, trigger)
    print(f"\nfreshness: took {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
