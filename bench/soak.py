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
once settled) or duplicate. Nothing is mocked: every number is read back from PostgreSQL. The processes and the
faults: `bench/soak_stack.py`.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soak_stack import PG, REPO, Stack, faults, psql, stack_start, wait_until  # noqa: E402 (the script's folder)


@dataclass
class Answer:
    phase: str
    sent_at: float
    latency_ms: float
    status: int  # 0: no HTTP answer at all
    request_id: str | None


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


def phase_run(name: str, *, stack: Stack, client: Client, health: HealthWatch, args, fault=None, fault_s: float = 0.0,
              count: int | None = None, backlog: bool = False) -> dict:
    """One phase: load (for `count` requests, else `args.phase_s` at `args.rate`), the fault if any (for `fault_s`
    seconds), then wait
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
            time.sleep(fault_s)
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
                        seconds=None if count else max(args.phase_s, (fault_s + 4) if fault else 0))
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


def table_print(results: list[dict], args) -> None:
    print(f"\nsoak: tracking={args.tracking}, rate={args.rate}/s, phase={args.phase_s:.0f} s, fault={args.fault_s:.0f} s "
          f"(redis_down {args.redis_fault_s:.0f} s, db_refusing {args.db_fault_s:.0f} s), workers={args.workers}×2, gunicorn 2×4, client "
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
    args.redis_fault_s = 8 if args.short else 30

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
        windows = {"redis_down": args.redis_fault_s, "db_refusing": args.db_fault_s}
        for name, fault in faults(stack).items():
            results.append(phase_run(name, stack=stack, client=client, health=health, args=args, fault=fault,
                                     fault_s=windows.get(name, args.fault_s)))
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
