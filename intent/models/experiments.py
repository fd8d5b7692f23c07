"""Live prompt experiments (`intent.experiments`): an A/B test or a shadow test of prompt versions on live traffic,
and what a shadow candidate answered for the requests it saw."""

import secrets

from django.conf import settings
from django.db import models


def webhook_secret_new() -> str:
    return secrets.token_hex(32)


class Experiment(models.Model):
    """Prompt versions compared on live traffic. `ab`: each request in scope is answered by one arm (the control, or a
    variant with its weight's share), chosen by a hash of (experiment, subject) or per request. `shadow`: the control
    answers every request; each variant also runs, in the background, on its weight's share of requests.

    Results are read from the rollups (`analytics`, dimension `variant`); beat evaluates running experiments and
    rolls one back when a guardrail is breached. Each experiment is a run in MLflow's `intent_experiments`."""

    class Mode(models.TextChoices):
        AB = "ab"
        SHADOW = "shadow"

    class Assignment(models.TextChoices):
        SUBJECT = "subject", "sticky per subject_id"
        REQUEST = "request", "per request"

    class Metric(models.TextChoices):
        ACCURACY = "accuracy"
        AVG_CONFIDENCE = "avg_confidence"
        OUT_OF_SCOPE_RATE = "out_of_scope_rate"
        LATENCY_P95_MS = "latency_p95_ms"

    class Status(models.TextChoices):
        DRAFT = "draft"
        RUNNING = "running"
        STOPPED = "stopped"
        PROMOTED = "promoted"
        ROLLED_BACK = "rolled_back"

    name = models.CharField(max_length=100, unique=True, help_text=(
        "Letters, digits, '.', '_' and '-': the `experiment` tag of its runs and the reports' filter."))
    description = models.TextField(blank=True)
    mode = models.CharField(max_length=10, choices=Mode.choices, default=Mode.AB)
    control = models.CharField(max_length=32, help_text="The prompt version answering as `control`.")
    variants = models.JSONField(default=list, help_text=(
        "[{name, prompt_version, weight}]: ab: each variant's share of the traffic (control has the rest); "
        "shadow: the share of requests each candidate also answers, in the background."))
    assignment = models.CharField(max_length=10, choices=Assignment.choices, default=Assignment.SUBJECT)
    scope = models.JSONField(default=dict, blank=True, help_text=(
        "Which requests take part: any of module, user_role (empty: all)."))
    primary_metric = models.CharField(max_length=20, choices=Metric.choices, default=Metric.ACCURACY)
    guardrails = models.JSONField(default=dict, blank=True, help_text=(
        "Any of error_rate_max, fallback_rate_max, latency_p95_ms_max: limits a variant must keep."))
    min_runs_per_variant = models.PositiveIntegerField(default=1000, help_text=(
        "The fixed horizon: the decision is taken once every arm has this many runs (labelled runs for accuracy)."))
    alpha = models.FloatField(default=0.05, help_text="Significance level of the tests (two-sided).")
    minimum_effect = models.FloatField(null=True, blank=True, help_text=(
        "The smallest difference in the primary metric worth detecting (absolute): sizes the runs still needed."))
    channels = models.JSONField(default=list, blank=True, help_text=(
        "Notification URLs (as monitors': apprise, signed://, log://) told when it is rolled back or decided."))
    webhook_secret = models.CharField(max_length=64, default=webhook_secret_new, help_text=(
        "Signs its signed:// notifications (X-Intentsite-Signature)."))
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.DRAFT, db_index=True)
    decision = models.JSONField(default=dict, blank=True, help_text="Why it ended as it did, with the numbers.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    mlflow_run_id = models.CharField(max_length=64, blank=True, help_text="Its run in `intent_experiments`.")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.mode}, {self.status})"

    def arms(self) -> list[dict]:
        """Every arm, control first: [{name, prompt_version, weight}] (control's weight: the rest, in ab)."""
        variants = [dict(variant) for variant in self.variants]
        rest = 1.0 - sum(float(variant["weight"]) for variant in variants) if self.mode == self.Mode.AB else 1.0
        return [{"name": "control", "prompt_version": self.control, "weight": rest}, *variants]


class ShadowDetection(models.Model):
    """A shadow candidate's answer to one live request, next to the live answer (written by a worker)."""

    experiment = models.ForeignKey(Experiment, related_name="shadow_detections", on_delete=models.CASCADE)
    variant = models.CharField(max_length=100)
    prompt_version = models.CharField(max_length=32)
    request_id = models.UUIDField(help_text="The live detection's request id (its label counts for both answers).")
    created_at = models.DateTimeField(db_index=True, help_text="When the live detection started.")
    live_intent = models.CharField(max_length=100)
    live_confidence = models.FloatField()
    live_status = models.CharField(max_length=20)
    live_response_time_ms = models.FloatField(default=0.0)
    intent = models.CharField(max_length=100, help_text="What the candidate answered.")
    confidence = models.FloatField()
    status = models.CharField(max_length=20)
    fallback_used = models.BooleanField(default=False)
    response_time_ms = models.FloatField()

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["experiment", "variant", "request_id"],
                                               name="shadowdetection_unique")]

    def __str__(self) -> str:
        return f"{self.request_id}: {self.live_intent} / {self.intent}"
