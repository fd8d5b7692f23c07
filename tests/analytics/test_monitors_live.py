"""Monitors end to end with real parts: detections answered by the LM (the fake OpenAI-compatible server), logged by
a real Celery worker, mirrored by the syncs it triggers, evaluated by beat, notified to a real HTTP receiver."""

from __future__ import annotations

import time

import pytest

from analytics.models import Alert, MirroredRun, Monitor
from analytics.monitors.delivery import SIGNATURE_HEADER, signature_verify
from tests.conftest import wait_for
from tests.intent.test_tracking import detect
from tests.llm_server import FakeLLMServer

ANSWER = {"intent": "balance", "confidence": 0.9, "requires_workflow": False, "workflow_template": "",
          "agent_template": "", "reasoning": "asks for the balance"}


def detections(api_client, count: int) -> list[dict]:
    return [detect(api_client, message=f"what is my balance {i}", user_role="customer", current_module="banking")
            for i in range(count)]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_lm_failing_raises_one_alert_and_its_recovery_one_notification(api_client, small_catalog, mlflow_store,
                                                                          settings, start_worker, receiver):
    settings.INTENT_LM = "openai/fake-intent-model"
    settings.INTENT_LM_API_KEY = "sk-test-not-a-real-key"
    settings.INTENT_LM_TIMEOUT_S = 5
    settings.INTENT_LM_BREAKER_FAILURES = 10_000  # every failing call falls back (no breaker in the way)
    settings.INTENT_LM_BREAKER_FAILURE_RATE = 1.1
    receiver.statuses["/down"] = 503
    watched = Monitor.objects.create(
        name="LM fallbacks", metric="fallback_rate", alert_threshold=0.3, window_minutes=15, min_runs=5,
        filters={"module": "banking"}, channels=[receiver.url("signed", "/hook"), receiver.url("signed", "/down")])
    # beat syncs once at start, then in 5 minutes: every run below reaches the mirror through the syncs the worker
    # asks for after logging it (the freshness path)
    start_worker(name="monitors", beat=True, concurrency=2, ANALYTICS_SYNC_INTERVAL_S="300",
                 MONITORS_EVALUATE_INTERVAL_S="3", ANALYTICS_SYNC_TRIGGER_S="1", MONITORS_DELIVERY_RETRIES="2",
                 MONITORS_DELIVERY_BACKOFF_S="0.5")

    with FakeLLMServer(lambda body: ANSWER) as server:
        settings.INTENT_LM_API_BASE = server.api_base
        assert not any(body["fallback_used"] for body in detections(api_client, 10))
        wait_for(lambda: MirroredRun.objects.count() == 10, timeout=30, message="the sync the worker asks for")
        wait_for(lambda: Monitor.objects.get(pk=watched.pk).last_value == 0.0, timeout=30, message="an evaluation")

        server.behaviour = 503
        assert all(body["fallback_used"] for body in detections(api_client, 20))
        failing_sent = time.monotonic()
        wait_for(lambda: receiver.received("/hook"), timeout=60, message="the alert's notification")
        notified_after = time.monotonic() - failing_sent

        server.behaviour = lambda body: ANSWER
        detections(api_client, 150)  # 20 fallbacks in 180 runs: 11 %, below the threshold
        wait_for(lambda: len(receiver.received("/hook")) >= 2, timeout=60, message="the recovery's notification")
        time.sleep(8)  # two more evaluations and syncs: nothing more to say

    hooks = receiver.received("/hook")
    assert [r.json()["to"] for r in hooks] == ["alert", "ok"]
    for request in hooks:
        assert signature_verify(secret=watched.webhook_secret, body=request.body,
                                header=request.headers[SIGNATURE_HEADER])
    recorded = list(Alert.objects.filter(monitor=watched).order_by("created_at"))
    # Every change is recorded; a new monitor's first state (no_data when it was evaluated before any traffic was
    # mirrored) and data coming back are not news: only the alert and its recovery are notified.
    changes = [a for a in recorded if a.delivery != "none"]
    assert [(a.from_state, a.to_state) for a in changes] == [("ok", "alert"), ("alert", "ok")]
    assert all("no_data" in (a.from_state, a.to_state) for a in recorded if a.delivery == "none")
    alert_body = hooks[0].json()
    # What the window held when it fired (runs still arriving): 10 answered by the LM, then fallbacks only.
    runs = alert_body["details"]["runs"]
    assert alert_body["value"] == changes[0].value == pytest.approx((runs - 10) / runs) and runs > 10
    assert alert_body["value"] > alert_body["threshold"] == 0.3
    assert alert_body["monitor"]["filters"] == {"module": "banking"}
    assert notified_after < 30, notified_after
    assert [(a.from_state, a.to_state) for a in changes] == [("ok", "alert"), ("alert", "ok")]
    # The failing channel: tried 1 + MONITORS_DELIVERY_RETRIES times per notification, then recorded as failed.
    wait_for(lambda: all(Alert.objects.get(pk=a.pk).delivery == "partial" for a in changes), timeout=30,
             message="both notifications' last attempts")
    assert len(receiver.received("/down")) == 6
    watched.refresh_from_db()
    assert watched.channel_failures == {"0": 0, "1": 2} and watched.disabled_channels == []
    assert watched.state == "ok"
