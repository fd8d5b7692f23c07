"""Notifications reach a real HTTP receiver on 127.0.0.1: signed, once per alert, retried, and a channel that keeps
failing is disabled."""

from __future__ import annotations

import hashlib
import hmac
import logging
from datetime import timedelta

import pytest
from django.utils import timezone

from analytics.models import Alert, Monitor
from analytics.monitors.delivery import SIGNATURE_HEADER, alert_deliver, signature_verify
from analytics.monitors.services import monitors_evaluate

from .monitoring import mirror_ready, mirror_write, monitor, run_row

pytestmark = pytest.mark.django_db


def alert_of(watched: Monitor, *, to_state: str = "alert") -> Alert:
    now = timezone.now()
    return Alert.objects.create(monitor=watched, from_state="ok", to_state=to_state, value=0.5, threshold=0.3,
                                window_start=now - timedelta(minutes=15), window_end=now, created_at=now)


def test_a_state_change_reaches_a_signed_webhook_once_with_what_where_and_links(receiver, settings):
    settings.SITE_URL = "https://intents.example.com"
    now = timezone.now()
    mirror_ready()
    watched = monitor(name="banking errors", metric="error_rate", alert_threshold=0.3, window_minutes=15,
                      filters={"module": "banking"}, channels=[receiver.url("signed", "/hook")])
    mirror_write([run_row(now - timedelta(minutes=3), error=True) for _ in range(10)])
    monitors_evaluate(now=now)
    alert = Alert.objects.get(monitor=watched)

    assert alert_deliver(alert_id=alert.pk, final=False).status == "delivered"
    assert alert_deliver(alert_id=alert.pk, final=False).status == "delivered"  # again: nothing sent twice
    [request] = receiver.received("/hook")
    header = request.headers[SIGNATURE_HEADER]
    timestamp = header.split(",")[0].removeprefix("t=")
    expected = hmac.new(watched.webhook_secret.encode(), f"{timestamp}.".encode() + request.body, hashlib.sha256)
    assert header.endswith(f",v1={expected.hexdigest()}")
    assert signature_verify(secret=watched.webhook_secret, body=request.body, header=header)
    assert not signature_verify(secret="another secret", body=request.body, header=header)
    assert not signature_verify(secret=watched.webhook_secret, body=request.body + b" ", header=header)
    body = request.json()
    assert (body["monitor"]["name"], body["from"], body["to"], body["value"], body["threshold"]) == (
        "banking errors", "ok", "alert", 1.0, 0.3)
    assert body["monitor"]["filters"] == {"module": "banking"} and body["window"]["minutes"] == 15
    assert "module=banking" in body["text"] and "error_rate" in body["text"]
    assert body["dashboard_url"].startswith("https://intents.example.com/admin/analytics/detectionanalytics/?module=banking")
    alert.refresh_from_db()
    assert alert.delivery == "delivered" and alert.deliveries[0]["ok"] and alert.deliveries[0]["attempts"] == 1
    assert "127.0.0.1" in alert.deliveries[0]["channel"]


def test_apprise_json_and_log_channels(receiver, caplog):
    watched = monitor(channels=[receiver.url("json", "/plain"), "log://"], alert_threshold=0.1)
    with caplog.at_level(logging.WARNING, logger="analytics.monitors.notifications"):
        assert alert_deliver(alert_id=alert_of(watched).pk, final=True).status == "delivered"
    [request] = receiver.received("/plain")
    sent = request.json()  # apprise's own JSON envelope, our alert as its message
    assert sent["title"].endswith("is alert") and '"to": "alert"' in sent["message"]
    assert any("is alert" in record.getMessage() for record in caplog.records)


def test_a_failing_channel_is_retried_and_disabled_after_five_failed_notifications(receiver, settings):
    settings.MONITORS_CHANNEL_MAX_FAILURES = 5
    receiver.status = 500
    watched = monitor(channels=[receiver.url("signed", "/down"), receiver.url("signed", "/up")], alert_threshold=0.1)
    receiver_up = receiver.url("signed", "/up")
    assert receiver_up
    for notification in range(5):
        alert = alert_of(watched)
        assert alert_deliver(alert_id=alert.pk, final=False).retry  # the task would try again
        outcome = alert_deliver(alert_id=alert.pk, final=True)
        alert.refresh_from_db()
        assert outcome.status == "failed" and alert.attempts == 2
        assert [entry["attempts"] for entry in alert.deliveries] == [2, 2]
        watched.refresh_from_db()
        assert watched.channel_failures == {"0": notification + 1, "1": notification + 1}
    assert watched.disabled_channels == [0, 1]
    sent = len(receiver.received())
    assert sent == 20  # 5 notifications × 2 attempts × 2 channels
    alert = alert_of(watched)
    assert alert_deliver(alert_id=alert.pk, final=True).status == "none"  # disabled: not tried
    assert len(receiver.received()) == sent


def test_a_channel_that_answers_again_resets_its_count(receiver):
    receiver.status = 500
    watched = monitor(channels=[receiver.url("signed", "/flaky")], alert_threshold=0.1)
    alert_deliver(alert_id=alert_of(watched).pk, final=True)
    receiver.status = 204
    assert alert_deliver(alert_id=alert_of(watched).pk, final=True).status == "delivered"
    watched.refresh_from_db()
    assert watched.channel_failures == {"0": 0} and watched.disabled_channels == []
