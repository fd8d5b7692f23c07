"""Notifications through apprise (Slack, Teams, PagerDuty, e-mail, JSON webhooks, ...: any apprise URL), and two
schemes of our own registered with it:

- `signed://host:port/path` (`signeds://` for https): POST of the alert as JSON, signed with the monitor's
  `webhook_secret`: header `X-Intentsite-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`
  (`signature_verify` is the receiver's check);
- `log://`: a line in the service's log (logger `analytics.monitors.notifications`), the demo's channel.

`alert_deliver` makes one attempt at every channel of an alert not yet reached; the task retries the rest with
backoff. When the last attempt is made, each channel's run of failed notifications is counted: at
MONITORS_CHANNEL_MAX_FAILURES in a row the channel is disabled (until the monitor's channels are saved again).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ..models import Alert, Monitor

logger = logging.getLogger(__name__)
notifications_logger = logging.getLogger("analytics.monitors.notifications")

SIGNATURE_HEADER = "X-Intentsite-Signature"
SIGNED_SCHEMES = ("signed", "signeds")
# Secrets of signed webhooks being sent, by a one-time key put in the URL apprise parses (not the secret itself).
_secrets: dict[str, str] = {}
_secrets_lock = threading.Lock()
_registered = False


def signature(*, secret: str, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def signature_verify(*, secret: str, body: bytes, header: str, tolerance_s: float = 300) -> bool:
    """What a receiver checks: the header's HMAC over its timestamp and the body, and a recent timestamp."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    expected = signature(secret=secret, body=body, timestamp=timestamp)
    return hmac.compare_digest(expected, header) and abs(time.time() - timestamp) <= tolerance_s


def _register() -> None:
    """Our schemes, registered with apprise once per process."""
    global _registered
    if _registered:
        return
    from apprise.decorators import notify

    def post(body: str, meta: dict[str, Any], *, secure: bool) -> bool:
        import requests

        key = (meta.get("qsd") or {}).get("key", "")
        with _secrets_lock:
            secret = _secrets.get(key, "")
        port = f":{meta['port']}" if meta.get("port") else ""
        url = f"{'https' if secure else 'http'}://{meta.get('host', '')}{port}{meta.get('fullpath') or '/'}"
        data = body.encode()
        headers = {"Content-Type": "application/json", "User-Agent": "intentsite-monitors"}
        if secret:
            headers[SIGNATURE_HEADER] = signature(secret=secret, body=data, timestamp=int(time.time()))
        try:
            response = requests.post(url, data=data, headers=headers, timeout=settings.MONITORS_DELIVERY_TIMEOUT_S,
                                     allow_redirects=False)
        except requests.RequestException as error:
            logger.warning("Webhook %s unreachable: %s", url, error)
            return False
        if response.status_code >= 300:
            logger.warning("Webhook %s answered %s", url, response.status_code)
            return False
        return True

    @notify(on="signed", name="Signed JSON webhook (http)")
    def _signed(body, title, notify_type, meta, *args, **kwargs):
        return post(body, meta, secure=False)

    @notify(on="signeds", name="Signed JSON webhook (https)")
    def _signeds(body, title, notify_type, meta, *args, **kwargs):
        return post(body, meta, secure=True)

    @notify(on="log", name="The service's log")
    def _log(body, title, notify_type, meta, *args, **kwargs):
        notifications_logger.warning("%s\n%s", title, body)
        return True

    _registered = True


def channel_shown(url: str) -> str:
    """A channel's URL with its secrets hidden (apprise's privacy form), for alerts and the admin."""
    import apprise

    _register()
    if url.split("://", 1)[0].lower() in (*SIGNED_SCHEMES, "log"):
        return url.split("?", 1)[0]  # ours: the secret is the monitor's, never in the URL
    with apprise.LogCapture(level=apprise.logging.ERROR):
        plugin = apprise.Apprise.instantiate(url)
    return plugin.url(privacy=True) if plugin else url.split(":", 1)[0] + "://…"


def channel_valid(url: str) -> bool:
    import apprise

    _register()
    with apprise.LogCapture(level=apprise.logging.ERROR):  # apprise would log the refused URL, tokens and all
        return apprise.Apprise.instantiate(url) is not None


def payload(alert: Alert) -> dict[str, Any]:
    """What a notification says: what, where, the value against the threshold, the window, links."""
    monitor = alert.monitor
    query = urlencode({"monitor": monitor.pk})
    subject = monitor.metric if monitor.kind != "drift" else "intent distribution"
    where = ", ".join(f"{name}={value}" for name, value in sorted((monitor.filters or {}).items())) or "all traffic"
    text = (f"[{alert.to_state.upper()}] {monitor.name}: {subject} ({monitor.kind}) over {monitor.window_minutes} min "
            f"of {where} is {_number(alert.value)}"
            + (f", threshold {_number(alert.threshold)}" if alert.threshold is not None else "")
            + f" (was {alert.from_state}).")
    if alert.details.get("expected_range"):
        low, high = alert.details["expected_range"]
        text += f" Expected {_number(low)} to {_number(high)} (score {alert.details.get('score')})."
    for drifting in alert.details.get("drifting", [])[:3]:
        moved = "; ".join(f"{m['intent']} {m['share_before']:.1%} → {m['share_now']:.1%}" for m in drifting["movers"][:3])
        text += f" Drift in {drifting['segment'] or 'all traffic'}: {moved}."
    return {
        "alert_id": alert.pk, "kind": alert.kind, "monitor": {
            "id": monitor.pk, "name": monitor.name, "kind": monitor.kind, "metric": monitor.metric,
            "intent": monitor.intent, "filters": monitor.filters, "window_minutes": monitor.window_minutes},
        "from": alert.from_state, "to": alert.to_state, "value": alert.value, "threshold": alert.threshold,
        "window": {"start": alert.window_start.isoformat(), "end": alert.window_end.isoformat(),
                   "minutes": monitor.window_minutes},
        "time": alert.created_at.isoformat(), "details": alert.details, "text": text,
        "dashboard_url": f"{settings.SITE_URL}/admin/analytics/detectionanalytics/?"
                         + urlencode({k: v for k, v in (monitor.filters or {}).items()}),
        "monitor_url": f"{settings.SITE_URL}/admin/analytics/monitor/{monitor.pk}/change/?{query}",
    }


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _notify(url: str, *, body: dict[str, Any], secret: str) -> tuple[bool, str]:
    """One attempt at one channel for a monitor's alert: (ok, what went wrong)."""
    return channel_notify(url, body=body, secret=secret, title=f"intentsite: {body['monitor']['name']} is {body['to']}",
                          level=body["to"])


def channel_notify(url: str, *, body: dict[str, Any], secret: str, title: str, level: str) -> tuple[bool, str]:
    """One attempt at one channel (apprise, or our `signed://` and `log://`): `body` goes as JSON to webhooks, its
    `text` elsewhere; `level` is `alert`, `warning`, `ok` or anything else (info). (ok, what went wrong)."""
    import apprise

    _register()
    scheme = url.split("://", 1)[0].lower()
    key = ""
    if scheme in SIGNED_SCHEMES:
        key = secrets.token_hex(8)
        with _secrets_lock:
            _secrets[key] = secret
        url = f"{url}{'&' if '?' in url else '?'}key={key}"
    text = json.dumps(body, sort_keys=True) if scheme in (*SIGNED_SCHEMES, "json", "jsons") else body["text"]
    kind = {"alert": apprise.NotifyType.FAILURE, "warning": apprise.NotifyType.WARNING,
            "ok": apprise.NotifyType.SUCCESS}.get(level, apprise.NotifyType.INFO)
    try:
        notifier = apprise.Apprise()
        if not notifier.add(url):
            return False, "apprise does not understand this URL"
        with apprise.LogCapture(level=apprise.logging.WARNING) as captured:
            ok = bool(notifier.notify(body=text, title=title, notify_type=kind))
        return ok, "" if ok else (captured.getvalue().strip().splitlines() or ["failed"])[-1][:500]
    finally:
        if key:
            with _secrets_lock:
                _secrets.pop(key, None)


@dataclass
class DeliveryOutcome:
    status: str
    retry: bool


def alert_deliver(*, alert_id: int, final: bool) -> DeliveryOutcome:
    """One attempt at each channel of the alert not yet reached. `final`: no retry follows (count failures)."""
    alert = Alert.objects.select_related("monitor").filter(pk=alert_id).first()
    if alert is None or alert.delivery != Alert.Delivery.PENDING:
        return DeliveryOutcome(status=alert.delivery if alert else "gone", retry=False)
    # One attempt at a time: a duplicate message of the same attempt finds the count moved on.
    if not Alert.objects.filter(pk=alert.pk, attempts=alert.attempts).update(attempts=alert.attempts + 1):
        return DeliveryOutcome(status=alert.delivery, retry=False)
    monitor = alert.monitor
    disabled = set(monitor.disabled_channels or [])
    channels = [(index, url) for index, url in enumerate(monitor.channels or []) if index not in disabled]
    done = {entry["index"]: entry for entry in alert.deliveries or []}
    body = payload(alert)
    for index, url in channels:
        entry = done.get(index) or {"index": index, "channel": channel_shown(url), "ok": False, "attempts": 0,
                                    "error": ""}
        if not entry["ok"]:
            ok, error = _notify(url, body=body, secret=monitor.webhook_secret)
            entry = entry | {"ok": ok, "error": error, "attempts": entry["attempts"] + 1}
        done[index] = entry
    entries = [done[index] for index in sorted(done)]
    reached = sum(entry["ok"] for entry in entries)
    if not channels:
        status = Alert.Delivery.NONE
    elif reached == len(entries):
        status = Alert.Delivery.DELIVERED
    elif not final:
        Alert.objects.filter(pk=alert.pk).update(deliveries=entries)
        return DeliveryOutcome(status=Alert.Delivery.PENDING, retry=True)
    else:
        status = Alert.Delivery.PARTIAL if reached else Alert.Delivery.FAILED
    with transaction.atomic():
        Alert.objects.filter(pk=alert.pk).update(deliveries=entries, delivery=status, delivered_at=timezone.now())
        _failures_count(monitor.pk, entries)
    return DeliveryOutcome(status=status, retry=False)


def _failures_count(monitor_id: int, entries: list[dict[str, Any]]) -> None:
    """Each channel's failed notifications in a row; a channel at the limit is disabled."""
    monitor = Monitor.objects.select_for_update().get(pk=monitor_id)
    failures = {int(index): count for index, count in (monitor.channel_failures or {}).items()}
    disabled = set(monitor.disabled_channels or [])
    for entry in entries:
        index = entry["index"]
        failures[index] = 0 if entry["ok"] else failures.get(index, 0) + 1
        if failures[index] >= settings.MONITORS_CHANNEL_MAX_FAILURES and index not in disabled:
            disabled.add(index)
            logger.warning("Monitor %r: channel %s failed %s notifications in a row: disabled", monitor.name,
                           entry["channel"], failures[index])
    Monitor.objects.filter(pk=monitor_id).update(channel_failures={str(k): v for k, v in failures.items()},
                                                 disabled_channels=sorted(disabled))
