"""GET /metrics: Prometheus' text format, off until a token is set, every number recomputed from the raw runs."""

from __future__ import annotations

import math
import random
import uuid
from collections import Counter
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from analytics.mirror.sketch import GAMMA
from analytics.mirror.sync import runs_sync
from analytics.ops.metrics import LATENCY_BOUNDS_MS
from analytics.ops.workers import worker_heartbeat_record
from intent.models import DeadLetter, DetectionRecord
from tests.analytics.conftest import DAY0_MS, DAY_MS

pytestmark = pytest.mark.django_db
TOKEN = "scrape-" + "x" * 24


def scrape(client: Client, token: str | None = TOKEN):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return client.get("/metrics", **headers)


def samples(response) -> dict[tuple[str, tuple], float]:
    families = text_string_to_metric_families(response.content.decode())
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in families for sample in family.samples}


def test_metrics_are_off_until_a_token_is_set_and_need_it(settings):
    client = Client()
    settings.METRICS_TOKEN = ""
    off = scrape(client)
    assert off.status_code == 404 and "METRICS_TOKEN" in off.json()["detail"]
    settings.METRICS_TOKEN = TOKEN
    for token in (None, "wrong-token"):
        refused = scrape(client, token)
        assert refused.status_code == 401 and refused["WWW-Authenticate"].startswith("Bearer")
    assert client.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405
    assert scrape(client).status_code == 200


def test_every_number_is_recomputed_from_the_raw_runs(run_logger, settings):
    settings.METRICS_TOKEN = TOKEN
    rng = random.Random(11)
    for _ in range(120):
        run_logger.log_random(rng, start_ms=DAY0_MS + rng.randrange(3 * DAY_MS))
    runs_sync()
    now = timezone.now()
    DetectionRecord.objects.create(request_id=uuid.uuid4(), created_at=now - timedelta(seconds=90), payload={})
    DetectionRecord.objects.create(request_id=uuid.uuid4(), created_at=now, payload={})
    DetectionRecord.objects.create(request_id=uuid.uuid4(), created_at=now, payload={}, state=DeadLetter.State.DEAD)
    worker_heartbeat_record(hostname="celery@metrics", pid=7, queues=["celery"], started_at=now)

    response = scrape(Client())

    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    got = samples(response)
    runs = run_logger.runs()
    tags = [run.data.tags for run in runs]
    errors = sum(tag["status"] == "error" for tag in tags)
    assert got[("intentsite_detections_total", (("status", "error"),))] == errors
    assert got[("intentsite_detections_total", (("status", "success"),))] == len(runs) - errors
    assert got[("intentsite_detection_fallbacks_total", ())] == sum(tag["fallback_used"] == "true" for tag in tags)
    assert got[("intentsite_detection_out_of_scope_total", ())] == sum(
        tag["detected_intent"] == "out_of_scope" for tag in tags)
    by_intent = Counter(tag["detected_intent"] for tag in tags)
    assert {labels[0][1]: value for (name, labels), value in got.items()
            if name == "intentsite_detections_by_intent_total"} == by_intent
    by_model = Counter(run.data.params["model_name"] for run in runs)
    assert {labels[0][1]: value for (name, labels), value in got.items()
            if name == "intentsite_detections_by_model_total"} == by_model

    # the latency histogram: every latency counted under +Inf; a bound counts what lies in whole sketch buckets
    # at or below it: all the latencies <= bound / γ, none above the bound (within 2 % of the bound)
    latencies = [run.data.metrics["response_time_ms"] for run in runs]
    assert got[("intentsite_detection_latency_ms_count", ())] == len(latencies)
    assert got[("intentsite_detection_latency_ms_sum", ())] == pytest.approx(math.fsum(latencies), rel=1e-9)
    assert got[("intentsite_detection_latency_ms_bucket", (("le", "+Inf"),))] == len(latencies)
    for bound in LATENCY_BOUNDS_MS:
        counted = got[("intentsite_detection_latency_ms_bucket", (("le", str(float(bound))),))]
        assert sum(v <= bound / GAMMA for v in latencies) <= counted <= sum(v <= bound for v in latencies), bound
        exact = sum(GAMMA ** math.ceil(math.log(v) / math.log(GAMMA)) <= bound * (1 + 1e-12) for v in latencies)
        assert counted == exact, bound

    assert got[("intentsite_tracking_backlog", ())] == 2
    assert 90 <= got[("intentsite_tracking_backlog_oldest_age_seconds", ())] < 120
    assert got[("intentsite_tracking_dead_letters", ())] == 1
    assert got[("intentsite_workers_alive", ())] == 1
    assert got[("intentsite_mirrored_runs", (("experiment", "intent_detection"),))] == len(runs)
    assert got[("intentsite_mirror_last_success_timestamp_seconds", (("experiment", "intent_detection"),))] > 0


def test_each_monitor_state_is_exported_one_hot_with_its_value(settings, db):
    from analytics.models import Monitor

    settings.METRICS_TOKEN = TOKEN
    Monitor.objects.create(name="LM fallbacks", metric="fallback_rate", alert_threshold=0.2, state="alert",
                           last_value=0.35)
    scraped = samples(scrape(Client()))
    labels = (("kind", "threshold"), ("metric", "fallback_rate"), ("monitor", "LM fallbacks"))
    states = {dict(key)["state"]: value for (name, key), value in scraped.items() if name == "intentsite_monitor_state"}
    assert states == {"ok": 0, "warning": 0, "alert": 1, "no_data": 0, "paused": 0}
    assert scraped[("intentsite_monitor_value", labels)] == 0.35
