"""The soak's stack (`bench/soak.py`): the distributed profile's processes on 127.0.0.1, started, killed and started
again as its faults require. PostgreSQL is the machine's (started as `.ci/run` does when it is down), with two fresh
databases; Redis is a `redis-server` of the soak's own, so that stopping it harms nobody else."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
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


def faults(stack: Stack) -> dict:
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
