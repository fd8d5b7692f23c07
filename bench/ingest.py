"""Benchmark: the worker's ingest through an `http://` tracking server, one run at a time against runs in flight.

    python bench/ingest.py [--runs 1200] [--repeats 3] [--server-workers 2] [--backend sqlite|postgres] [--direct-only]

Starts a real `mlflow server` on 127.0.0.1 (its store: SQLite in a temporary folder, or a fresh PostgreSQL database
on 127.0.0.1:5432 with --backend postgres), fills the app's outbox (SQLite) with detection records built by the
worker's own payload builder, and times the worker's logging path (`detection_records_log`, batches of 200 ids as
the tasks get them) until every record is logged:

1. one process, one run at a time (TRACKING_CLIENT_CONCURRENCY=1: the path before runs were kept in flight);
2. one process, TRACKING_CLIENT_CONCURRENCY runs in flight;
3. two processes (two Celery worker processes' worth), each with TRACKING_CLIENT_CONCURRENCY in flight;
4. with --backend postgres, the direct-store profile: two processes writing the server's PostgreSQL store
   themselves (the bulk path: a batch of runs in one transaction) while the server keeps serving it
   (--direct-only: this one alone, so that it can be given many more runs than the slow configurations).

Every configuration runs in this process (and its forks) against the same server; each repeat writes a fresh set of
records, and the script checks that each has exactly one run. Prints the median runs/s, the ratio to (1), and the CPU
time a run cost the `mlflow server` processes and PostgreSQL's (all of its processes: with --backend postgres, the
store's; the app's database is SQLite here).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
WORK = Path(tempfile.mkdtemp(prefix="intentsite-ingest-"))
os.environ.update({
    "DJANGO_SETTINGS_MODULE": "intentsite.settings",
    "DATABASE_URL": f"sqlite:///{WORK / 'db.sqlite3'}",
    "CELERY_BROKER_URL": f"sqla+sqlite:///{WORK / 'broker.sqlite'}",
    "INTENTSITE_VAR_DIR": str(WORK / "var"),
    "SECRET_KEY": os.environ.get("SECRET_KEY") or "bench-only-" + os.urandom(24).hex(),
    "LOG_LEVEL": "WARNING",
})

BATCH = 200


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_start(backend: str, workers: int) -> tuple[subprocess.Popen, str, str, str | None]:
    database = None
    if backend == "postgres":
        database = f"bench_mlflow_{os.getpid()}"
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-q", "-c", f"CREATE DATABASE {database}"],
                       check=True)
        store = f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
    else:
        store = f"sqlite:///{WORK / 'server-mlflow.db'}"
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--backend-store-uri",
         store, "--artifacts-destination", str(WORK / "artifacts"), "--workers", str(workers)],
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=open(WORK / "mlflow-server.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True,  # noqa: SIM115
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                return server, uri, store, database
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"mlflow server did not start; see {WORK / 'mlflow-server.log'}")


def records_create(n: int) -> list[str]:
    from django.utils import timezone

    from intent.models import DetectionRecord
    from intent.program import Detection, DetectionInput
    from intent.tracking import run_payload_build

    now_ms = int(time.time() * 1000)
    records = []
    for i in range(n):
        request_id = str(uuid.uuid4())
        detection = Detection(intent=("balance", "transfer", "out_of_scope")[i % 3], confidence=0.5 + (i % 50) / 100,
                              requires_workflow=i % 2 == 0, workflow_template=None, agent_template=None,
                              reasoning="", model_name="local/tfidf-linear", prompt_version="bench0000001",
                              category_source="database", fallback_used=False, response_time_ms=1.0 + i % 7,
                              answered_by="local/tfidf-linear")
        payload = run_payload_build(request_id=request_id, detection=detection, started_at_ms=now_ms + i,
                                    request=DetectionInput(message="what is my balance", user_role="customer",
                                                           current_module="banking"))
        records.append(DetectionRecord(request_id=request_id, created_at=timezone.now(), payload=payload))
    DetectionRecord.objects.bulk_create(records, batch_size=500)
    return [record.request_id for record in records]


def log_all(ids: list[str]) -> None:
    from intent.services import detection_records_log

    for start in range(0, len(ids), BATCH):
        outcome = detection_records_log(request_ids=ids[start:start + BATCH])
        assert not outcome.retry and not outcome.dead, outcome.last_error


def _child(ids: list[str], concurrency: int, uri: str) -> None:
    from django.conf import settings
    from django.db import connections

    connections.close_all()  # the parent's connections stay the parent's
    settings.TRACKING_CLIENT_CONCURRENCY = concurrency
    settings.MLFLOW_TRACKING_URI = uri
    log_all(ids)
    connections.close_all()


def cpu_seconds(*, pgrp: int | None = None, command: str | None = None) -> float:
    """CPU time (user + system) of the processes in process group `pgrp`, or whose name is `command`, with that of
    their children that have exited (PostgreSQL forks a backend per connection)."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, fields = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()
        if (pgrp is not None and int(fields[2]) == pgrp) or (command is not None and name == command):
            total += sum(int(value) for value in fields[11:15]) / tick  # its own and its reaped children's
    return total


SERVER_PGRP: int | None = None
CPU: dict[str, list[tuple[float, float]]] = {}  # label -> (server, PostgreSQL) CPU ms per run, each repeat


def timed(n: int, *, processes: int, concurrency: int, uri: str, label: str = "") -> float:
    """runs/s of logging n fresh records with `processes` processes, `concurrency` runs in flight each, into `uri`
    (the server, or its store)."""
    from django.conf import settings
    from django.db import connections

    ids = records_create(n)
    connections.close_all()
    server_cpu, postgres_cpu = cpu_seconds(pgrp=SERVER_PGRP), cpu_seconds(command="postgres")
    started = time.perf_counter()
    if processes == 1 and uri == settings.MLFLOW_TRACKING_URI:
        settings.TRACKING_CLIENT_CONCURRENCY = concurrency
        log_all(ids)
    else:  # forked, also for one process writing the store: the parent never opens the store's connections
        context = multiprocessing.get_context("fork")
        share = -(-len(ids) // processes)
        children = [context.Process(target=_child, args=(ids[i * share:(i + 1) * share], concurrency, uri))
                    for i in range(processes)]
        for child in children:
            child.start()
        for child in children:
            child.join()
            assert child.exitcode == 0, f"a logging process failed ({child.exitcode})"
    elapsed = time.perf_counter() - started
    CPU.setdefault(label, []).append(((cpu_seconds(pgrp=SERVER_PGRP) - server_cpu) * 1000 / n,
                                      (cpu_seconds(command="postgres") - postgres_cpu) * 1000 / n))
    runs_check(ids)
    return n / elapsed


def runs_check(ids: list[str]) -> None:
    from collections import Counter

    from mlflow.entities import ViewType

    from intent.models import DetectionRecord
    from intent.tracking import experiment_id_get, tracking_client

    assert DetectionRecord.objects.filter(request_id__in=ids, state="logged").count() == len(ids)
    client, wanted, seen = tracking_client(), set(ids), Counter()
    token = None
    while True:
        page = client.search_runs([experiment_id_get()], run_view_type=ViewType.ALL, max_results=500,
                                  page_token=token)
        seen.update(run.data.tags.get("request_id") for run in page if run.data.tags.get("request_id") in wanted)
        token = page.token
        if not token:
            break
    assert set(seen) == wanted and max(seen.values()) == 1, "a record without its run, or with two"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--server-workers", type=int, default=2)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--direct-only", action="store_true")
    args = parser.parse_args()
    global SERVER_PGRP
    server, uri, store, database = server_start(args.backend, args.server_workers)
    SERVER_PGRP = server.pid
    os.environ["MLFLOW_TRACKING_URI"] = uri
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("mlflow_init", verbosity=0)
    configs = [("one process, one run at a time", 1, 1, uri),
               (f"one process, {args.concurrency} runs in flight", 1, args.concurrency, uri),
               (f"two processes, {args.concurrency} runs in flight each", 2, args.concurrency, uri)]
    if store.startswith("postgresql"):
        configs.append(("two processes, direct to the store (bulk)", 2, 1, store))
    if args.direct_only:
        configs = [("one process, direct to the store (bulk)", 1, 1, store), *configs[3:]]
    try:
        timed(100, processes=1, concurrency=args.concurrency, uri=uri)  # warm: imports, the server's first requests
        results: dict[str, list[float]] = {config[0]: [] for config in configs}
        for _ in range(args.repeats):
            for label, processes, concurrency, target in configs:
                results[label].append(timed(args.runs, processes=processes, concurrency=concurrency, uri=target,
                                            label=label))
        print(f"worker ingest through `mlflow server` ({args.backend} store, {args.server_workers} server workers), "
              f"{args.runs} runs, median of {args.repeats}:")
        baseline = statistics.median(results[configs[0][0]])
        for label, *_ in configs:
            median = statistics.median(results[label])
            server_ms = statistics.median(cpu[0] for cpu in CPU[label])
            postgres_ms = statistics.median(cpu[1] for cpu in CPU[label])
            print(f"  {label:<44} {median:7.1f} runs/s  {median / baseline:5.1f}x   CPU a run: server "
                  f"{server_ms:5.1f} ms, PostgreSQL {postgres_ms:4.1f} ms")
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        if database:
            subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-q", "-c", f"DROP DATABASE {database}"],
                           check=False)


if __name__ == "__main__":
    main()
