"""Monitors' evaluation against references computed from the raw mirrored rows: every metric over windows and
filters, states and their alerts (once each, recovery, no data, re-notify), anomaly, drift, preview, and an
evaluation that reads only rollups."""

from __future__ import annotations

import random
import statistics
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from analytics.models import Alert, Monitor
from analytics.monitors.evaluation import MAD_TO_SIGMA, history_windows, outcome_get, window_of
from analytics.monitors.preview import monitor_preview
from analytics.monitors.services import monitor_rows_read, monitors_evaluate

from .monitoring import close, mirror_ready, mirror_write, monitor, reference_value, run_row, step_floor

pytestmark = pytest.mark.django_db

INTENTS = ["balance", "transfer", "pay_bill", "out_of_scope"]


def random_rows(rng: random.Random, now, *, count: int, hours: float) -> list:
    return [run_row(now - timedelta(seconds=rng.uniform(0, hours * 3600)), intent=rng.choice(INTENTS),
                    module=rng.choice(["banking", "travel"]), role=rng.choice(["customer", "agent"]),
                    model=rng.choice(["local", "gpt"]), error=rng.random() < 0.2, fallback=rng.random() < 0.1,
                    confidence=round(rng.random(), 4), latency_ms=rng.lognormvariate(1, 1),
                    correct=rng.choice([None, True, False])) for _ in range(count)]


@pytest.mark.parametrize("metric", ["runs", "error_rate", "fallback_rate", "out_of_scope_rate", "avg_confidence",
                                    "latency_p50_ms", "latency_p95_ms", "accuracy", "intent_share"])
def test_every_metric_over_any_window_and_filters_equals_the_raw_rows(metric):
    rng = random.Random(11)
    now = timezone.now()
    mirror_ready()
    rows = mirror_write(random_rows(rng, now, count=1500, hours=60))
    for window in (5, 15, 60, 95, 1440, 2880):
        for filters in ({}, {"module": "banking"}, {"module": "travel", "user_role": "agent", "model_name": "gpt"}):
            watched = Monitor(name="x", kind="threshold", metric=metric, window_minutes=window, filters=filters,
                              intent="transfer" if metric == "intent_share" else "", alert_threshold=1e9, min_runs=1)
            outcome = outcome_get(watched, monitor_rows_read(monitors=[watched], now=now), now)
            start, end = window_of(watched, now)
            expected, counted = reference_value(rows, metric=metric, start=start, end=end, filters=filters,
                                                intent="transfer")
            assert (outcome.window_start, outcome.window_end) == (start, end)
            rel = 0.0101 if metric.startswith("latency") else 1e-9
            if expected is None or counted == 0:
                assert outcome.state == "no_data", (window, filters)
            else:
                assert close(outcome.value, expected, rel=rel), (metric, window, filters, outcome.value, expected)


def test_state_changes_are_recorded_once_with_recovery_and_no_data():
    now = timezone.now()
    mirror_ready()
    watched = monitor(metric="error_rate", warn_threshold=0.1, alert_threshold=0.3, window_minutes=15, min_runs=10)
    mirror_write([run_row(now - timedelta(minutes=i % 10), error=i % 2 == 0) for i in range(20)])  # 50 % errors

    assert monitors_evaluate(now=now).changed == 1
    assert monitors_evaluate(now=now).changed == 0  # the same state: nothing recorded twice
    watched.refresh_from_db()
    assert (watched.state, watched.last_value) == ("alert", 0.5)
    alert = Alert.objects.get(monitor=watched)
    assert (alert.from_state, alert.to_state, alert.value, alert.threshold, alert.delivery) == (
        "ok", "alert", 0.5, 0.3, "pending")
    assert alert.window_end - alert.window_start == timedelta(minutes=15)

    mirror_write([run_row(now - timedelta(minutes=1)) for _ in range(80)])  # 10 errors in 100 runs: not above 0.1
    monitors_evaluate(now=now)
    watched.refresh_from_db()
    assert watched.state == "ok"
    later = now + timedelta(minutes=30)  # the window has no run any more
    monitors_evaluate(now=later)
    watched.refresh_from_db()
    assert watched.state == "no_data"
    assert list(Alert.objects.filter(monitor=watched).order_by("created_at").values_list("from_state", "to_state")) == [
        ("ok", "alert"), ("alert", "ok"), ("ok", "no_data")]


def test_an_ongoing_alert_is_notified_again_every_renotify_minutes():
    now = timezone.now()
    mirror_ready()
    watched = monitor(metric="error_rate", alert_threshold=0.3, window_minutes=60, renotify_minutes=10)
    mirror_write([run_row(now - timedelta(minutes=2), error=True) for _ in range(10)])
    monitors_evaluate(now=now)
    assert monitors_evaluate(now=now + timedelta(minutes=9)).renotified == 0
    assert monitors_evaluate(now=now + timedelta(minutes=10)).renotified == 1
    assert monitors_evaluate(now=now + timedelta(minutes=15)).renotified == 0
    kinds = list(Alert.objects.filter(monitor=watched).order_by("created_at").values_list("kind", "to_state"))
    assert kinds == [("change", "alert"), ("renotify", "alert")]


def test_a_disabled_monitor_is_paused_without_a_notification():
    mirror_ready()
    watched = monitor(metric="runs", alert_threshold=1000, enabled=False)
    monitors_evaluate()
    watched.refresh_from_db()
    alert = Alert.objects.get(monitor=watched)
    assert (watched.state, alert.to_state, alert.delivery) == ("paused", "paused", "none")


def test_anomaly_scores_the_window_against_the_previous_windows():
    rng = random.Random(5)
    now = timezone.now()
    mirror_ready()
    watched = monitor(kind="anomaly", metric="error_rate", window_minutes=15, min_runs=20)
    start, end = window_of(watched, now)
    rows = []
    for low, _high in history_windows(watched, start, end):
        rate = rng.uniform(0.03, 0.08)
        rows += [run_row(low + timedelta(seconds=rng.uniform(0, 899)), error=rng.random() < rate) for _ in range(40)]
    rows += [run_row(start + timedelta(seconds=rng.uniform(0, 899)), error=rng.random() < 0.5) for _ in range(40)]
    rows = [row for row in rows if row.start_time < end]
    mirror_write(rows)

    outcome = outcome_get(watched, monitor_rows_read(monitors=[watched], now=now), now)
    value, _ = reference_value(rows, metric="error_rate", start=start, end=end)
    # The seasonal baseline (the same 15 minutes of the 7 previous days) is used: there are 7.
    seasonal = [reference_value(rows, metric="error_rate", start=start - timedelta(days=d),
                                end=end - timedelta(days=d))[0] for d in range(1, 8)]
    median = statistics.median(seasonal)
    scale = max(MAD_TO_SIGMA * statistics.median(abs(x - median) for x in seasonal), 0.01, 0.05 * median)
    assert outcome.details["baseline"] == "seasonal"
    assert close(outcome.value, value)
    assert close(outcome.details["score"], round((value - median) / scale, 3), rel=1e-6)
    assert outcome.state == "alert"  # 0.5 against ~0.05: far beyond 5 robust deviations
    low, high = outcome.details["expected_range"]
    assert low < median < high < value


def test_drift_names_the_intents_that_moved_in_the_segment_that_drifted():
    from scipy.spatial.distance import jensenshannon

    rng = random.Random(9)
    now = timezone.now()
    mirror_ready()
    watched = monitor(kind="drift", segment="module", window_minutes=60, min_runs=50, warn_threshold=0.1,
                      alert_threshold=0.2)
    start, end = window_of(watched, now)
    rows = []
    for day in range(1, 7):  # a week of reference: both modules spread over four intents
        for _ in range(150):
            moment = start - timedelta(days=day, seconds=rng.uniform(0, 3600))
            rows.append(run_row(moment, module="banking", intent=rng.choice(INTENTS)))
            rows.append(run_row(moment, module="travel", intent=rng.choice(INTENTS)))
    for _ in range(200):  # the last hour: banking turned to transfers, travel as before
        moment = start + timedelta(seconds=rng.uniform(0, 3599))
        rows.append(run_row(moment, module="banking", intent="transfer" if rng.random() < 0.7 else "balance"))
        rows.append(run_row(moment, module="travel", intent=rng.choice(INTENTS)))
    rows = [row for row in rows if row.start_time < end]
    mirror_write(rows)

    outcome = outcome_get(watched, monitor_rows_read(monitors=[watched], now=now), now)
    drifting = outcome.details["drifting"]
    assert outcome.state == "alert"
    assert [d["segment"] for d in drifting] == [{"module": "banking"}]
    before = [r for r in rows if r.current_module == "banking" and start - timedelta(days=7) <= r.start_time < start]
    after = [r for r in rows if r.current_module == "banking" and start <= r.start_time < end]
    shares = {i: (sum(r.detected_intent == i for r in before) / len(before),
                  sum(r.detected_intent == i for r in after) / len(after)) for i in INTENTS}
    top = drifting[0]["movers"][0]
    assert top["intent"] == max(shares, key=lambda i: abs(shares[i][1] - shares[i][0])) == "transfer"
    assert close(top["share_before"], shares["transfer"][0]) and close(top["share_now"], shares["transfer"][1])
    expected = jensenshannon([shares[i][1] for i in INTENTS], [shares[i][0] for i in INTENTS], base=2)
    assert close(outcome.value, expected, rel=1e-9)


def test_preview_replays_the_monitor_over_a_generated_history():
    rng = random.Random(2)
    now = timezone.now()
    mirror_ready()
    watched = monitor(metric="error_rate", alert_threshold=0.3, window_minutes=15, min_runs=5)
    anchor = step_floor(now) - timedelta(hours=6)
    rows = []
    for minute in range(0, 12 * 60, 2):  # a run every 2 minutes for 12 hours, errors for 40 minutes 6 hours ago
        moment = anchor - timedelta(hours=6) + timedelta(minutes=minute, seconds=rng.uniform(0, 100))
        failing = anchor <= moment < anchor + timedelta(minutes=40)
        rows.append(run_row(moment, error=failing))
    mirror_write(rows)

    preview = monitor_preview(monitor=watched, days=1, now=now)
    # The reference: the same steps, each window's error rate from the raw rows.
    expected, state = [], None
    moment = preview.start
    while moment <= preview.end:
        start, end = window_of(watched, moment)
        value, runs = reference_value(rows, metric="error_rate", start=start, end=end)
        current = "no_data" if runs < 5 else ("alert" if value > 0.3 else "ok")
        if state is not None and current != state:
            expected.append((moment, state, current))
        state, moment = current, moment + timedelta(minutes=5)
    assert [(c["at"], c["from"], c["to"]) for c in preview.changes] == expected
    assert ("ok", "alert") in [(f, t) for _, f, t in expected] and ("alert", "ok") in [(f, t) for _, f, t in expected]
    watched.refresh_from_db()
    assert watched.state == "ok" and not Alert.objects.exists()  # a preview saves nothing


def test_evaluation_reads_only_rollups_in_a_fixed_number_of_queries():
    rng = random.Random(4)
    now = timezone.now()
    mirror_ready()
    mirror_write(random_rows(rng, now, count=300, hours=24))
    for index in range(30):
        monitor(metric=["error_rate", "latency_p95_ms", "runs"][index % 3], alert_threshold=1e9,
                window_minutes=[5, 60, 1440][index % 3], kind="anomaly" if index % 5 == 0 else "threshold",
                filters={"module": "banking"} if index % 2 else {})
    monitor(kind="drift", segment="module", min_runs=1)
    monitors_evaluate(now=now)  # states settle (first changes recorded)
    with CaptureQueriesContext(connection) as queries:
        result = monitors_evaluate(now=now)
    reads = [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().upper().startswith("SELECT")]
    assert result.evaluated == 31
    assert not any("analytics_mirroredrun" in sql or "analytics_dailyrollup" in sql for sql in reads)
    # the monitors, the experiment's id, two window-rollup reads, the pending alerts
    assert len(reads) <= 5, reads


def test_a_second_evaluation_reads_only_the_buckets_that_changed():
    from analytics.monitors import reading

    now = timezone.now()
    mirror_ready()
    watched = monitor(metric="runs", window_minutes=360, alert_threshold=1e9, min_runs=1)
    mirror_write([run_row(now - timedelta(minutes=m)) for m in range(0, 300, 7)])
    monitors_evaluate(now=now)
    cached = dict(reading._cache)
    assert cached
    # One new run added as the sync's steady state adds runs (`rollups_add`): one bucket of each grain changes.
    from analytics.mirror.rollups import rollups_add
    from analytics.monitors.windows import ns as reading_ns

    new = run_row(now - timedelta(seconds=30))
    new.save()
    rollups_add(experiment_id=new.experiment_id, days=[new.day], run_ids=[new.run_id])
    monitors_evaluate(now=now)
    watched.refresh_from_db()
    assert watched.last_value == len(range(0, 300, 7)) + 1
    changed = [key for key, (version, block) in reading._cache.items() if cached.get(key, (None, None))[1] is not block]
    # Only the bucket that holds the new run was read again: its 5-minute one when its hour is the window's partial
    # edge, else its hourly one.
    [(_, grain, bucket)] = changed
    assert bucket <= reading_ns(new.start_time) < bucket + grain * 60 * 10**9
