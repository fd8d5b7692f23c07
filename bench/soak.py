"""Soak: the distributed profile under steady load and four faults, with every request accounted for.

    python bench/soak.py [--short] [--tracking http|direct] [--rate 40] [--burst 2000] [--workers 1] [--keep]
    make soak [SOAK_ARGS="--short"]

Starts, on 127.0.0.1 (PostgreSQL started as `.ci/run` does when it is down):
  - PostgreSQL: a fresh database for the app and one for MLflow's store (dropped at the end);
  - Redis: a `redis-server` of its own on a free port (the broker; the fault stops it, nobody else's);
  - `mlflow server` on the MLflow database (`--tracking http`: the workers write through it; `--tracking direct`:
    the workers write its PostgreSQL store with the bulk path and the server serves the UI over the same database);
  - gunicorn (2 processes × 4 threads), N Celery workers (`-Q celery,periodic --concurrency 2`) and a beat.
Then drives CLINC150 test messages (with a user role, module and tab) from a bounded load client (at most
--concurrency requests in flight) through these phases, each followed by waiting until everything settled:

  burst          --burst requests as fast as the client can send them (the web's capacity, the ingest keeping up)
  backlog        the same with the workers paused (SIGSTOP) until the load ends: the ingest figure is the drain
                 rate of that backlog (runs / seconds from the workers' resumption to the last run written)
  steady         --rate requests/s for --phase-s seconds
  mlflow_down    the same, `mlflow server` SIGKILLed for the fault window, then started again
  worker_killed  the same, every Celery worker SIGKILLed (the whole process group) for the window, then started
  redis_down     the same, the broker SIGKILLed for the window, then started again on its port
  db_refusing    the same, the app database refusing connections for the window (ALLOW_CONNECTIONS false)

For each phase it prints: requests answered (2xx), 503s, other failures, outbox records, MLflow runs, duplicates,
missing, mirrored rows, time to settle after the load stopped, ingest (the best 5 s of runs written per second; for
the backlog phase its drain rate),
client-side p50/p95/p99 latency of the answered requests, and what /api/analytics/mlflow/health said during the
fault and after settling. Exits 1 on any loss (an answered request without exactly one run and one mirrored row
once settled) or duplicate. Nothing is mocked: every number is read back from PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PG = "postgres@127.0.0.1:5432"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_until(predicate, *, timeout: float, what: str, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise SystemExit(f"soak: {what} did not happen within {timeout:.0f} s")


def psql(sql: str, database: str = "test") -> str:
    return subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-qAtc", sql],
                          check=True, capture_output=True, text=True).stdout


def postgres_ensure() -> None:
    """Start the machine's PostgreSQL cluster when it is down, as `.ci/run` does (needs root)."""
    if port_open(5432):
        return
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], check=True)
    wait_until(lambda: port_open(5432), timeout=60, what="PostgreSQL to listen on 5432")


class Proc:
    """A child process in a session of its own (so that a fault kills it with its children), logging to a file."""

    def __init__(self, name: str, args: list[str], *, env: dict[str, str], logs: Path) -> None:
        self.name, self.args, self.env, self.logs = name, args, env, logs
        self.popen: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        log = open(self.logs / f"{self.name}.log", "ab")  # noqa: SIM115 (the child owns it)
        self.popen = subprocess.Popen(self.args, env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        log.close()

    def send_signal(self, sig: int) -> None:
        os.killpg(self.popen.pid, sig)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.popen and self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()


@dataclass
class Answer:
    phase: str
    sent_at: float
    latency_ms: float
    status: int  # 0: no HTTP answer at all
    request_id: str | None


@dataclass
class Stack:
    work: Path
    env: dict[str, str]
    app_db: str
    mlflow_db: str
    web_url: str = ""
    mlflow_port: int = 0
    redis_port: int = 0
    token: str = ""
    procs: dict[str, Proc] = field(default_factory=dict)
    workers: list[Proc] = field(default_factory=list)

    def manage(self, *args: str) -> str:
        return subprocess.run([sys.executable, "manage.py", *args], env=self.env, cwd=REPO, check=True,
                              capture_output=True, text=True).stdout

    def mlflow_start(self) -> None:
        self.procs["mlflow"] = Proc("mlflow-server", [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.mlflow_port),
            "--backend-store-uri", f"postgresql+psycopg://{PG}/{self.mlflow_db}",
            "--artifacts-destination", str(self.work / "artifacts"), "--workers", "2",
        ], env={**self.env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, logs=self.work)

    def mlflow_up(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.mlflow_port}/health", timeout=2):
                return True
        except OSError:
            return False

    def redis_start(self) -> None:
        self.procs["redis"] = Proc("redis", ["redis-server", "--bind", "127.0.0.1", "--port", str(self.redis_port),
                                             "--save", "", "--appendonly", "no"], env=self.env, logs=self.work)
        wait_until(lambda: port_open(self.redis_port), timeout=30, what="redis-server to listen")

    def workers_start(self, n: int) -> None:
        self.workers = [Proc(f"worker{i}", [sys.executable, "-m", "celery", "-A", "intentsite", "worker", "-n",
                                            f"soak{i}@%h", "-Q", "celery,periodic", "--concurrency", "2",
                                            "--loglevel", "WARNING"], env=self.env, logs=self.work)
                        for i in range(n)]

    def stop(self) -> None:
        for proc in [*self.workers, *self.procs.values()]:
            proc.kill(signal.SIGKILL)


def stack_start(args) -> Stack:
    if not shutil.which("redis-server"):
        raise SystemExit("soak: needs `redis-server` on PATH (it starts a Redis of its own, to stop it as a fault)")
    postgres_ensure()
    work = Path(tempfile.mkdtemp(prefix="intentsite-soak-"))
    suffix = uuid.uuid4().hex[:8]
    stack = Stack(work=work, env={}, app_db=f"soak_app_{suffix}", mlflow_db=f"soak_mlflow_{suffix}",
                  mlflow_port=free_port(), redis_port=free_port())
    for database in (stack.app_db, stack.mlflow_db):
        psql(f"CREATE DATABASE {database}")
    web_port = free_port()
    stack.web_url = f"http://127.0.0.1:{web_port}"
    tracking_uri = (f"http://127.0.0.1:{stack.mlflow_port}" if args.tracking == "http"
                    else f"postgresql+psycopg://{PG}/{stack.mlflow_db}")
    short = args.short
    stack.env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "intentsite.settings",
        "DATABASE_URL": f"postgres://{PG}/{stack.app_db}",
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{stack.redis_port}/0",
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_UI_URL": f"http://127.0.0.1:{stack.mlflow_port}",
        "MLFLOW_ARTIFACT_ROOT": str(work / "artifacts"),
        "INTENTSITE_VAR_DIR": str(work / "var"),
        # the fitted offline model is shared with the checkout's (fitting it takes a while; it is the same model)
        "INTENT_MODEL_CACHE_DIR": os.environ.get("INTENT_MODEL_CACHE_DIR", str(REPO / "var" / "models")),
        "SECRET_KEY": os.environ.get("SECRET_KEY") or "soak-only-" + os.urandom(24).hex(),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "THROTTLE_DETECT_RATE": "1000000/min",
        "THROTTLE_ANALYTICS_RATE": "1000000/min",
        "LOG_LEVEL": "WARNING",
        # the intervals a deployment would shorten to settle quickly; printed with the results
        "ANALYTICS_SYNC_INTERVAL_S": "5" if short else "10",
        "TRACKING_FLUSH_INTERVAL_S": "5" if short else "10",
        "TRACKING_FLUSH_AFTER_S": "10" if short else "20",
        "TRACKING_LEASE_S": "15" if short else "30",
        "WORKER_HEARTBEAT_S": "2" if short else "5",
        "ANALYTICS_SYNC_OVERLAP_S": "600",
    }
    (work / "var").mkdir()
    stack.redis_start()
    stack.mlflow_start()
    stack.manage("migrate", "--noinput")
    wait_until(stack.mlflow_up, timeout=180, what="mlflow server to answer /health")
    stack.manage("mlflow_init")
    stack.manage("load_intent_catalog")
    # the offline model fitted (or loaded from its cache) once here, not by each web process on its first request
    stack.manage("shell", "-c", "from intent.detectors import detector_get; detector_get()")
    out = stack.manage("create_demo_user", "--username", "soak", "--password", uuid.uuid4().hex)
    stack.token = next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("API token: "))
    stack.procs["web"] = Proc("gunicorn", [sys.executable, "-m", "gunicorn", "intentsite.wsgi", "--bind",
                                           f"127.0.0.1:{web_port}", "--workers", "2", "--threads", "4",
                                           "--graceful-timeout", "5"], env=stack.env, logs=work)
    stack.procs["beat"] = Proc("beat", [sys.executable, "-m", "celery", "-A", "intentsite", "beat", "--loglevel",
                                        "WARNING", "--schedule", str(work / "beat-schedule")], env=stack.env,
                               logs=work)
    stack.workers_start(args.workers)
    wait_until(lambda: port_open(web_port), timeout=60, what="gunicorn to listen")
    return stack


class Client:
    """At most `concurrency` requests in flight; with a rate, request i is sent at start + i / rate (or at once
    when the client is behind)."""

    def __init__(self, stack: Stack, concurrency: int) -> None:
        data = json.loads((REPO / "intent" / "data" / "clinc150" / "data_full.json").read_text())
        domains = json.loads((REPO / "intent" / "data" / "clinc150" / "domains.json").read_text())
        module_of = {intent: domain for domain, intents in domains.items() for intent in intents}
        roles, tabs = ("customer", "customer", "customer", "agent", "admin"), ("home", "details", "history", "help")
        rng = random.Random(7)
        self.bodies = [json.dumps({"message": text, "user_role": rng.choice(roles),
                                   "current_module": module_of.get(intent, rng.choice(list(domains))),
                                   "current_tab": rng.choice(tabs)}).encode()
                       for text, intent in data["test"] + data["oos_test"]]
        rng.shuffle(self.bodies)
        self.stack, self.concurrency = stack, concurrency
        self.answers: list[Answer] = []
        self.lock = threading.Lock()

    def post(self, phase: str, body: bytes) -> Answer:
        request = urllib.request.Request(f"{self.stack.web_url}/api/intent/detect", data=body, method="POST",
                                         headers={"Authorization": f"Token {self.stack.token}",
                                                  "Content-Type": "application/json"})
        sent = time.time()
        started = time.perf_counter()
        status, request_id = 0, None
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, request_id = response.status, json.loads(response.read())["request_id"]
        except urllib.error.HTTPError as error:
            status = error.code
        except OSError:
            status = 0
        return Answer(phase, sent, (time.perf_counter() - started) * 1000, status, request_id)

    def run(self, phase: str, *, seconds: float | None = None, count: int | None = None,
            rate: float | None = None) -> float:
        """Send until `seconds` passed or `count` requests were sent; returns the seconds it took."""
        started = time.monotonic()
        counter = iter(range(10**9))

        def loop() -> None:
            while True:
                with self.lock:
                    i = next(counter)
                if count is not None and i >= count:
                    return
                if rate:
                    delay = started + i / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                if seconds is not None and time.monotonic() - started >= seconds:
                    return
                answer = self.post(phase, self.bodies[i % len(self.bodies)])
                with self.lock:
                    self.answers.append(answer)

        threads = [threading.Thread(target=loop, daemon=True) for _ in range(self.concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.monotonic() - started


class HealthWatch(threading.Thread):
    """Reads health every second: (time, status, reasons); an unanswered probe is recorded as `unanswered`."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(daemon=True)
        self.stack, self.seen, self.stopped = stack, [], threading.Event()

    def probe(self) -> tuple[str, tuple[str, ...]]:
        request = urllib.request.Request(f"{self.stack.web_url}/api/analytics/mlflow/health",
                                         headers={"Authorization": f"Token {self.stack.token}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as error:
            try:
                body = json.loads(error.read())
            except ValueError:
                return f"http_{error.code}", ()
        except OSError:
            return "unanswered", ()
        return body.get("status", "?"), tuple(body.get("reasons", ()))

    def run(self) -> None:
        while not self.stopped.wait(1.0):
            self.seen.append((time.time(), *self.probe()))

    def between(self, start: float, end: float) -> str:
        states = {}
        for at, status, reasons in self.seen:
            if start <= at <= end:
                key = status + (f" ({', '.join(reasons)})" if reasons else "")
                states[key] = states.get(key, 0) + 1
        return "; ".join(f"{key} ×{n}" for key, n in states.items()) or "-"


def counts(stack: Stack, ids: list[str]) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """Per request id: outbox records, active finished runs in MLflow's store, mirrored rows."""
    import psycopg

    if not ids:
        return {}, {}, {}
    queries = (
        (stack.app_db, "SELECT request_id::text, count(*) FROM intent_detectionrecord "
                       "WHERE request_id = ANY(%s::uuid[]) GROUP BY 1"),
        (stack.mlflow_db, "SELECT t.value, count(*) FROM tags t JOIN runs r ON r.run_uuid = t.run_uuid "
                          "WHERE t.key = 'request_id' AND r.lifecycle_stage = 'active' AND r.status = 'FINISHED' "
                          "AND t.value = ANY(%s) GROUP BY 1"),
        (stack.app_db, "SELECT request_id, count(*) FROM analytics_mirroredrun WHERE request_id = ANY(%s) GROUP BY 1"),
    )
    found = []
    for database, sql in queries:
        with psycopg.connect(f"postgresql://{PG}/{database}", connect_timeout=5) as connection:
            found.append(dict(connection.execute(sql, [ids]).fetchall()))
    return found[0], found[1], found[2]


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else (values or [0])[0]


def phase_run(name: str, *, stack: Stack, client: Client, health: HealthWatch, args, fault=None,
              count: int | None = None, backlog: bool = False) -> dict:
    """One phase: load (for `count` requests, else `args.phase_s` at `args.rate`), the fault if any, then wait
    until every answered request has one run and one mirrored row. With `backlog`, the workers are paused
    (SIGSTOP) while the load runs and resumed after it: the ingest figure is then how fast they drain it."""
    fault_start, fault_end = None, None
    started = time.time()
    if backlog:
        for worker in stack.workers:
            worker.send_signal(signal.SIGSTOP)
    if fault:
        stop_fault, restore = fault
        pre = min(2.0, args.phase_s / 4) if count is None else 0
        timer_done = threading.Event()

        def inject() -> None:
            nonlocal fault_start, fault_end
            time.sleep(pre)
            fault_start = time.time()
            stop_fault()
            time.sleep(args.fault_s)
            restore()
            fault_end = time.time()
            timer_done.set()

        injector = threading.Thread(target=inject, daemon=True)
        injector.start()
    samples: list[tuple[float, int]] = []  # (time, runs of this phase's answered requests)
    loading = threading.Event()

    def phase_ids() -> list[str]:
        return [a.request_id for a in list(client.answers) if a.phase == name and a.request_id]

    def sample(ids: list[str]) -> tuple[dict, dict, dict]:
        found = counts(stack, ids)
        samples.append((time.time(), len(found[1])))
        return found

    def sampler() -> None:  # runs written while the load goes on (not while the app database refuses)
        while not loading.wait(1.0):
            try:
                sample(phase_ids())
            except Exception:  # noqa: BLE001 (a database fault: the next sample)
                pass

    threading.Thread(target=sampler, daemon=True).start()
    load_s = client.run(name, count=count, rate=None if count else args.rate,
                        seconds=None if count else max(args.phase_s, (args.fault_s + 4) if fault else 0))
    if fault:
        timer_done.wait()
    loading.set()
    load_end = time.time()
    if backlog:
        for worker in stack.workers:
            worker.send_signal(signal.SIGCONT)
    answers = [a for a in client.answers if a.phase == name]
    ids = [a.request_id for a in answers if 200 <= a.status < 300 and a.request_id]

    def settled() -> bool:
        _, runs, mirrored = sample(ids)
        return all(runs.get(i) == 1 and mirrored.get(i) == 1 for i in ids)

    deadline = time.monotonic() + args.settle_timeout_s
    while not settled() and time.monotonic() < deadline:
        time.sleep(0.25 if backlog else 1.0)
    settle_s = time.time() - load_end
    time.sleep(2.5)  # a couple of health probes after settling
    after = time.time()
    records, runs, mirrored = counts(stack, ids)
    best = 0.0
    samples.sort()
    if backlog:  # the drain: every run of the backlog, from the workers' resumption to the last run written
        written = [t for t, n in samples if n == len(ids)]
        best = len(ids) / (written[0] - load_end) if written and written[0] > load_end else 0.0
    for (t0, n0) in samples if not backlog else ():  # the best rate over >= 5 s (runs written per second)
        for (t1, n1) in samples:
            if t1 - t0 >= 5:
                best = max(best, (n1 - n0) / (t1 - t0))
                break
    latencies = [a.latency_ms for a in answers if 200 <= a.status < 300]
    return {
        "phase": name, "sent": len(answers), "answered": len(ids),
        "503": sum(a.status == 503 for a in answers), "failed": sum(a.status not in (0, 503) and a.status >= 300
                                                                  for a in answers),
        "unanswered": sum(a.status == 0 for a in answers), "load_s": load_s,
        "web_rps": len(ids) / load_s if load_s else 0,
        "records": sum(records.values()), "runs": sum(runs.values()), "mirrored": sum(mirrored.values()),
        "duplicates": sum(n > 1 for n in runs.values()) + sum(n > 1 for n in mirrored.values()),
        "missing": sum(runs.get(i) != 1 or mirrored.get(i) != 1 for i in ids),
        "settle_s": settle_s, "ingest_rps": best,
        "p50": percentile(latencies, 50), "p95": percentile(latencies, 95), "p99": percentile(latencies, 99),
        "health_during": health.between(fault_start or started, fault_end or load_end),
        "health_after": health.between(load_end + settle_s, after),
    }


def faults(stack: Stack, args) -> dict:
    def mlflow_kill() -> None:
        stack.procs["mlflow"].kill()

    def mlflow_restart() -> None:
        stack.mlflow_start()

    def workers_kill() -> None:
        for worker in stack.workers:
            worker.kill()

    def workers_restart() -> None:
        stack.workers_start(len(stack.workers))

    def redis_kill() -> None:
        stack.procs["redis"].kill()

    def redis_restart() -> None:
        stack.redis_start()

    def db_refuse() -> None:
        psql(f"ALTER DATABASE {stack.app_db} WITH ALLOW_CONNECTIONS false")
        psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{stack.app_db}'")

    def db_allow() -> None:
        psql(f"ALTER DATABASE {stack.app_db} WITH ALLOW_CONNECTIONS true")

    return {"mlflow_down": (mlflow_kill, mlflow_restart), "worker_killed": (workers_kill, workers_restart),
            "redis_down": (redis_kill, redis_restart), "db_refusing": (db_refuse, db_allow)}


def table_print(results: list[dict], args) -> None:
    print(f"\nsoak: tracking={args.tracking}, rate={args.rate}/s, phase={args.phase_s:.0f} s, fault={args.fault_s:.0f} s "
          f"(db_refusing {args.db_fault_s:.0f} s), workers={args.workers}×2, gunicorn 2×4, client "
          f"{args.concurrency} in flight")
    head = ("phase", "sent", "2xx", "503", "other", "records", "runs", "dup", "missing", "mirrored", "settle s",
            "web req/s", "ingest runs/s", "p50 ms", "p95 ms", "p99 ms")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in results:
        print(f"| {r['phase']} | {r['sent']} | {r['answered']} | {r['503']} | {r['failed'] + r['unanswered']} | "
              f"{r['records']} | {r['runs']} | {r['duplicates']} | {r['missing']} | {r['mirrored']} | "
              f"{r['settle_s']:.1f} | {r['web_rps']:.0f} | {r['ingest_rps']:.0f} | {r['p50']:.0f} | {r['p95']:.0f} | "
              f"{r['p99']:.0f} |")
    print("\n| phase | health during the fault (probes) | health after settling |\n|---|---|---|")
    for r in results:
        print(f"| {r['phase']} | {r['health_during']} | {r['health_after']} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="the CI version: shorter phases and faults")
    parser.add_argument("--tracking", choices=["http", "direct"], default="http")
    parser.add_argument("--rate", type=float, default=None, help="requests/s in the steady and fault phases")
    parser.add_argument("--burst", type=int, default=None, help="requests of the burst phase (0: none)")
    parser.add_argument("--concurrency", type=int, default=16, help="the load client's requests in flight")
    parser.add_argument("--workers", type=int, default=1, help="Celery workers, each with 2 processes")
    parser.add_argument("--phase-s", type=float, default=None)
    parser.add_argument("--fault-s", type=float, default=None)
    parser.add_argument("--settle-timeout-s", type=float, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the databases and logs")
    args = parser.parse_args()
    defaults = ({"rate": 10, "burst": 150, "phase_s": 10, "fault_s": 8, "settle_timeout_s": 90} if args.short else
                {"rate": 15 if args.tracking == "http" else 100, "burst": 2000 if args.tracking == "http" else 5000,
                 "phase_s": 60, "fault_s": 60,
                 "settle_timeout_s": 600})
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.db_fault_s = 5 if args.short else 10
    redis_fault_s = 8 if args.short else 30

    stack = stack_start(args)
    results: list[dict] = []
    try:
        client = Client(stack, args.concurrency)
        for _ in range(3):  # each web process loads the offline model on its first request
            client.run("warmup", count=8)
        health = HealthWatch(stack)
        health.start()
        warm = [a.request_id for a in client.answers if a.request_id]
        wait_until(lambda: len(counts(stack, warm)[2]) == len(warm), timeout=180, what="the warm-up to be mirrored")
        if args.burst:
            results.append(phase_run("burst", stack=stack, client=client, health=health, args=args,
                                     count=args.burst))
            results.append(phase_run("backlog", stack=stack, client=client, health=health, args=args,
                                     count=args.burst, backlog=True))
        results.append(phase_run("steady", stack=stack, client=client, health=health, args=args))
        window = {"redis_down": redis_fault_s, "db_refusing": args.db_fault_s}
        for name, fault in faults(stack, args).items():
            fault_s = args.fault_s
            args.fault_s = window.get(name, fault_s)
            results.append(phase_run(name, stack=stack, client=client, health=health, args=args, fault=fault))
            args.fault_s = fault_s
            print(f"soak: {name} done", file=sys.stderr, flush=True)
        health.stopped.set()
    finally:
        stack.stop()
        if not args.keep:
            for database in (stack.app_db, stack.mlflow_db):
                psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            shutil.rmtree(stack.work, ignore_errors=True)
        else:
            print(f"soak: kept {stack.work} and databases {stack.app_db}, {stack.mlflow_db}", file=sys.stderr)
    table_print(results, args)
    bad = [r["phase"] for r in results if r["missing"] or r["duplicates"]]
    if bad:
        print(f"\nsoak: FAILED: loss or duplicates in {', '.join(bad)}", file=sys.stderr)
        return 1
    print("\nsoak: every answered request has exactly one run and one mirrored row")
    return 0


if __name__ == "__main__":
    sys.exit(main())
