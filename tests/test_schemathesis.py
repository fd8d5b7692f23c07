"""Schemathesis over the OpenAPI schema, against the real web tier (gunicorn) with all its checks: every answer's
status, content type, headers and body are what the schema documents, schema-valid requests are accepted and
schema-violating ones refused, and nothing is a 5xx. Any finding fails the test, printed as schemathesis reports it
(with a curl command that reproduces it)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest
from django.conf import settings
from django.utils import timezone
from rest_framework.authtoken.models import Token

from intent.models import DetectionRecord
from intentsite import contract
from tests.analytics.test_reports_api import GPT, at, mirror, mirrored

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

# Examples per operation and phase: enough to cross every documented status of every operation, in about a minute.
MAX_EXAMPLES = 25
SEED = 13  # the same examples on every run: a finding is reproducible, a change of behaviour shows as one
UNLIMITED = "1000000/min"
FEEDBACK_EXAMPLE_REQUEST_ID = "6f1c3e0a-8d3b-4c1e-9a57-2d1f0b7a9c11"


def test_the_api_does_what_its_schema_says(start_web, mlflow_store, small_catalog, django_user_model, tmp_path):
    # given: a superuser (recreate is theirs) with a token, a mirror with runs of every kind for the reports, and
    # the web tier on this test's database and throwaway MLflow store (a recreate with reset: true resets only
    # that), with a broker of its own (nothing it queues outlives the test) and throttles out of the way
    root = django_user_model.objects.create_superuser("fuzz", "fuzz@example.com", "pw-fuzz-12345")
    token = Token.objects.create(user=root).key
    # the detection the schema's feedback example labels, so that feedback is exercised past its 404 too
    DetectionRecord.objects.create(request_id=FEEDBACK_EXAMPLE_REQUEST_ID, created_at=timezone.now(), user=root,
                                   payload={"tags": {contract.DETECTED_INTENT: "balance"}})
    mirror([mirrored("f1", start=at(0, 8)), mirrored("f2", start=at(1, 9), model=GPT, tokens=(100, 10, 0.001)),
            mirrored("f3", start=at(2, 10), error_category="lm_timeout", error_type="TimeoutError", is_error=True),
            mirrored("f4", start=at(3, 11), expected="transfer", correct=False)])
    assert settings.MLFLOW_TRACKING_URI == mlflow_store
    web = start_web(workers=1, threads=4, CELERY_BROKER_URL=f"sqla+sqlite:///{tmp_path / 'web-broker.sqlite'}",
                    THROTTLE_DETECT_RATE=UNLIMITED, THROTTLE_FEEDBACK_RATE=UNLIMITED,
                    THROTTLE_ANALYTICS_RATE=UNLIMITED)

    # `--checks all` holds every answer to 10 s; recreate is slow by design (it renames, deletes and creates MLflow
    # experiments, and a web worker's first MLflow call opens the store): it gets a minute
    (tmp_path / "schemathesis.toml").write_text(
        '[[operations]]\ninclude-name = "POST /api/analytics/mlflow/experiments/recreate"\n'
        'checks.max_response_time = 60.0\n')

    # when
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{web}/api/schema/?format=json", "--checks", "all",
         "--header", f"Authorization: Token {token}", "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED),
         "--generation-database", "none", "--workers", "2", "--request-timeout", "30", "--no-color"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)

    # then
    print(run.stdout[-30_000:], run.stderr[-5_000:])
    assert run.returncode == 0, "schemathesis found answers the schema does not document (printed above)"
    with urllib.request.urlopen(f"{web}/api/schema/?format=json") as response:
        operations = sum(len(methods) for methods in json.load(response)["paths"].values())
    # detect, feedback, the review queue, the eight reports (calibration too), gaps and gaps/mine, health, recreate;
    # monitors: list, create, read, update (2), delete, preview; alerts; experiments: list, create, read, update (2),
    # delete, start, stop, promote, results; boards: list, create, read, update (2), delete, data, export
    assert operations == 41
    assert f"Tested: {operations}" in run.stdout
