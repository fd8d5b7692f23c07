"""A web worker builds its detector before it takes requests (gunicorn.conf.py's `post_worker_init`): the first
detection does not pay for loading DSPy and fitting the model. Before, a fresh worker's first detection took 11 s,
past schemathesis' 10 s limit for any answer."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
from rest_framework.authtoken.models import Token

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_a_fresh_web_worker_has_its_detector_before_the_first_detection(start_web, small_catalog, mlflow_store,
                                                                         django_user_model, tmp_path):
    # given: a fresh web tier (one worker) on the test's catalog, up and answering
    token = Token.objects.create(user=django_user_model.objects.create_user("warm", password="pw-warm-12345")).key
    url = start_web(workers=1, threads=2)
    log_path = tmp_path / f"web-{url.rsplit(':', 1)[1]}.log"  # start_web's log of this worker
    log = log_path.read_text()

    # then: it built the detector for this catalog while booting, and ran the local model once (its encoder
    # loaded), before any detection reached it
    assert "Detector ready" in log and "30 intents" in log, log[-3000:]
    assert "Detector warmed up" in log, log[-3000:]

    # and the first detection answers without building anything
    request = urllib.request.Request(
        f"{url}/api/intent/detect", data=json.dumps({"message": "move 200 dollars to my savings account"}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Token {token}"}, method="POST")
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=60) as answer:
        body = json.loads(answer.read())
    elapsed = time.monotonic() - started
    assert body["intent"] == "transfer"
    after = log_path.read_text()
    assert after.count("Detector ready") == log.count("Detector ready")  # not built again for the request
    assert elapsed < 2.0, f"the first detection took {elapsed:.1f} s"
