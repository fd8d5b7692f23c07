"""Monitors (what to watch, and where to say it) and their alerts (every state change, with its delivery)."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


def webhook_secret_new() -> str:
    return secrets.token_hex(32)


class Monitor(models.Model):
    class Kind(models.TextChoices):
        THRESHOLD = "threshold"
        ANOMALY = "anomaly"
        DRIFT = "drift"

    class Metric(models.TextChoices):
        RUNS = "runs"
        ERROR_RATE = "error_rate"
        FALLBACK_RATE = "fallback_rate"
        OUT_OF_SCOPE_RATE = "out_of_scope_rate"
        LATENCY_P50_MS = "latency_p50_ms"
        LATENCY_P95_MS = "latency_p95_ms"
        AVG_CONFIDENCE = "avg_confidence"
        ACCURACY = "accuracy"
        TEMPLATE_MATCH_RATE = "template_match_rate"
        COST_USD = "cost_usd"
        INTENT_SHARE = "intent_share"

    class Comparator(models.TextChoices):
        ABOVE = "above"
        BELOW = "below"

    class State(models.TextChoices):
        OK = "ok"
        WARNING = "warning"
        ALERT = "alert"
        NO_DATA = "no_data"
        PAUSED = "paused"

    class Segment(models.TextChoices):
        NONE = "", "whole traffic"
        MODULE = "module"
        USER_ROLE = "user_role"

    name = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.THRESHOLD)
    metric = models.CharField(max_length=32, choices=Metric.choices, default=Metric.ERROR_RATE, help_text=(
        "What a threshold or anomaly monitor watches; a drift monitor watches the intent distribution."))
    intent = models.CharField(max_length=200, blank=True, help_text="The intent of `intent_share`.")
    filters = models.JSONField(default=dict, blank=True, help_text=(
        "Any of module, user_role, model_name, prompt_version: the runs watched."))
    window_minutes = models.PositiveIntegerField(
        default=15, validators=[MinValueValidator(5), MaxValueValidator(10_080)],
        help_text="The window ending at the evaluation, 5 to 10,080 minutes, a multiple of 5.")
    comparator = models.CharField(max_length=8, choices=Comparator.choices, default=Comparator.ABOVE)
    warn_threshold = models.FloatField(null=True, blank=True, help_text=(
        "threshold: the metric's value; anomaly: the robust z-score; drift: the Jensen-Shannon distance."))
    alert_threshold = models.FloatField(null=True, blank=True)
    min_runs = models.PositiveIntegerField(default=20, help_text=(
        "Fewer runs in the window (labelled ones for accuracy) is no_data."))
    renotify_minutes = models.PositiveIntegerField(default=0, help_text="Repeat an ongoing alert every N minutes (0: never).")
    channels = models.JSONField(default=list, blank=True, help_text="Notification URLs (apprise), e.g. signeds://host/path.")
    enabled = models.BooleanField(default=True)
    # drift
    segment = models.CharField(max_length=16, choices=Segment.choices, blank=True, default="", help_text=(
        "drift: compared per value of this dimension (each module, each role), or the whole traffic."))
    reference_days = models.PositiveIntegerField(default=7, validators=[MinValueValidator(1), MaxValueValidator(30)],
                                                 help_text="drift: the reference is the days before the window.")
    reference_start = models.DateTimeField(null=True, blank=True, help_text="drift: a pinned reference period instead.")
    reference_end = models.DateTimeField(null=True, blank=True)
    drift_p_value = models.FloatField(default=0.01, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
                                      help_text="drift: the chi-square test's p-value must be below this too.")

    webhook_secret = models.CharField(max_length=64, default=webhook_secret_new, help_text=(
        "Signs signed:// and signeds:// webhooks (HMAC-SHA256, header X-Intentsite-Signature)."))
    channel_failures = models.JSONField(default=dict, blank=True, help_text="Channel index -> failed notifications in a row.")
    disabled_channels = models.JSONField(default=list, blank=True, help_text=(
        "Indexes of channels that failed 5 notifications in a row: not used until the channels are saved again."))

    # read-only: the evaluation writes them
    state = models.CharField(max_length=16, choices=State.choices, default=State.OK)
    state_since = models.DateTimeField(null=True, blank=True)
    last_value = models.FloatField(null=True, blank=True)
    last_evaluated_at = models.DateTimeField(null=True, blank=True)
    last_notified_at = models.DateTimeField(null=True, blank=True)
    last_details = models.JSONField(default=dict, blank=True)

    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.state})"


class Alert(models.Model):
    """One state change of a monitor (or the reminder of an ongoing alert), and how its notification went."""

    class Kind(models.TextChoices):
        CHANGE = "change"
        RENOTIFY = "renotify"

    class Delivery(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        PARTIAL = "partial"
        FAILED = "failed"
        NONE = "none", "not notified"

    monitor = models.ForeignKey(Monitor, on_delete=models.CASCADE, related_name="alerts")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.CHANGE)
    from_state = models.CharField(max_length=16, choices=Monitor.State.choices)
    to_state = models.CharField(max_length=16, choices=Monitor.State.choices)
    value = models.FloatField(null=True, blank=True)
    threshold = models.FloatField(null=True, blank=True)
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    created_at = models.DateTimeField(db_index=True)
    details = models.JSONField(default=dict, blank=True, help_text="Expected range (anomaly), intents moved (drift), ...")
    delivery = models.CharField(max_length=16, choices=Delivery.choices, default=Delivery.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Delivery attempts so far.")
    deliveries = models.JSONField(default=list, blank=True, help_text="Per channel: the channel (secrets hidden), ok, error, attempts.")
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["monitor", "created_at"], name="alert_monitor_time"),
                   models.Index(fields=["to_state", "created_at"], name="alert_state_time")]

    def __str__(self) -> str:
        return f"{self.monitor_id}: {self.from_state} -> {self.to_state}"
