"""Leases of the client path. A batch that outlasts its lease: the rows whose lease ran out mid-batch are claimed by another worker (the flush
re-sent them), and each is still written once. Two writers in this process, each in its own thread with its own
database connection, on a real MLflow store, through the client path (one run at a time, as a tracking server is
written)."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from django.db import connection

from intent.models import DetectionRecord
from intent.outbox import OutboxOutcome
from intent.services import detection_records_log
from tests.intent.test_tracking import detect, detection_runs

pytestmark = pytest.mark.django_db(transaction=True)

RECORDS = 80
LEASE_S = 1.0


def test_a_lease_that_expires_mid_batch_still_gives_one_run_per_request(api_client, small_catalog, mlflow_store,
                                                                        settings, monkeypatch):
    from intent import tracking

    settings.TRACKING_BULK_WRITES = False  # the client path: a run at a time, the slow path a lease can run out on
    settings.TRACKING_LEASE_S = LEASE_S
    run_log = tracking.run_log

    def slow_run_log(**kwargs):  # a run takes >= 30 ms (a tracking server's pace), so the batch outlasts its lease
        time.sleep(0.03)       # on a fast machine too
        return run_log(**kwargs)

    monkeypatch.setattr(tracking, "run_log", slow_run_log)
    ids = [detect(api_client, message=f"what is my balance number {i}")["request_id"] for i in range(RECORDS)]
    outcomes: dict[str, list[OutboxOutcome]] = {"first": [], "second": []}
    errors: list[BaseException] = []

    def writer(name: str, *, start_after_s: float, repeat: bool) -> None:
        try:
            time.sleep(start_after_s)
            deadline = time.monotonic() + 120
            while True:
                outcomes[name].append(detection_records_log(request_ids=ids))
                if not repeat or time.monotonic() > deadline or not DetectionRecord.objects.filter(
                        request_id__in=ids, state=DetectionRecord.State.PENDING).exists():
                    return
                time.sleep(0.2)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)
        finally:
            connection.close()

    # given one worker writing the whole batch, and another that keeps claiming the batch once its lease ran out
    first = threading.Thread(target=writer, args=("first",), kwargs={"start_after_s": 0, "repeat": False})
    second = threading.Thread(target=writer, args=("second",), kwargs={"start_after_s": LEASE_S + 0.2, "repeat": True})
    started = time.monotonic()
    first.start()
    second.start()
    first.join(timeout=180)
    second.join(timeout=180)
    assert not errors, errors
    batch_s = time.monotonic() - started

    # then the lease did run out mid-batch: the second worker wrote some of the rows, the first skipped them
    by_second = sum(len(outcome.logged) for outcome in outcomes["second"])
    by_first = len(outcomes["first"][0].logged)
    assert batch_s > LEASE_S and by_second > 0, f"the batch took {batch_s:.1f} s; the second worker wrote nothing"
    assert by_first + by_second == RECORDS
    # and every detection has exactly one run, each record logged with it
    runs = Counter(run.data.tags["request_id"] for run in detection_runs(mlflow_store))
    assert {request_id for request_id, count in runs.items() if count > 1} == set()
    assert sorted(runs) == sorted(ids)
    assert DetectionRecord.objects.filter(request_id__in=ids, state=DetectionRecord.State.LOGGED).count() == RECORDS


def test_a_task_through_a_server_fills_its_runs_in_flight_with_records_still_waiting_for_their_message(
    api_client, small_catalog, mlflow_server, settings
):
    from intent import tracking

    settings.MLFLOW_TRACKING_URI = mlflow_server.uri
    settings.TRACKING_CLIENT_CONCURRENCY = 4
    tracking.experiment_cache_clear()
    tracking.store_init()
    ids = [detect(api_client, message=f"what is my balance number {i}")["request_id"] for i in range(7)]
    waiting_for_retry = ids[1]  # an attempt failed on it: it keeps its backoff, no other task takes it early
    DetectionRecord.objects.filter(request_id=waiting_for_retry).update(attempts=1)

    # a message carrying one id (steady traffic) writes it and the three oldest records nobody has attempted yet
    outcome = detection_records_log(request_ids=[ids[4]])

    assert sorted(outcome.logged) == sorted([ids[4], ids[0], ids[2], ids[3]])
    # their own messages, arriving next, find them written and skip them
    late = detection_records_log(request_ids=[ids[0], ids[2]])
    assert sorted(late.skipped) == sorted([ids[0], ids[2]])
    runs = Counter(run.data.tags["request_id"] for run in detection_runs(mlflow_server.uri))
    assert runs == Counter({ids[4]: 1, ids[0]: 1, ids[2]: 1, ids[3]: 1})
    pending = set(DetectionRecord.objects.filter(state="pending").values_list("request_id", flat=True))
    assert {str(request_id) for request_id in pending} == {ids[1], ids[5], ids[6]}
