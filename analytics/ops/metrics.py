"""The service's state for Prometheus (`GET /metrics`), read from the database when scraped.

Every web process answers the same thing (nothing is counted in a process's memory, so gunicorn's processes need
no shared directory): the detections come from the detection experiment's daily rollups (all days: counters that
only grow, unless runs are deleted from MLflow), the rest from the outbox, the sync's state and the workers'
heartbeats. A scrape reads a few hundred rows at most, whatever the number of runs. Label sets are bounded: the
catalog's intents and `out_of_scope`, the configured models, `success` / `error`.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.conf import settings
from django.db.models import Sum
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from ..mirror.sketch import GAMMA, ZERO_KEY, LatencySketch
from ..models import DailyRollup, Monitor, SyncState, WorkerHeartbeat
from .health import dead_letters_count, tracking_backlog_get

# The latency histogram's upper bounds (ms). A bound counts the latencies of the sketch's buckets that end at or
# below it: exact for every bound that is a bucket edge, else up to 2 % (one bucket, γ = 1.02) below the bound.
LATENCY_BOUNDS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
PREFIX = "intentsite"


def latency_buckets(sketch: LatencySketch) -> list[tuple[str, int]]:
    """Cumulative (le, count) pairs of a latency sketch, +Inf last (its count is every latency)."""
    keys, counts = sketch.stored()
    buckets, total = [], sum(counts)
    for bound in LATENCY_BOUNDS_MS:
        # bucket `key` holds (γ^(key-1), γ^key]: wholly at or below `bound` when γ^key <= bound
        below = sum(count for key, count in zip(keys, counts, strict=True)
                    if key == ZERO_KEY or GAMMA ** key <= bound * (1 + 1e-12))
        buckets.append((str(float(bound)), below))
    buckets.append(("+Inf", total))
    return buckets


class ServiceCollector:
    """A prometheus_client collector whose `collect` reads the database."""

    def collect(self) -> Iterator[Metric]:
        yield from self._detections()
        yield from self._tracking()
        yield from self._mirror()
        yield from self._monitors()
        workers = GaugeMetricFamily(f"{PREFIX}_workers_alive", "Celery workers whose heartbeat is fresh.")
        workers.add_metric([], WorkerHeartbeat.objects.alive().count())
        yield workers

    def _detections(self) -> Iterator[Metric]:
        state = SyncState.objects.filter(experiment_name=settings.MLFLOW_EXPERIMENT_NAME).first()
        rollups = DailyRollup.objects.filter(experiment_id=state.experiment_id if state else None)
        totals = rollups.filter(dimension=DailyRollup.Dimension.ALL).aggregate(
            runs=Sum("runs"), errors=Sum("errors"), fallbacks=Sum("fallbacks"), out_of_scope=Sum("out_of_scope"),
            latency_sum=Sum("latency_sum_ms"))
        runs, errors = totals["runs"] or 0, totals["errors"] or 0
        detections = CounterMetricFamily(f"{PREFIX}_detections", "Detections mirrored from MLflow, by outcome.",
                                         labels=["status"])
        detections.add_metric(["success"], runs - errors)
        detections.add_metric(["error"], errors)
        yield detections
        for name, field, help_text in (("fallbacks", "fallbacks", "Detections answered by the fallback model."),
                                       ("out_of_scope", "out_of_scope", "Detections that found no catalog intent.")):
            family = CounterMetricFamily(f"{PREFIX}_detection_{name}", help_text)
            family.add_metric([], totals[field] or 0)
            yield family
        for dimension, label in ((DailyRollup.Dimension.INTENT, "intent"), (DailyRollup.Dimension.MODEL, "model")):
            family = CounterMetricFamily(f"{PREFIX}_detections_by_{label}", f"Detections by {label}.", labels=[label])
            for value, count in (rollups.filter(dimension=dimension).values_list("value")
                                 .annotate(total=Sum("runs")).order_by("value")):
                family.add_metric([value], count)
            yield family
        sketch = LatencySketch()
        for stored in rollups.filter(dimension=DailyRollup.Dimension.ALL).values_list("latency_sketch", flat=True):
            sketch.add(LatencySketch.from_stored(stored))
        latency = HistogramMetricFamily(
            f"{PREFIX}_detection_latency_ms",
            "Detection latency (ms) from the rollups' sketches: a bound counts whole sketch buckets (within 2 %).")
        latency.add_metric([], latency_buckets(sketch), sum_value=totals["latency_sum"] or 0.0)
        yield latency

    def _tracking(self) -> Iterator[Metric]:
        backlog = tracking_backlog_get(now=timezone.now())
        if backlog is not None:
            pending = GaugeMetricFamily(f"{PREFIX}_tracking_backlog", "Detections waiting to be written to MLflow.")
            pending.add_metric([], backlog["pending"])
            yield pending
            age = GaugeMetricFamily(f"{PREFIX}_tracking_backlog_oldest_age_seconds",
                                    "Age of the oldest detection waiting for MLflow (0 when none waits).")
            age.add_metric([], backlog["oldest_pending_age_s"] or 0.0)
            yield age
        dead_letters = dead_letters_count()
        if dead_letters is not None:
            dead = GaugeMetricFamily(f"{PREFIX}_tracking_dead_letters", "Detections MLflow refused or that ran out "
                                     "of retries (replay: manage.py replay_dead_letters).")
            dead.add_metric([], dead_letters)
            yield dead

    def _mirror(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(f"{PREFIX}_mirror_lag_seconds", "Now minus the newest mirrored run's start.",
                                labels=["experiment"])
        succeeded = GaugeMetricFamily(f"{PREFIX}_mirror_last_success_timestamp_seconds",
                                      "When the experiment's last sync succeeded (Unix time).", labels=["experiment"])
        mirrored = GaugeMetricFamily(f"{PREFIX}_mirrored_runs", "Rows in the mirror after the last sync.",
                                     labels=["experiment"])
        for state in SyncState.objects.all():
            if state.lag is not None:
                lag.add_metric([state.experiment_name], state.lag.total_seconds())
            if state.last_succeeded_at is not None:
                succeeded.add_metric([state.experiment_name], state.last_succeeded_at.timestamp())
            mirrored.add_metric([state.experiment_name], state.mirrored_runs)
        yield from (lag, succeeded, mirrored)

    def _monitors(self) -> Iterator[Metric]:
        """Each monitor's state as a one-hot gauge (the usual enum form), and its last value: one series per monitor
        and state (a handful of states; monitors are few, made by people)."""
        state = GaugeMetricFamily(f"{PREFIX}_monitor_state", "1 for the state each monitor is in.",
                                  labels=["monitor", "kind", "metric", "state"])
        value = GaugeMetricFamily(f"{PREFIX}_monitor_value", "The monitor's last evaluated value.",
                                  labels=["monitor", "kind", "metric"])
        for name, kind, metric, current, last in Monitor.objects.order_by("name").values_list(
                "name", "kind", "metric", "state", "last_value"):
            for choice in Monitor.State.values:
                state.add_metric([name, kind, metric, choice], 1.0 if choice == current else 0.0)
            if last is not None:
                value.add_metric([name, kind, metric], last)
        yield from (state, value)


def metrics_text() -> bytes:
    """The Prometheus text exposition of the service's state."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector())
    return generate_latest(registry)
