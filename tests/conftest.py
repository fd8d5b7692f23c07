"""Shared fixtures: users and API clients, a small real catalog from CLINC150, an isolated detector."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from intent.detectors import detector_reset
from intent.program.circuit import circuits_reset
from tests.browser import browser, chromium  # noqa: F401 - the pages' fixtures, for every test module

CLINC150 = Path(django_settings.BASE_DIR) / "intent" / "data" / "clinc150" / "data_full.json"
DOMAINS = Path(django_settings.BASE_DIR) / "intent" / "data" / "clinc150" / "domains.json"


@pytest.fixture(scope="session")
def model_cache_dir(tmp_path_factory) -> Path:
    """Fitted local models, shared by the session's processes (pytest-xdist workers too: each fit takes seconds;
    a model file is written atomically, so two workers fitting the same one at once is harmless)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = tmp_path_factory.getbasetemp().parent / "models"
        shared.mkdir(exist_ok=True)
        return shared
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session", autouse=True)
def fast_password_hashing():
    """Users' passwords hashed with MD5 in tests, as Django's testing docs advise: the production hasher (PBKDF2,
    a million iterations) takes ~0.35 s a user here, and a few hundred tests each create one or two users.
    Django's own hashers stay accepted after it; subprocesses (gunicorn, workers) authenticate by token."""
    from django.test.utils import override_settings

    hashers = ["django.contrib.auth.hashers.MD5PasswordHasher", *django_settings.PASSWORD_HASHERS]
    with override_settings(PASSWORD_HASHERS=hashers):
        yield


@pytest.fixture(autouse=True)
def no_sync_requests_in_process(settings):
    """Runs logged in this process (tests calling the recording service) ask for no sync: such a request would wait
    in the session's broker and start a sync in whatever worker a later test starts, on that test's data. Workers
    started by tests keep the default (their environment), so the freshness path runs where a test asks for it."""
    settings.ANALYTICS_SYNC_TRIGGER_S = 0
    settings.TRACKING_FOLLOW_UP_TASKS = False  # likewise the MLflow follow-ups of experiments and activations


@pytest.fixture(autouse=True)
def isolated_detector(settings, model_cache_dir):
    settings.INTENT_MODEL_CACHE_DIR = model_cache_dir
    settings.INTENT_CATALOG_REFRESH_S = 0
    settings.INTENT_LM = "local"
    detector_reset()
    circuits_reset()  # each process keeps its LM breakers across detectors; each test starts with none
    yield
    detector_reset()
    circuits_reset()


@pytest.fixture(autouse=True)
def empty_cache():
    """The default cache (report answers, throttle counters) starts empty in every test: user ids repeat
    across tests, and one test's requests must not count against the next one's rate."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture(scope="session")
def clinc150() -> dict:
    return json.loads(CLINC150.read_text())


@pytest.fixture(scope="session")
def clinc_domains() -> dict[str, list[str]]:
    return json.loads(DOMAINS.read_text())


@pytest.fixture
def small_catalog(db, clinc150, clinc_domains) -> dict:
    """Two CLINC150 domains (30 intents, all their training utterances) plus two templates, loaded."""
    from intent.services import catalog_load

    wanted = {intent: domain for domain in ("banking", "travel") for intent in clinc_domains[domain]}
    examples: dict[str, list[str]] = {}
    for text, intent in clinc150["train"]:
        if intent in wanted:
            examples.setdefault(intent, []).append(text)
    catalog = {
        "intents": [
            {"name": name, "module": wanted[name], "description": name.replace("_", " "), "examples": texts}
            for name, texts in sorted(examples.items())
        ],
        "workflow_templates": [
            {"name": "money_transfer", "module": "banking", "description": "Moves money.",
             "intents": ["transfer", "pay_bill"]},
        ],
        "agent_templates": [
            {"name": "travel_concierge", "module": "travel", "description": "Answers travel questions.",
             "intents": ["international_visa", "exchange_rate", "plug_type"]},
        ],
    }
    catalog_load(catalog=catalog)
    return catalog


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user(username="alice", password="pw-alice-123")


@pytest.fixture
def api_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.fixture
def anonymous_client() -> APIClient:
    return APIClient()


# --- Real MLflow, real Celery ------------------------------------------------------------------------

import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from django.db import connection  # noqa: E402

REPO = Path(django_settings.BASE_DIR)
IN_CI = os.environ.get("CI", "").lower() == "true"


DATABASE_FIXTURES = {"db", "transactional_db", "live_server", "django_db_reset_sequences", "django_db_serialized_rollback"}


def pytest_collection_modifyitems(config, items):
    """Mark the tests that open no Django database `database_free` (see pyproject.toml), and run the `slow` ones
    (real workers and servers, mostly waiting) first: started last, one of them would be the suite's tail while
    the other xdist workers sit idle; started first, they wait while the other workers run the quick tests."""
    for item in items:
        if item.get_closest_marker("django_db") is None and not DATABASE_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.database_free)
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: the order within each kind stays


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix, tmp_path_factory):
    """A SQLite test database lives in a file, so that worker processes can open it too. Other databases keep
    pytest-django's per-xdist-worker suffix (test_test_gw0, ...): two workers never share one."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    if db["ENGINE"] == "django.db.backends.sqlite3":
        db.setdefault("TEST", {})["NAME"] = str(tmp_path_factory.mktemp("db") / "test.sqlite3")


@pytest.fixture(scope="session", autouse=True)
def broker_url(tmp_path_factory) -> str:
    """The session's broker: the configured Redis/RabbitMQ (emptied first), or a SQLite file of its own.
    Autouse, so it is in place before anything in this process publishes (the app keeps its pool)."""
    from intentsite.celery import app

    url = django_settings.CELERY_BROKER_URL
    if url.startswith("sqla+sqlite"):
        url = f"sqla+sqlite:///{tmp_path_factory.mktemp('broker') / 'broker.sqlite'}"
    elif url.startswith("redis://") and os.environ.get("PYTEST_XDIST_WORKER"):
        # pytest-xdist: each worker process a Redis database of its own (15, 14, ...), or one's tasks would be
        # taken by the workers another one started.
        base, _, number = url.rpartition("/")
        url = f"{base}/{int(number or 0) - int(os.environ['PYTEST_XDIST_WORKER'].removeprefix('gw'))}"
    # Celery's `broker_url` reads the CELERY_BROKER_URL environment variable before any setting: set there, it is
    # this process's broker whatever .ci/run named (else an xdist worker's tasks would reach another's workers)
    os.environ["CELERY_BROKER_URL"] = url
    assert app.conf.broker_url == url, app.conf.broker_url
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=3)
        if url.startswith(("redis://", "amqp://", "pyamqp://")):
            with conn.channel() as channel:
                try:
                    channel.queue_purge("celery")
                except Exception:  # noqa: BLE001 - the queue may not exist yet
                    pass
    return url


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """An empty MLflow store (SQLite), created and migrated by MLflow once per test process. A test's store, and an
    `mlflow server`'s, is a copy of it: migrating a new store takes MLflow 2-3 s (50 s for a server on a loaded
    machine), a copy a few milliseconds."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    SqlAlchemyStore(f"sqlite:///{path}", str(path.parent / "artifacts")).engine.dispose()
    return path


@pytest.fixture
def mlflow_store(tmp_path, settings, mlflow_template) -> str:
    """A real, empty MLflow store (SQLite) in a temporary folder (a copy of the migrated template), initialised."""
    from intent import tracking

    shutil.copyfile(mlflow_template, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings.MLFLOW_TRACKING_URI = uri
    settings.MLFLOW_ARTIFACT_ROOT = tmp_path / "artifacts"
    tracking.experiment_cache_clear()
    tracking.store_init()
    yield uri
    tracking.experiment_cache_clear()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, *, timeout: float, interval: float = 0.25, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {message}")


class Process:
    """A child process started with its own process group, its output in a log file."""

    def __init__(self, args: list[str], *, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(args, env=env, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, *, graceful: bool = True) -> None:
        """SIGTERM to the group and a wait for it; `graceful=False` (fixture teardown, nothing left to check) kills
        at once: an idle prefork worker takes ~7 s to join its pool children after a warm shutdown."""
        if self.popen.poll() is None and not graceful:
            self.kill(signal.SIGKILL)
            self.popen.wait(timeout=10)
        if self.popen.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.popen.wait(timeout=5)
        self._log.close()


def child_env(**overrides: str) -> dict[str, str]:
    """Environment for a worker or beat process that shares this test's database and settings."""
    db = connection.settings_dict
    env = dict(os.environ)
    if db["ENGINE"] == "django.db.backends.sqlite3":
        env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
    else:
        user = db.get("USER") or ""
        auth = f"{user}:{db.get('PASSWORD')}@" if db.get("PASSWORD") else (f"{user}@" if user else "")
        env["DATABASE_URL"] = f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"
    env.update({
        "DJANGO_SETTINGS_MODULE": "intentsite.settings",
        "MLFLOW_TRACKING_URI": django_settings.MLFLOW_TRACKING_URI,
        "MLFLOW_ARTIFACT_ROOT": str(django_settings.MLFLOW_ARTIFACT_ROOT),
        "INTENT_MODEL_CACHE_DIR": str(django_settings.INTENT_MODEL_CACHE_DIR),
        "PYTHONUNBUFFERED": "1",
    })
    env.update(overrides)
    return env


@pytest.fixture
def start_worker(tmp_path, broker_url):
    """Start real `celery worker` processes (prefork) on the session's broker; stopped after the test."""
    started: list[Process] = []

    def start(*, name: str = "worker", concurrency: int = 1, beat: bool = False, **env: str) -> Process:
        # No sync requested after logging unless a test asks (ANALYTICS_SYNC_TRIGGER_S): tests that count or time
        # syncs, or refresh runs under the sync's lease, see only the syncs they start.
        env = {"ANALYTICS_SYNC_TRIGGER_S": "0", **env}
        args = [sys.executable, "-m", "celery", "-A", "intentsite", "worker", "--pool", "prefork",
                "--concurrency", str(concurrency), "--loglevel", "INFO", "--without-gossip", "--without-mingle",
                "--hostname", f"{name}-{len(started)}@%h"]
        if beat:
            args += ["--beat", "--schedule", str(tmp_path / "beat-schedule")]
        process = Process(args, env=child_env(CELERY_BROKER_URL=broker_url, **env),
                          log_path=tmp_path / f"{name}-{len(started)}.log")
        started.append(process)
        wait_for(lambda: "ready." in process.log() or process.popen.poll() is not None, timeout=60,
                 message=f"celery worker {name} to be ready")
        assert process.popen.poll() is None, process.log()
        return process

    yield start
    for process in started:
        process.stop(graceful=False)


@pytest.fixture
def mlflow_server(tmp_path, mlflow_template):
    """A real `mlflow server` on 127.0.0.1 at a free port, on a store of its own (a copy of the migrated template);
    `.stop()` and `.start()` it at will."""
    shutil.copyfile(mlflow_template, tmp_path / "server-mlflow.db")

    class Server:
        def __init__(self) -> None:
            self.port = free_port()
            self.uri = f"http://127.0.0.1:{self.port}"
            self.process: Process | None = None
            self.starts = 0

        def start(self) -> None:
            self.starts += 1
            self.process = Process(
                [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
                 "--backend-store-uri", f"sqlite:///{tmp_path / 'server-mlflow.db'}",
                 "--artifacts-destination", str(tmp_path / "server-artifacts"), "--workers", "1"],
                # no job runner (a second process importing MLflow, for GenAI jobs these tests never start)
                env=child_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
                log_path=tmp_path / f"mlflow-server-{self.starts}.log",
            )
            wait_for(self.healthy, timeout=90, interval=0.5, message="mlflow server to answer /health")

        def healthy(self) -> bool:
            import urllib.request

            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        def stop(self, *, graceful: bool = True) -> None:
            if self.process is not None:
                self.process.stop(graceful=graceful)
                self.process = None

    server = Server()
    server.start()
    yield server
    server.stop(graceful=False)


@pytest.fixture
def start_web(tmp_path, broker_url):
    """Start the real web tier (gunicorn, `workers` processes × `threads`) on a free port, on this test's database,
    MLflow store and broker (or the CELERY_BROKER_URL given); stopped after the test. Returns its base URL."""
    started: list[Process] = []

    def start(*, workers: int = 2, threads: int = 4, **env: str) -> str:
        port = free_port()
        process = Process([sys.executable, "-m", "gunicorn", "intentsite.wsgi", "--bind", f"127.0.0.1:{port}",
                           "--workers", str(workers), "--threads", str(threads), "--timeout", "60"],
                          env=child_env(**{"CELERY_BROKER_URL": broker_url, **env}), log_path=tmp_path / f"web-{port}.log")
        started.append(process)
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            import urllib.error
            import urllib.request

            if process.popen.poll() is not None:
                raise AssertionError(process.log())
            try:
                urllib.request.urlopen(f"{url}/api/schema/", timeout=2)
                return True
            except urllib.error.HTTPError:
                return True  # it answers
            except OSError:
                return False

        wait_for(up, timeout=60, interval=0.25, message="gunicorn to answer")
        return url

    yield start
    for process in started:
        process.stop(graceful=False)


@pytest.fixture
def receiver():
    """A real HTTP server on 127.0.0.1 that records the webhooks it gets (`tests/receiver.py`)."""
    from tests.receiver import Receiver

    server = Receiver()
    yield server
    server.close()
