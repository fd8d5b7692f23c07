"""The detection experiment looks the same in MLflow's UI whichever way the worker wrote it: through an `mlflow
server` (the client path, REST calls) or straight into that server's store (the bulk path of the direct-store
profile). Read back through the server, with the calls its UI makes: the experiment, the runs table
(`search_runs`), a run's page (`get_run`) and its metric charts (`get_metric_history`)."""

from __future__ import annotations

import shutil
import socket
import sys
import time
import uuid

import pytest
from django.core.management import call_command
from django.utils import timezone
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from intent import tracking
from intent.models import DetectionRecord
from intent.program import Detection, DetectionInput
from intent.services import detection_records_log
from tests.conftest import Process, child_env, free_port, wait_for

pytestmark = [pytest.mark.django_db, pytest.mark.slow]
PG = "postgres@127.0.0.1:5432"


def postgres_up() -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", 5432)) == 0


@pytest.fixture(params=["sqlite", "postgresql"])
def server_store(request, tmp_path, mlflow_template):
    """(the store's URI, a real `mlflow server` on it): a copy of the migrated SQLite template, or a fresh
    PostgreSQL database (which the server migrates)."""
    database = None
    if request.param == "sqlite":
        shutil.copyfile(mlflow_template, tmp_path / "store.db")
        store = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        if not postgres_up():
            from tests.conftest import IN_CI

            if IN_CI:
                pytest.fail("PostgreSQL is not listening on 127.0.0.1:5432 (CI starts it: .ci/run)")
            pytest.skip("PostgreSQL is not listening on 127.0.0.1:5432 (start it as .ci/run does)")
        import psycopg

        database = f"t_profiles_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"postgresql://{PG}/postgres", autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {database}")
        store = f"postgresql+psycopg://{PG}/{database}"
    port = free_port()
    server = Process([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                      "--backend-store-uri", store, "--artifacts-destination", str(tmp_path / "artifacts"),
                      "--workers", "1"],
                     env=child_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"), log_path=tmp_path / "server.log")

    def healthy() -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_for(healthy, timeout=120, interval=0.5, message="mlflow server to answer /health")
        yield store, f"http://127.0.0.1:{port}"
    finally:
        server.stop(graceful=False)
        if database:
            import psycopg

            with psycopg.connect(f"postgresql://{PG}/postgres", autocommit=True) as connection:
                connection.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def record_create(started_at_ms: int) -> str:
    """A detection record whose payload differs from any other made here by its request id only."""
    request_id = str(uuid.uuid4())
    detection = Detection(intent="transfer", confidence=0.83, requires_workflow=True, workflow_template=None,
                          agent_template=None, reasoning="", model_name="local/tfidf-linear",
                          prompt_version="profiles0001", category_source="database", fallback_used=False,
                          response_time_ms=4.25, answered_by="local/tfidf-linear")
    payload = tracking.run_payload_build(request_id=request_id, detection=detection, started_at_ms=started_at_ms,
                                         request=DetectionInput(message="move 100 dollars to savings",
                                                                user_role="customer", current_module="banking",
                                                                current_tab="transfers"))
    DetectionRecord.objects.create(request_id=request_id, created_at=timezone.now(), payload=payload)
    return request_id


def as_the_ui_shows_it(client: MlflowClient, run, request_id: str) -> dict:
    """What the UI shows of a run, with the two things that differ by construction (the run's id and the
    request's id) replaced by placeholders."""
    page = client.get_run(run.info.run_id)

    def neutral(value):
        if not isinstance(value, str):
            return value
        value = value.replace(run.info.run_id, "<run>").replace(request_id, "<request>")
        return value.replace(f"detect-{uuid.UUID(request_id).hex[:8]}", "detect-<request>")

    histories = {key: [(m.value, m.step, m.timestamp - run.info.start_time)
                       for m in client.get_metric_history(run.info.run_id, key)] for key in page.data.metrics}
    return {
        "table": {"info": {key: neutral(value) for key, value in dict(run.info).items()
                           if key not in ("run_id", "run_uuid")},
                  "tags": {key: neutral(value) for key, value in run.data.tags.items()},
                  "params": dict(run.data.params), "metrics": dict(run.data.metrics)},
        "page": {"tags": {key: neutral(value) for key, value in page.data.tags.items()},
                 "params": dict(page.data.params), "metrics": dict(page.data.metrics),
                 "inputs": [d.to_dictionary() for d in page.inputs.dataset_inputs] if page.inputs else []},
        "charts": histories,
    }


def test_the_experiment_looks_the_same_through_the_server_and_written_to_its_store(server_store, settings):
    store, server = server_store
    settings.MLFLOW_TRACKING_URI = server
    tracking.experiment_cache_clear()
    call_command("mlflow_init")
    started_at_ms = int(time.time() * 1000) - 60_000
    through_server = record_create(started_at_ms)

    # given one detection logged through the server (the client path: REST calls)
    assert tracking.bulk_store() is None, "an http:// store takes no bulk writes"
    assert detection_records_log(request_ids=[through_server]).logged == [through_server]
    # and its twin written by a worker of the direct-store profile into the server's store (the bulk path)
    to_store = record_create(started_at_ms)  # made now: the client path would have taken it too (it fills its flight)
    settings.MLFLOW_TRACKING_URI = store
    tracking.experiment_cache_clear()
    assert tracking.bulk_store() is not None, "the store takes bulk writes"
    assert detection_records_log(request_ids=[to_store]).logged == [to_store]

    # then the UI, reading through the server, shows them alike
    client = MlflowClient(server)
    experiment = client.get_experiment_by_name(settings.MLFLOW_EXPERIMENT_NAME)
    assert experiment.lifecycle_stage == "active"
    runs = {run.data.tags["request_id"]: run
            for run in client.search_runs([experiment.experiment_id], run_view_type=ViewType.ACTIVE_ONLY,
                                          order_by=["attributes.start_time DESC"])}
    assert set(runs) == {through_server, to_store}
    assert runs[to_store].info.run_id == uuid.UUID(to_store).hex  # it did take the bulk path
    shown = {request_id: as_the_ui_shows_it(client, run, request_id) for request_id, run in runs.items()}
    assert shown[through_server] == shown[to_store]
    # and what they show is the detection: finished, with its context, metrics and parameters
    table = shown[to_store]["table"]
    assert table["info"]["status"] == "FINISHED" and table["info"]["lifecycle_stage"] == "active"
    assert table["tags"]["detected_intent"] == "transfer" and table["tags"]["current_module"] == "banking"
    assert table["metrics"]["confidence_score"] == 0.83 and table["params"]["requires_workflow"] == "true"
    assert table["info"]["run_name"] == table["tags"]["mlflow.runName"] == "detect-<request>"
    ended_after_ms = table["info"]["end_time"] - table["info"]["start_time"]
    assert shown[to_store]["charts"]["response_time_ms"] == [(4.25, 0, ended_after_ms)]  # one point, at the end
