"""Telling an experiment's channels that it was rolled back or decided, through the monitors' delivery (apprise, our
signed:// webhooks, log://), once per channel: a task retries what failed, and what was delivered is not sent again."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from analytics.monitors.delivery import channel_notify

from ..models import Experiment


class NotificationFailed(Exception):
    """Some channels did not take the notification; the task retries them."""


def experiment_notification(experiment: Experiment) -> dict[str, Any]:
    decision = experiment.decision or {}
    if experiment.status == Experiment.Status.ROLLED_BACK:
        text = (f"[ROLLED BACK] Experiment {experiment.name}: all traffic is back on control "
                f"({experiment.control}). Why: {decision.get('reason', '')}")
        level = "alert"
    else:
        text = f"[DECIDED] Experiment {experiment.name}: {decision.get('state', '')}. {decision.get('reason', '')}"
        level = "ok" if decision.get("state") == "winner" else "info"
    return {
        "kind": "experiment", "experiment": {"id": experiment.pk, "name": experiment.name, "mode": experiment.mode,
                                             "control": experiment.control, "variants": experiment.variants},
        "status": experiment.status, "decision": decision, "level": level, "text": text,
        "time": timezone.now().isoformat(),
        "results_url": f"{settings.SITE_URL}/api/intent/experiments/{experiment.pk}/results",
        "dashboard_url": f"{settings.SITE_URL}/admin/intent/experiment/{experiment.pk}/results/",
    }


def experiment_notify(*, experiment_id: int) -> dict[str, str]:
    """Send the experiment's current news to each channel not told yet; {channel: "sent" | error}. Raises
    NotificationFailed when one failed (after recording what went)."""
    experiment = Experiment.objects.filter(pk=experiment_id).first()
    if experiment is None or not experiment.channels:
        return {}
    body = experiment_notification(experiment)
    key = f"{experiment.status}:{(experiment.decision or {}).get('at') or (experiment.decision or {}).get('decided_at')}"
    told = dict(((experiment.decision or {}).get("notified") or {}).get(key) or {})
    outcome: dict[str, str] = {}
    for url in experiment.channels:
        if told.get(url) == "sent":
            continue
        ok, error = channel_notify(url, body=body, secret=experiment.webhook_secret,
                                   title=f"intentsite: experiment {experiment.name} {experiment.status}",
                                   level=body["level"])
        outcome[url] = "sent" if ok else (error or "failed")
    with transaction.atomic():
        current = Experiment.objects.select_for_update().get(pk=experiment.pk)
        decision = dict(current.decision or {})
        notified = dict(decision.get("notified") or {})
        notified[key] = {**(notified.get(key) or {}), **outcome}
        decision["notified"] = notified
        Experiment.objects.filter(pk=experiment.pk).update(decision=decision)
    failed = {url: error for url, error in outcome.items() if error != "sent"}
    if failed:
        raise NotificationFailed("; ".join(f"{url.split('://', 1)[0]}: {error}" for url, error in failed.items()))
    return outcome
