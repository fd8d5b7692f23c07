"""Concurrent writers on one database: feedback posted by 8 clients at once to the real web tier (gunicorn, 2
processes × 4 threads) while a real worker writes the same tables. On SQLite a deferred transaction that reads
then writes failed at once with "database is locked" (the busy timeout does not cover a read lock's upgrade):
156 of 300 sequential posts answered 500. Transactions are IMMEDIATE now: none may fail."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from rest_framework.authtoken.models import Token

from intent.detectors import detector_get
from intent.models import DetectionFeedback, DetectionRecord
from tests.conftest import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

FEEDBACKS = 500
CLIENTS = 8
INTENTS = ("balance", "transfer", "pay_bill", "freeze_account", "international_visa")


def post(url: str, token: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
        "Authorization": f"Token {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {"body": error.read().decode(errors="replace")[:300]}


def test_feedback_from_8_concurrent_clients_with_a_worker_writing_never_fails(
        small_catalog, user, mlflow_store, start_worker, start_web):
    detector_get()  # fit the catalog's model once, into the cache the web and the worker load it from
    token = Token.objects.create(user=user).key
    web = start_web(THROTTLE_FEEDBACK_RATE="100000/min", THROTTLE_DETECT_RATE="100000/min")
    start_worker(concurrency=2)
    request_ids = [post(f"{web}/api/intent/detect", token, {"message": f"what is the balance of account {n}"})[1][
        "request_id"] for n in range(50)]

    def send(index: int) -> int:
        status, _ = post(f"{web}/api/intent/feedback", token, {
            "request_id": request_ids[index % len(request_ids)], "correct_intent": INTENTS[index % len(INTENTS)],
            "comment": f"label {index}"})
        return status

    with ThreadPoolExecutor(CLIENTS) as pool:
        statuses = list(pool.map(send, range(FEEDBACKS)))

    assert [status for status in statuses if status >= 500] == []
    assert statuses.count(202) == FEEDBACKS
    # and the worker wrote every detection's run and its latest label
    wait_for(lambda: DetectionRecord.objects.filter(state="logged").count() == len(request_ids), timeout=120,
             message="every detection logged")
    wait_for(lambda: DetectionFeedback.objects.filter(state="logged").count() == len(request_ids), timeout=120,
             message="every latest feedback logged")
