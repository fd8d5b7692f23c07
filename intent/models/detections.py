"""The catalog, the tracking outboxes (one abstract `Outbox`), labels, details, gap mining, prompt versions.

The catalog: categories with example utterances, and the workflow and agent templates a detected intent selects.
The outboxes: detection records and feedback, each written to MLflow by a worker (`intent.outbox`)."""

from django.conf import settings
from django.db import models


class TimestampedModel(models.Model):
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        abstract = True


class IntentCategory(TimestampedModel):
    name = models.SlugField(max_length=100, unique=True, help_text="Stable slug, e.g. `transfer`.")
    description = models.TextField(blank=True)
    module = models.SlugField(max_length=100, db_index=True, help_text="Product module (CLINC150 domain).")
    requires_workflow = models.BooleanField(
        default=False, help_text="Default for detections of this intent: does it start a workflow?"
    )
    is_active = models.BooleanField(default=True, db_index=True)

    class Meta:
        ordering = ["module", "name"]
        verbose_name_plural = "intent categories"

    def __str__(self) -> str:
        return self.name


class IntentExample(TimestampedModel):
    category = models.ForeignKey(IntentCategory, related_name="examples", on_delete=models.CASCADE)
    text = models.CharField(max_length=1000)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.text


class Template(TimestampedModel):
    name = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    module = models.SlugField(max_length=100, db_index=True, blank=True)
    intents = models.ManyToManyField(
        IntentCategory, blank=True, related_name="%(class)ss", help_text="Detected intents that select it.")
    trigger_examples = models.JSONField(
        default=list, blank=True, help_text="Example requests that should select this template (a JSON list)."
    )
    is_active = models.BooleanField(default=True, db_index=True)

    class Meta:
        abstract = True
        ordering = ["module", "name"]

    def __str__(self) -> str:
        return self.name


class WorkflowTemplate(Template):
    """A multi-step workflow the product can start for an intent."""


class AgentTemplate(Template):
    """An agent (a tool-using assistant persona) the product can hand an intent to."""


class Outbox(models.Model):
    """A row that a worker writes to MLflow (`intent.outbox`): leased while a worker holds it, `logged` once
    written, `dead` (a dead letter, kept for replay) when MLflow refused it or its retry window ran out."""

    class State(models.TextChoices):
        PENDING = "pending"
        LOGGED = "logged"
        DEAD = "dead"

    request_id = models.UUIDField(unique=True, help_text="The detection's request id.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    lease_until = models.DateTimeField(null=True, blank=True, help_text="A worker owns the row until then.")
    lease_token = models.CharField(max_length=32, blank=True, db_index=True, help_text="Which claim owns it.")
    mlflow_run_id = models.CharField(max_length=64, blank=True, db_index=True)
    last_error = models.TextField(blank=True)
    logged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True


class DetectionRecord(Outbox):
    """The outbox of tracking: one row per detection, written with the request, logged to MLflow by a
    worker. A row stays until its run is logged; what keeps failing becomes a dead letter."""

    created_at = models.DateTimeField(db_index=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="+", help_text="Who asked for the detection: may give its feedback.")
    payload = models.JSONField(help_text="The run: tags, params, metrics, start/end time and status.")
    replayed_at = models.DateTimeField(null=True, blank=True, help_text="Replayed from the dead letters then.")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state", "created_at"])]

    def __str__(self) -> str:
        return f"{self.request_id} ({self.state})"


class DeadLetter(DetectionRecord):
    """Detections whose MLflow run could not be logged within the retry window (admin view)."""

    class Meta:
        proxy = True
        verbose_name = "tracking dead letter"


class DetectionFeedback(Outbox):
    """A user's correction of one detection, and the outbox of its write to that detection's MLflow run.

    One row per detection: the latest feedback wins (`revision` counts them, so a worker that logged an
    older revision does not mark a newer one done)."""

    detected_intent = models.CharField(max_length=100, help_text="What the detector answered.")
    expected_intent = models.CharField(max_length=100, help_text="What the user says is right.")
    is_correct = models.BooleanField()
    comment = models.CharField(max_length=500, blank=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="intent_feedback")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    revision = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["-updated_at"]
        verbose_name_plural = "detection feedback"
        indexes = [models.Index(fields=["state", "updated_at"])]
        permissions = [("label_detections", "Can label any user's detections (reviewers)")]

    def __str__(self) -> str:
        return f"{self.request_id}: {self.detected_intent} -> {self.expected_intent} ({self.state})"


class DetectionLabel(models.Model):
    """Every label given to a detection, with its author: the history behind `DetectionFeedback`, whose latest
    label is what accuracy counts."""

    request_id = models.UUIDField(db_index=True, help_text="The detection's request id.")
    expected_intent = models.CharField(max_length=100)
    is_correct = models.BooleanField()
    comment = models.CharField(max_length=500, blank=True, help_text="Redacted before it was stored.")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="detection_labels")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.request_id}: {self.expected_intent} by {self.user or 'nobody'}"


class DetectionDetail(models.Model):
    """What a reviewer needs to see why one detection went the way it did, kept in the Django database next to
    its detection record (which leaves once its run is logged): the message, redacted before it is written
    (blank with INTENT_STORE_MESSAGES=0, erased after INTENT_MESSAGE_RETENTION_DAYS), the context, the answer and
    the local model's ranking of alternatives. The review queue reads it; the row goes after
    ANALYTICS_RAW_RETENTION_DAYS."""

    request_id = models.UUIDField(unique=True, help_text="The detection's request id.")
    created_at = models.DateTimeField(db_index=True, help_text="When the detection started (its run's start).")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="+", help_text="Who asked for the detection: may give its feedback.")
    message = models.TextField(blank=True, help_text="Redacted; empty when not stored or past its retention.")
    message_erased_at = models.DateTimeField(null=True, blank=True, help_text="When retention erased the text.")
    user_role = models.CharField(max_length=100, blank=True)
    current_module = models.CharField(max_length=100, blank=True)
    current_tab = models.CharField(max_length=100, blank=True)
    model_name = models.CharField(max_length=200)
    prompt_version = models.CharField(max_length=32)
    detected_intent = models.CharField(max_length=100)
    confidence = models.FloatField()
    status = models.CharField(max_length=20)
    error_category = models.CharField(max_length=50, blank=True)
    template_matched = models.BooleanField(default=False, help_text="A workflow or agent template was selected.")
    alternatives = models.JSONField(default=list, help_text="[[intent, probability], ...] by the local model, best first.")
    margin = models.FloatField(null=True, blank=True, db_index=True,
                               help_text="Top minus second probability of the local model's ranking (small: unsure).")
    local_intent = models.CharField(max_length=100, blank=True,
                                    help_text="What the local model answers, beside an LM's answer.")
    disagreement = models.BooleanField(default=False, db_index=True,
                                       help_text="The local model's answer differs from the detection's.")
    steps = models.JSONField(default=dict, blank=True, help_text=(
        "What its trace's spans hold, for the story page (redacted; no prompt): the LM call's time, tokens, response "
        "or error; the local model's time; the templates chosen."))
    sampled_at = models.DateTimeField(null=True, blank=True, db_index=True,
                                      help_text="When the review queue's `random` strategy served it: its label "
                                                "then counts in the unbiased accuracy estimate.")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.request_id}: {self.detected_intent}"


class GapMining(models.Model):
    """One run of template-gap mining (`intent.gaps`): the clusters found among the period's messages that were out of
    scope, matched no template or had a low confidence."""

    computed_at = models.DateTimeField(db_index=True)
    days = models.PositiveIntegerField()
    detections = models.PositiveIntegerField(help_text="Detections of the period with a stored message.")
    candidates = models.PositiveIntegerField(help_text="Those out of scope, without a template, or unsure.")
    clustered = models.PositiveIntegerField(help_text="Candidates the clusterer saw (a uniform sample past "
                                                      "GAPS_SAMPLE_SIZE; the rest join their nearest neighbours').")
    seconds = models.FloatField()

    class Meta:
        ordering = ["-computed_at"]
        verbose_name = "template-gap mining"

    def __str__(self) -> str:
        return f"{self.days} days at {self.computed_at:%Y-%m-%d %H:%M}"


class GapCluster(models.Model):
    """A group of similar messages the catalog does not serve well: a candidate intent."""

    mining = models.ForeignKey(GapMining, related_name="clusters", on_delete=models.CASCADE)
    rank = models.PositiveIntegerField(help_text="1 = the largest.")
    size = models.PositiveIntegerField()
    share = models.FloatField(help_text="Of the period's candidates.")
    suggested_name = models.SlugField(max_length=100)
    top_terms = models.JSONField(default=list)
    examples = models.JSONField(default=list, help_text="Up to 5 representative messages (redacted).")
    trend = models.JSONField(default=list, help_text="[{day, count}] over the period.")
    detected_intents = models.JSONField(default=list, help_text="What the detector answered for them: [{intent, count}].")
    adopted_as = models.ForeignKey(IntentCategory, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                   help_text="The intent made from this cluster (inactive until turned on).")

    class Meta:
        ordering = ["mining", "rank"]

    def __str__(self) -> str:
        return f"{self.suggested_name} ({self.size})"


class PromptVersion(models.Model):
    """Every prompt version a detector reported or an optimizer produced, with what its hash stands for.

    A version with a saved program (`program_path`) can be made the active one: every process's detector
    then loads that program (at most one version is active)."""

    version = models.CharField(max_length=32, unique=True)
    model_name = models.CharField(max_length=200)
    description = models.JSONField(help_text="Everything the hash covers: signature, demos, adapter, model, ...")
    first_seen = models.DateTimeField(auto_now_add=True)
    mlflow_run_id = models.CharField(max_length=64, blank=True, help_text="Run holding its state as an artifact.")
    program_path = models.CharField(max_length=500, blank=True,
                                    help_text="Saved program state (optimized versions), loadable on activation.")
    base_version = models.CharField(max_length=32, blank=True, help_text="The version it was optimized from.")
    is_active = models.BooleanField(default=False, db_index=True,
                                    help_text="Detectors load this version's saved program.")
    activated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-first_seen"]

    def __str__(self) -> str:
        return f"{self.version} ({self.model_name})"
