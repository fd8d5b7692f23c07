"""The app's database gone: a detection is answered with a JSON 503 and Retry-After by the real web tier (it could
not be recorded, and says so), and a tracking task whose claim meets a dropped connection retries at once with
backoff instead of waiting for the flush."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from django.db import OperationalError, connection

from intent.models import DetectionRecord
from intent.tasks import detections_track
from tests.conftest import free_port
from tests.intent.test_tracking import detect, detection_runs

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_detection_while_the_database_refuses_connections_is_a_json_503_with_retry_after(start_web):
    # a database URL of the running engine's kind, on a port where nothing listens: every connection is refused
    engine = connection.settings_dict["ENGINE"]
    refused = (f"postgres://postgres@127.0.0.1:{free_port()}/gone" if "postgresql" in engine
               else "sqlite:////nonexistent-directory/gone.sqlite3")
    url = start_web(workers=1, threads=2, DATABASE_URL=refused)
    request = urllib.request.Request(f"{url}/api/intent/detect", data=json.dumps({"message": "what is my balance"})
                                     .encode(), headers={"Content-Type": "application/json",
                                                         "Authorization": "Token 0123456789abcdef"}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=30)
    assert answer.value.code == 503
    assert answer.value.headers["Content-Type"] == "application/json"
    assert int(answer.value.headers["Retry-After"]) >= 1
    assert "database cannot be reached" in json.loads(answer.value.read())["detail"]


def test_a_claim_on_a_dropped_connection_is_retried_by_the_task(api_client, small_catalog, mlflow_store,
                                                                django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):  # the task is run below, by hand
        request_id = detect(api_client, message="what is my balance")["request_id"]
    dropped: list[str] = []

    def drop_the_first_claim(execute, sql, params, many, context):
        if not dropped and sql.lstrip().upper().startswith("UPDATE") and "detectionrecord" in sql.lower():
            dropped.append(sql)
            raise OperationalError("server closed the connection unexpectedly")
        return execute(sql, params, many, context)

    # when the task's claim meets a dropped connection (Django's own hook around every query)
    with connection.execute_wrapper(drop_the_first_claim):
        result = detections_track.apply(args=[[request_id]])
    # then the task retried (eagerly here; with backoff in a worker) and logged the run once
    assert dropped and result.successful(), result.traceback
    assert result.get()["logged"] == 1
    assert DetectionRecord.objects.get(request_id=request_id).state == DetectionRecord.State.LOGGED
    assert [run.data.tags["request_id"] for run in detection_runs(mlflow_store)] == [request_id]
