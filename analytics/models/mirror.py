"""The ORM mirror of MLflow runs (`MirroredRun`), its daily rollups (`DailyRollup`) and the sync's state.

MLflow stays the system of record: the sync (`analytics.mirror.sync.runs_sync`) writes these tables, nothing
else does (feedback too arrives through MLflow: the run's `expected_intent` tag and `is_correct` metric).
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from itertools import combinations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from ..mirror.sketch import stored_bytes

# The value a dimension of the free-text context (role, module, tab) gets in the rollups for the values beyond
# its ANALYTICS_ROLLUP_TOP_VALUES most frequent of the day (the raw rows keep every value).
OTHER = "other"
# Two values in one rollup value (error type with its category; configured model with what answered):
# joined by the ASCII unit separator, which tags and model names do not hold.
COMPOUND_SEPARATOR = "\x1f"


def compound_value(*parts: str) -> str:
    """The parts as one value; '' when every part is empty (a run without an error has no error type)."""
    return COMPOUND_SEPARATOR.join(parts) if any(parts) else ""


def compound_parts(value: str, count: int = 2) -> list[str]:
    parts = value.split(COMPOUND_SEPARATOR, count - 1)
    return parts + [""] * (count - len(parts))


# The dimensions also rolled up two by two, for a breakdown under a filter (or two filters): the rows of the pair
# `intent+module` hold each day's runs per (intent, module), their value the two values joined by the separator,
# in this order. All are of bounded cardinality: a catalog's intents, a few models, prompt versions, error
# categories and experiments; role, module and tab folded to the day's most frequent (beyond them: `other`).
# Each is also paired with the two compound dimensions a filtered report reads (`module+error_type`: the module,
# then the error type's own compound value).
PAIRED_DIMENSIONS = ("intent", "role", "module", "tab", "model", "prompt_version", "error_category", "experiment")
PAIRED_COMPOUNDS = ("error_type", "model_answer")
PAIRS: dict[str, tuple[str, str]] = {
    f"{first}+{second}": (first, second)
    for index, first in enumerate(PAIRED_DIMENSIONS) for second in (*PAIRED_DIMENSIONS[index + 1:],
                                                                   *PAIRED_COMPOUNDS)}


# Three dimensions rolled up together, for a breakdown under two filters (intents within `module=banking` and
# `role=agent`): `intent+role+module` holds each day's runs per (intent, role, module), in `PAIRED_DIMENSIONS`' order.
# Not all of them, always: on uniform data a triple has nearly as many rows a day as there are runs, so only those a
# saved board's widget needs are kept (`RollupTriple`; built and maintained by the sync: `analytics.mirror.triples`).
TRIPLES: dict[str, tuple[str, str, str]] = {
    "+".join(members): members for members in combinations(PAIRED_DIMENSIONS, 3)}


def pair_of(first: str, second: str) -> tuple[str, int] | None:
    """The pair dimension holding these two dimensions, and where `first` sits in its value (0 or 1: the part before
    the first separator, or all after it); None: no pair."""
    if f"{first}+{second}" in PAIRS:
        return f"{first}+{second}", 0
    if f"{second}+{first}" in PAIRS:
        return f"{second}+{first}", 1
    return None


def triple_of(*dimensions: str) -> tuple[str, tuple[int, ...]] | None:
    """The triple holding these three dimensions, and where each sits in its value (0, 1, 2); None: no triple."""
    if len(set(dimensions)) != 3 or not all(dimension in PAIRED_DIMENSIONS for dimension in dimensions):
        return None
    members = tuple(sorted(dimensions, key=PAIRED_DIMENSIONS.index))
    return "+".join(members), tuple(members.index(dimension) for dimension in dimensions)


class MirroredRun(models.Model):
    """One MLflow run of the detection experiment, with every name of the tracking contract typed.

    Tags, params and metrics outside the contract land in `tags`, `params` and `metrics` (JSON), so a
    metric added to the contract later is mirrored before anyone writes a migration for it.
    Deleted runs (MLflow lifecycle `deleted`) are not kept: `lifecycle` is always `active` here.
    """

    run_id = models.CharField(max_length=32)
    experiment_id = models.CharField(max_length=32)
    status = models.CharField(max_length=16, help_text="MLflow run status: FINISHED, FAILED, RUNNING, ...")
    lifecycle = models.CharField(max_length=16, default="active")
    start_time = models.DateTimeField(db_index=True)
    end_time = models.DateTimeField(null=True, blank=True, db_index=True)
    day = models.DateField(help_text="UTC date of start_time: the rollup key.")

    # Tags of the contract
    detected_intent = models.CharField(max_length=200, blank=True)
    user_role = models.CharField(max_length=200, blank=True)
    current_module = models.CharField(max_length=200, blank=True)
    current_tab = models.CharField(max_length=200, blank=True)
    prompt_version = models.CharField(max_length=64, blank=True)
    dspy_version = models.CharField(max_length=32, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    fallback_used = models.BooleanField(null=True, blank=True)
    error_category = models.CharField(max_length=64, blank=True)
    error_type = models.CharField(max_length=200, blank=True)
    is_error = models.BooleanField(default=False, help_text="Tag status=error, or run status FAILED.")
    experiment = models.CharField(max_length=100, blank=True, help_text="The live prompt experiment it took part in.")
    variant = models.CharField(max_length=100, blank=True, help_text="Its arm in that experiment.")
    # Params of the contract
    model_name = models.CharField(max_length=200, blank=True, help_text="The configured model.")
    answered_by = models.CharField(max_length=200, blank=True, help_text=(
        "The model whose answer this is: the configured one, or the local backend when it fell back."))
    category_source = models.CharField(max_length=32, blank=True)
    requires_workflow = models.BooleanField(null=True, blank=True)
    message_length = models.IntegerField(null=True, blank=True)
    message_word_count = models.IntegerField(null=True, blank=True)
    # Metrics of the contract (latest value of each)
    confidence_score = models.FloatField(null=True, blank=True)
    response_time_ms = models.FloatField(null=True, blank=True)
    template_match_rate = models.FloatField(null=True, blank=True)
    available_workflow_templates = models.IntegerField(null=True, blank=True)
    available_agent_templates = models.IntegerField(null=True, blank=True)
    prompt_tokens = models.IntegerField(null=True, blank=True)
    completion_tokens = models.IntegerField(null=True, blank=True)
    cost_usd = models.FloatField(null=True, blank=True)
    latency_bucket = models.SmallIntegerField(
        null=True, blank=True, help_text="Latency sketch bucket of response_time_ms (`analytics.mirror.sketch.sketch_key`).")

    # Everything else MLflow holds for the run
    tags = models.JSONField(default=dict, blank=True, help_text="Tags outside the contract (incl. mlflow.*).")
    params = models.JSONField(default=dict, blank=True, help_text="Params outside the contract.")
    metrics = models.JSONField(default=dict, blank=True, help_text="Latest value of metrics outside the contract.")

    # Feedback (contract B): the run's tag `expected_intent` and metric `is_correct`, written on the run by the
    # intent app and mirrored by the sync (`runs_refresh` re-reads a run as soon as it gets them); null = no
    # feedback yet.
    expected_intent = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    is_correct = models.BooleanField(null=True, blank=True)

    mirrored_at = models.DateTimeField(help_text="When the sync last wrote this row.")
    source_digest = models.CharField(
        max_length=32, blank=True, help_text="Digest of the MLflow run this row was built from (see the sync).")

    class Meta:
        ordering = ["-start_time"]
        # Every index costs each upsert (measured: 8 indexes double SQLite's insert time against none), so
        # only what the sync, the admin and the rollups read. start_time and end_time are indexed above.
        # Declared here, not with db_index/unique, so PostgreSQL gets no `varchar_pattern_ops` copies.
        constraints = [models.UniqueConstraint(fields=["run_id"], name="mirroredrun_run_id_unique")]
        indexes = [
            models.Index(fields=["request_id"], name="mirroredrun_request_id"),
            # The sync's newest-run and re-poll queries; time ranges of one experiment.
            models.Index(fields=["experiment_id", "start_time"], name="mirroredrun_exp_start"),
            # Rollup recomputes read whole days of one experiment; so do day-range drill-downs.
            models.Index(fields=["experiment_id", "day"], name="mirroredrun_exp_day"),
            # The few runs the sync polls again until they end. Not a partial index: SQLite uses one only
            # when the query spells the condition's values out, and Django binds them as parameters.
            models.Index(fields=["status"], name="mirroredrun_status"),
            # Partial indexes hold only the few rows the reports read raw: failing runs (errors' latest runs
            # and types) and labelled ones (confusion). Their conditions have no bound value (`WHERE is_error`,
            # `IS NOT NULL`), so SQLite uses them too; rows outside them cost an upsert nothing more.
            # They also hold the columns those reports group by, so that no table row is read.
            models.Index(fields=["experiment_id", "start_time", "error_category", "error_type", "run_id"],
                         condition=Q(is_error=True), name="mirroredrun_failing"),
            models.Index(fields=["experiment_id", "day", "expected_intent", "detected_intent", "is_correct"],
                         condition=Q(is_correct__isnull=False), name="mirroredrun_labelled"),
        ]

    def __str__(self) -> str:
        return f"{self.run_id} {self.detected_intent or '?'} ({self.status})"


class SketchField(models.BinaryField):
    """A latency sketch in its stored form (`analytics.mirror.sketch.STORED`: 6 bytes a bucket), read back as bytes
    (parsed by `LatencySketch` only if a percentile is asked for; a report has the database concatenate a group's),
    written from bytes or from `[[bucket keys], [counts]]`."""

    def get_prep_value(self, value):
        return None if value is None else stored_bytes(value)

    def from_db_value(self, value, expression, connection):
        return bytes(value) if isinstance(value, (memoryview, bytearray)) else value


class RollupAggregates(models.Model):
    """The counts, sums and latency sketch every rollup holds for its runs (daily ones, window ones)."""

    runs = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    fallbacks = models.PositiveIntegerField(default=0)
    out_of_scope = models.PositiveIntegerField(default=0)
    template_matches = models.PositiveIntegerField(default=0)
    confidence_count = models.PositiveIntegerField(default=0)
    confidence_sum = models.FloatField(default=0.0)
    confidence_sumsq = models.FloatField(default=0.0)
    latency_count = models.PositiveIntegerField(default=0)
    latency_sum_ms = models.FloatField(default=0.0)
    latency_sumsq_ms = models.FloatField(default=0.0)
    latency_sketch = SketchField(default=b"", blank=True, help_text=(
        "The buckets of `analytics.mirror.sketch.LatencySketch` (key, count): percentiles within 1 % of exact."))
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cost_usd = models.FloatField(default=0.0)
    labelled = models.PositiveIntegerField(default=0, help_text="Runs with feedback (is_correct not null).")
    correct = models.PositiveIntegerField(default=0, help_text="Runs whose feedback says the detection was right.")

    class Meta:
        abstract = True


class DailyRollup(RollupAggregates):
    """Aggregates of one UTC day of one experiment, per dimension value, recomputed by the sync from the
    raw rows of every day it touched (so they equal an aggregation of `MirroredRun` exactly)."""

    class Dimension(models.TextChoices):
        ALL = "all"
        INTENT = "intent"
        ROLE = "role"
        MODULE = "module"
        TAB = "tab"
        MODEL = "model"
        PROMPT_VERSION = "prompt_version"
        ERROR_CATEGORY = "error_category"
        ERROR_TYPE = "error_type"  # compound: error category and type (the errors report's by-type table)
        MODEL_ANSWER = "model_answer"  # compound: configured model and the model that answered (fallbacks)
        EXPERIMENT = "experiment"  # the live prompt experiment ('' for runs outside any)
        VARIANT = "variant"  # compound: experiment and variant (an experiment's results read these)

    experiment_id = models.CharField(max_length=32)
    day = models.DateField()
    dimension = models.CharField(max_length=40, choices=[*Dimension.choices, *((pair, pair) for pair in PAIRS),
                                                         *((triple, triple) for triple in TRIPLES)])
    value = models.CharField(max_length=700, blank=True, help_text=(
        "The dimension's value ('' for all); a pair's (a triple's): the values joined by the unit separator."))
    folded = models.BooleanField(default=False, help_text=(
        "An `other` row that holds the values beyond the day's most frequent ones (free-text dimensions)."))

    latency_min_ms = models.FloatField(null=True, blank=True)
    latency_max_ms = models.FloatField(null=True, blank=True)
    first_start_time = models.DateTimeField(null=True, blank=True)
    last_start_time = models.DateTimeField(null=True, blank=True)
    computed_at = models.DateTimeField()

    class Meta:
        ordering = ["-day", "dimension", "value"]
        constraints = [
            models.UniqueConstraint(fields=["experiment_id", "day", "dimension", "value"], name="dailyrollup_unique"),
        ]
        indexes = [
            # One value (or a pair's values, listed: `Cells`) over a period: a seek per value, not a scan of the
            # dimension's rows (a pair holds ~1,500 a day). Its (dimension, day) predecessor was a prefix of
            # `dailyrollup_counts`: replaced, not added, so writing a rollup costs no more than before.
            models.Index(fields=["dimension", "experiment_id", "value", "day"], name="dailyrollup_value"),
            # The reports' distributions (runs, errors, fallbacks per value of a dimension over a period) read
            # this index alone, not the rows with their histograms: ~40 % less time at 30 days (measured).
            # experiment_id before day: with it last, SQLite's planner took `dailyrollup_value` (two equalities)
            # for these reads and lost the covering index (intent's distribution: 2.1 ms against 4.9, measured).
            models.Index(fields=["dimension", "experiment_id", "day", "value", "runs", "errors", "fallbacks"],
                         name="dailyrollup_counts"),
            # The few `other` rows that hold folded values: a filtered report asks whether its period has any.
            models.Index(fields=["dimension", "day"], condition=Q(folded=True), name="dailyrollup_folded"),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.dimension}={self.value!r}: {self.runs} runs"


class RollupTriple(models.Model):
    """A triple of dimensions (`TRIPLES`) some saved widget needs (two filters and a breakdown by a third): the sync
    builds its daily rollups for every experiment it mirrors, and keeps them while the triple is listed here."""

    dimension = models.CharField(max_length=40, unique=True, choices=[(triple, triple) for triple in TRIPLES])
    requested_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["dimension"]

    def __str__(self) -> str:
        return self.dimension


class RollupTripleBuilt(models.Model):
    """A triple whose daily rollups the sync built for one experiment (and maintains since): the reports read them.
    `built_from`: the first day they cover (None: every day with rollups; days whose raw rows were purged before the
    triple was asked for have none)."""

    experiment_id = models.CharField(max_length=32)
    dimension = models.CharField(max_length=40, choices=[(triple, triple) for triple in TRIPLES])
    built_from = models.DateField(null=True, blank=True)
    built_at = models.DateTimeField()
    rows = models.PositiveIntegerField(default=0, help_text="Daily rollup rows the build wrote.")

    class Meta:
        ordering = ["experiment_id", "dimension"]
        constraints = [models.UniqueConstraint(fields=["experiment_id", "dimension"], name="rolluptriplebuilt_unique")]

    def __str__(self) -> str:
        return f"{self.dimension} ({self.experiment_id})"


class SyncState(models.Model):
    """Where the sync of one experiment stands; its row also carries the lease that serialises syncs."""

    experiment_name = models.CharField(max_length=256, unique=True)
    experiment_id = models.CharField(max_length=32, blank=True)
    watermark_ms = models.BigIntegerField(
        null=True, blank=True, help_text="Newest MLflow start_time read (ms); the next sync reads from it minus the overlap.")
    newest_start_time = models.DateTimeField(null=True, blank=True, help_text="Newest start_time in the mirror.")
    source_position = models.JSONField(
        default=dict, blank=True, help_text="Where the last read ended in MLflow's store (a SQLite store's rowids): "
                                            "the next incremental read starts there.")
    dirty_days = models.JSONField(default=list, blank=True, help_text="Days whose rollups are still to recompute.")
    last_started_at = models.DateTimeField(null=True, blank=True)
    last_finished_at = models.DateTimeField(null=True, blank=True)
    last_succeeded_at = models.DateTimeField(null=True, blank=True)
    last_reconciled_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_result = models.JSONField(default=dict, blank=True, help_text="Counts of the last successful sync.")
    runs_seen = models.BigIntegerField(default=0, help_text="Runs read from MLflow, all syncs together.")
    mirrored_runs = models.BigIntegerField(default=0, help_text="Rows in the mirror after the last sync.")
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True, help_text="A sync owns the experiment until then.")

    class Meta:
        ordering = ["experiment_name"]

    def __str__(self) -> str:
        return self.experiment_name

    @property
    def lag(self) -> timedelta | None:
        """How far the mirror is behind now: now minus the newest mirrored start time."""
        if self.newest_start_time is None:
            return None
        return timezone.now() - self.newest_start_time


# A worker is alive while its last heartbeat is younger than this many heartbeat intervals.
MISSED_BEATS = 3
# Set by a Celery worker's main process before its pool starts (`intentsite/celery.py`), inherited by the pool:
# `worker_key` of that worker, so that what a task holds (the sync's lease) can name the worker that holds it.
WORKER_KEY_ENV = "INTENTSITE_WORKER_KEY"


def worker_key(*, hostname: str, pid: int) -> str:
    """A short key for one life of one worker (its name and its main process): a restarted worker has another."""
    return hashlib.sha1(f"{hostname}/{pid}".encode()).hexdigest()[:24]


def heartbeat_stale_after_s() -> float:
    return MISSED_BEATS * settings.WORKER_HEARTBEAT_S


class WorkerHeartbeatQuerySet(models.QuerySet):
    def alive(self) -> WorkerHeartbeatQuerySet:
        return self.filter(seen_at__gte=timezone.now() - timedelta(seconds=heartbeat_stale_after_s()))

    def alive_keys(self) -> set[str]:
        return {worker_key(hostname=hostname, pid=pid) for hostname, pid in self.alive().values_list("hostname", "pid")}


class WorkerHeartbeat(models.Model):
    """A Celery worker's main process says it is alive (every `WORKER_HEARTBEAT_S`, `intentsite/celery.py`): the
    health endpoint counts the workers seen lately, so a dead worker is noticed though requests are answered, and
    a sync's lease held by a worker that stopped beating is taken over without waiting for it to expire."""

    hostname = models.CharField(max_length=255, unique=True)
    pid = models.IntegerField()
    queues = models.JSONField(default=list, blank=True)
    started_at = models.DateTimeField()
    seen_at = models.DateTimeField(db_index=True)

    objects = WorkerHeartbeatQuerySet.as_manager()

    class Meta:
        ordering = ["hostname"]

    def __str__(self) -> str:
        return self.hostname


class DetectionAnalytics(MirroredRun):
    """No data of its own: the admin's "Detection analytics" dashboard hangs on this proxy, so that it is
    listed on the admin index and in the sidebar like any other page of the app (see `admin.py`)."""

    class Meta:
        proxy = True
        verbose_name = "detection analytics"
        verbose_name_plural = "detection analytics"
