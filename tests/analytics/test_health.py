"""GET /api/analytics/mlflow/health: ok, degraded (late sync, dead letters, broker), down (MLflow), permissions."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from celery import current_app
from django.utils import timezone
from rest_framework.test import APIClient

from analytics.mirror.sync import runs_sync
from analytics.models import SyncState, WorkerHeartbeat
from analytics.ops.workers import worker_heartbeat_record
from tests.analytics.conftest import DAY0_MS
from tests.conftest import free_port, wait_for

pytestmark = pytest.mark.django_db
URL = "/api/analytics/mlflow/health"


@pytest.fixture
def staff_client(django_user_model) -> APIClient:
    staff = django_user_model.objects.create_user("staff", password="pw-staff-123", is_staff=True)
    client = APIClient()
    client.force_authenticate(staff)
    return client


@pytest.fixture(autouse=True)
def worker_alive():
    """A Celery worker's heartbeat, just written: the tests below are about the other parts."""
    worker_heartbeat_record(hostname="celery@test", pid=1, queues=["celery", "periodic"], started_at=timezone.now())


@pytest.fixture
def synced(run_logger, settings):
    """One run logged and mirrored: the sync has just succeeded."""
    settings.ANALYTICS_SYNC_INTERVAL_S = 60
    run_logger.log(start_ms=DAY0_MS)
    runs_sync()
    return SyncState.objects.get(experiment_name=settings.MLFLOW_EXPERIMENT_NAME)


def test_all_parts_up_and_a_fresh_sync_is_ok(synced, staff_client, mlflow_store):
    response = staff_client.get(URL)

    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok" and body["reasons"] == []
    assert body["tracking_uri"] == mlflow_store
    assert body["mlflow"] == {"reachable": True, "experiment_present": True, "error": None}
    assert body["sync"]["interval_s"] == 60 and body["sync"]["max_lag_s"] == 180
    assert 0 <= body["sync"]["lag_s"] < 180 and body["sync"]["last_succeeded_at"] is not None
    assert body["sync"]["mirrored_runs"] == 1
    assert body["dead_letters"] == 0
    assert body["broker"] == {"reachable": True, "error": None}
    assert body["database"] == {"reachable": True, "error": None}


def test_a_sync_late_by_more_than_three_intervals_is_degraded(synced, staff_client):
    SyncState.objects.filter(pk=synced.pk).update(last_succeeded_at=timezone.now() - timedelta(seconds=2 * 60))
    within = staff_client.get(URL).json()
    SyncState.objects.filter(pk=synced.pk).update(last_succeeded_at=timezone.now() - timedelta(seconds=3 * 60 + 30))

    late = staff_client.get(URL)

    assert within["status"] == "ok"
    assert late.status_code == 200
    assert late.json()["status"] == "degraded" and late.json()["reasons"] == ["sync_lagging"]
    assert late.json()["sync"]["lag_s"] > 180


def test_no_sync_yet_is_degraded(mlflow_store, staff_client):
    body = staff_client.get(URL).json()

    assert body["status"] == "degraded" and body["reasons"] == ["sync_never_succeeded"]
    assert body["sync"]["last_succeeded_at"] is None and body["sync"]["lag_s"] is None


def test_dead_letters_make_it_degraded_and_are_counted(synced, staff_client):
    from intent.models import DetectionRecord

    for state in ("dead", "dead", "pending"):
        DetectionRecord.objects.create(request_id=uuid.uuid4(), created_at=timezone.now(), payload={}, state=state)

    body = staff_client.get(URL).json()

    assert body["status"] == "degraded" and body["reasons"] == ["dead_letters"]
    assert body["dead_letters"] == 2


def test_an_unreachable_broker_is_degraded(synced, staff_client, monkeypatch):
    closed = f"redis://127.0.0.1:{free_port()}/0"
    # The app reads Django settings under the CELERY_ namespace (as tests/conftest.py's broker_url does),
    # and Celery lets the CELERY_BROKER_URL environment variable (the distributed CI run) win over both.
    monkeypatch.setitem(current_app.conf, "CELERY_BROKER_URL", closed)
    monkeypatch.setenv("CELERY_BROKER_URL", closed)

    body = staff_client.get(URL).json()

    assert body["status"] == "degraded" and body["reasons"] == ["broker_unreachable"]
    assert body["broker"]["reachable"] is False and "onnection" in body["broker"]["error"]


def test_an_mlflow_server_that_is_down_makes_it_down_without_leaking_credentials(synced, staff_client, settings):
    port = free_port()  # nothing listens there
    settings.MLFLOW_TRACKING_URI = f"http://analyst:s3cret-token@127.0.0.1:{port}"

    response = staff_client.get(URL)

    body = response.json()
    assert response.status_code == 503
    assert body["status"] == "down" and "mlflow_unreachable" in body["reasons"]
    assert body["mlflow"]["reachable"] is False and body["mlflow"]["experiment_present"] is False
    assert body["mlflow"]["error"]
    assert body["tracking_uri"] == f"http://127.0.0.1:{port}"
    assert "s3cret" not in response.content.decode()
    assert body["database"]["reachable"] is True  # the rest is still reported


@pytest.mark.parametrize("uri, shown", [
    ("http://127.0.0.1:{port}/?token=s3cret-token&user=x", "http://127.0.0.1:{port}/?token=***&user=***"),
    ("postgresql+psycopg://pg:s3cret-pw@127.0.0.1:{port}/db?password=s3cret-q&sslmode=require",
     "postgresql+psycopg://127.0.0.1:{port}/db?password=***&sslmode=***"),
])
def test_credentials_in_a_query_string_are_not_shown_either(synced, staff_client, settings, uri, shown):
    port = free_port()
    settings.MLFLOW_TRACKING_URI = uri.format(port=port)

    response = staff_client.get(URL)

    assert response.json()["tracking_uri"] == shown.format(port=port)
    assert "s3cret" not in response.content.decode()


def test_a_missing_store_file_is_down_and_is_not_created(synced, staff_client, settings, tmp_path):
    missing = Path(tmp_path) / "nowhere" / "mlflow.db"
    settings.MLFLOW_TRACKING_URI = f"sqlite:///{missing}"

    response = staff_client.get(URL)

    assert response.status_code == 503
    assert response.json()["status"] == "down" and "does not exist" in response.json()["mlflow"]["error"]
    assert not missing.exists()


def test_a_deleted_experiment_is_degraded(synced, staff_client, run_logger):
    run_logger.client.delete_experiment(run_logger.experiment_id)

    body = staff_client.get(URL).json()

    assert body["status"] == "degraded" and body["reasons"] == ["experiment_missing"]
    assert body["mlflow"] == {"reachable": True, "experiment_present": False, "error": None}


def test_a_live_mlflow_server_is_reachable_over_http(mlflow_server, staff_client, settings):
    settings.MLFLOW_TRACKING_URI = mlflow_server.uri

    body = staff_client.get(URL).json()

    assert body["mlflow"]["reachable"] is True
    assert body["mlflow"]["experiment_present"] is False  # a fresh server has no intent_detection yet
    assert body["reasons"] == ["experiment_missing", "sync_never_succeeded"]


def test_only_staff_may_read_it(mlflow_store, django_user_model, anonymous_client, api_client):
    superuser = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")
    as_superuser = APIClient()
    as_superuser.force_authenticate(superuser)

    anonymous = anonymous_client.get(URL)

    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"] == "Token"
    assert api_client.get(URL).status_code == 403  # authenticated, not staff
    assert as_superuser.get(URL).status_code == 200


def test_a_server_that_is_not_mlflow_is_not_taken_for_it(synced, staff_client, settings):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>nothing here</html>")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.MLFLOW_TRACKING_URI = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        response = staff_client.get(URL)
    finally:
        server.shutdown()
        server.server_close()

    assert response.status_code == 503
    assert response.json()["mlflow"]["reachable"] is False
    assert "without MLflow's JSON" in response.json()["mlflow"]["error"]


def test_an_open_lm_circuit_breaker_makes_it_degraded_and_is_shown(synced, staff_client):
    from intent.program.circuit import CircuitConfig, circuit_get

    circuit = circuit_get(model="openai/gpt-4o-mini", api_base="https://user:pw@llm.example/v1?key=k",
                          config=CircuitConfig(failures_to_open=2, cooldown_s=60))
    closed = staff_client.get(URL).json()
    for _ in range(2):
        circuit.record(circuit.allow(), failed=True)

    body = staff_client.get(URL).json()

    assert closed["status"] == "ok" and closed["lm_circuits"][0]["state"] == "closed"
    assert body["status"] == "degraded" and body["reasons"] == ["lm_circuit_open"]
    (shown,) = body["lm_circuits"]
    assert shown["lm"] == "openai/gpt-4o-mini" and shown["api_base"] == "https://llm.example/v1?key=***"
    assert shown["state"] == "open" and shown["consecutive_failures"] == 2 and shown["failure_rate"] == 1.0
    opened_at, open_until = (datetime.fromisoformat(shown[key]) for key in ("opened_at", "open_until"))
    assert 59 < (open_until - opened_at).total_seconds() <= 60.01


def test_no_lm_configured_shows_no_circuit(synced, staff_client):
    body = staff_client.get(URL).json()

    assert body["lm_circuits"] == [] and body["status"] == "ok"


def test_its_answers_are_what_the_schema_documents(synced, staff_client, anonymous_client, api_client, settings,
                                                     monkeypatch):
    from django.db import OperationalError
    from rest_framework.authentication import TokenAuthentication

    from tests.openapi import AnswerChecker

    check = AnswerChecker(anonymous_client)
    ok = staff_client.get(URL)
    settings.MLFLOW_TRACKING_URI = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    down = staff_client.get(URL)
    forbidden, anonymous = api_client.get(URL), anonymous_client.get(URL)

    def database_gone(self, request):
        raise OperationalError("connection refused")

    monkeypatch.setattr(TokenAuthentication, "authenticate", database_gone)  # the database, before authentication
    database_down = anonymous_client.get(URL, HTTP_AUTHORIZATION="Token whatever")

    assert (ok.status_code, down.status_code, database_down.status_code) == (200, 503, 503)
    assert database_down.json() == {"status": "down", "reasons": ["database_unreachable"],
                                    "database": {"reachable": False, "error": "OperationalError"}}
    for response in (ok, down, forbidden, anonymous, database_down):
        check(response, path=URL)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_is_seen_dead_and_a_stale_backlog_is_degraded(synced, staff_client, start_worker, settings):
    from intent.models import DetectionRecord

    WorkerHeartbeat.objects.all().delete()
    settings.WORKER_HEARTBEAT_S = 1.0
    # given a real worker beating every second
    worker = start_worker(name="beating", WORKER_HEARTBEAT_S="1")
    body = wait_for(lambda: (answer := staff_client.get(URL).json())["workers"]["alive"] and answer, timeout=30,
                    message="the worker's first heartbeat")
    assert body["status"] == "ok", body
    assert [w["hostname"].split("@")[0] for w in body["workers"]["alive"]] == ["beating-0"]
    assert body["workers"]["alive"][0]["queues"] == ["celery", "periodic"]

    # when it is SIGKILLed (no clean shutdown to say so), it is counted dead within three heartbeats
    worker.kill()
    worker.popen.wait(timeout=10)
    dead = wait_for(lambda: not (answer := staff_client.get(URL).json())["workers"]["alive"] and answer, timeout=10,
                    interval=0.5, message="health to see the worker gone")
    assert dead["status"] == "degraded" and dead["reasons"] == ["no_worker_alive"]
    assert dead["workers"]["last_seen_at"] is not None

    # and a detection waiting for MLflow longer than HEALTH_BACKLOG_MAX_AGE_S is a backlog to say
    settings.HEALTH_BACKLOG_MAX_AGE_S = 60
    DetectionRecord.objects.create(request_id=uuid.uuid4(), created_at=timezone.now() - timedelta(seconds=90),
                                   payload={})
    DetectionRecord.objects.create(request_id=uuid.uuid4(), created_at=timezone.now(), payload={})
    late = staff_client.get(URL).json()
    assert late["reasons"] == ["no_worker_alive", "tracking_backlog"]
    assert late["tracking_backlog"]["pending"] == 2 and 90 <= late["tracking_backlog"]["oldest_pending_age_s"] < 120


def test_a_monitor_in_alert_makes_it_degraded_and_is_named(synced, staff_client):
    from analytics.models import Monitor

    Monitor.objects.create(name="errors", alert_threshold=0.1, state="alert")
    Monitor.objects.create(name="latency", alert_threshold=100, state="warning")
    body = staff_client.get(URL).json()
    assert body["status"] == "degraded" and body["reasons"] == ["monitor_alert"]
    assert body["monitors"] == {"states": {"alert": 1, "warning": 1}, "alerting": ["errors"]}
    Monitor.objects.filter(name="errors").update(state="ok")
    assert staff_client.get(URL).json()["status"] == "ok"  # a warning alone is not degraded
