"""The sync against a real MLflow store: the mirror equals MLflow field by field, incrementally and exactly
once, through deletes, restores, `mlflow gc`, late tags and runs that end late."""

from __future__ import annotations

import math
import os
import random
import re
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from django.core.management import call_command
from django.db import connection

from analytics.mirror.sketch import LatencySketch
from analytics.mirror.sync import runs_sync
from analytics.models import DailyRollup, MirroredRun, SyncState
from tests.analytics.conftest import DAY0_MS, HOUR_MS
from tests.conftest import REPO, child_env

pytestmark = pytest.mark.django_db(transaction=True)  # outside a transaction: the attached path on SQLite

TEXT_TAGS = ("user_role", "current_module", "current_tab", "detected_intent", "dspy_version", "prompt_version",
             "request_id", "error_category", "error_type", "answered_by")
TEXT_PARAMS = ("model_name", "category_source")
INTEGER_PARAMS = ("message_length", "message_word_count")
REAL_METRICS = ("confidence_score", "response_time_ms", "template_match_rate", "cost_usd")
WHOLE_METRICS = ("available_workflow_templates", "available_agent_templates", "prompt_tokens", "completion_tokens")
BOOLEANS = {"true": True, "false": False, "True": True, "False": False}
LENGTHS = {field.name: field.max_length for field in MirroredRun._meta.fields if field.max_length}


def ms(value: datetime | None) -> int | None:
    return None if value is None else round(value.timestamp() * 1000)


def expected_row(run) -> dict:
    """What the mirror must hold for one MLflow run, written out from the contract (not from the service):
    a contract value goes to its typed column when it fits it, else it stays, as it came, in the JSON column
    with everything outside the contract (a NaN metric as null)."""
    tags, params, metrics = dict(run.data.tags), dict(run.data.params), dict(run.data.metrics)
    row = {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id, "status": run.info.status,
           "lifecycle": "active", "start_time": run.info.start_time, "end_time": run.info.end_time,
           "day": datetime.fromtimestamp(run.info.start_time / 1000, UTC).date()}

    def typed(source: dict, name: str, convert, *, missing=None):
        if name not in source:
            return missing
        value = convert(source[name])
        if value is None:  # does not fit: stays in the JSON column
            return missing
        del source[name]
        return value

    def whole(value: float) -> int | None:
        return int(value) if math.isfinite(value) and -2**31 <= value < 2**31 and value == int(value) else None

    def integer(value: str) -> int | None:
        return int(value) if re.fullmatch(r"-?[0-9]{1,10}", value) and -2**31 <= int(value) < 2**31 else None

    for name in TEXT_TAGS:
        row[name] = typed(tags, name, lambda v, n=name: v if len(v) <= LENGTHS[n] else None, missing="")
    for name in TEXT_PARAMS:
        row[name] = typed(params, name, lambda v, n=name: v if len(v) <= LENGTHS[n] else None, missing="")
    row["fallback_used"] = typed(tags, "fallback_used", BOOLEANS.get)
    row["requires_workflow"] = typed(params, "requires_workflow", BOOLEANS.get)
    row["expected_intent"] = typed(tags, "expected_intent", lambda v: v if len(v) <= 200 else None)
    for name in INTEGER_PARAMS:
        row[name] = typed(params, name, integer)
    for name in REAL_METRICS:
        row[name] = typed(metrics, name, lambda v: v if math.isfinite(v) else None)
    for name in WHOLE_METRICS:
        row[name] = typed(metrics, name, whole)
    row["is_correct"] = typed(metrics, "is_correct", {1.0: True, 0.0: False}.get)
    status = tags.get("status")
    row["is_error"] = status == "error" or run.info.status == "FAILED"
    if status in ("error", "success"):
        del tags["status"]
    row["tags"], row["params"] = tags, params
    row["metrics"] = {key: value if math.isfinite(value) else None for key, value in metrics.items()}
    return row


def mirrored_row(row: MirroredRun) -> dict:
    return {
        "run_id": row.run_id, "experiment_id": row.experiment_id, "status": row.status, "lifecycle": row.lifecycle,
        "start_time": ms(row.start_time), "end_time": ms(row.end_time), "day": row.day,
        **{name: getattr(row, name) for name in (
            "detected_intent", "user_role", "current_module", "current_tab", "prompt_version", "dspy_version",
            "request_id", "error_category", "error_type", "answered_by", "fallback_used", "is_error", "model_name",
            "category_source", "requires_workflow", "message_length", "message_word_count", "confidence_score",
            "response_time_ms", "template_match_rate", "available_workflow_templates", "available_agent_templates",
            "prompt_tokens", "completion_tokens", "cost_usd", "tags", "params", "expected_intent", "is_correct")},
        # PostgreSQL's jsonb writes a float without a fraction in full (1e+308 as 1000…0), which reads back as
        # an int; float() gives the very double that was stored.
        "metrics": {key: float(value) if isinstance(value, int) else value for key, value in row.metrics.items()},
    }


def assert_mirror_equals_mlflow(run_logger) -> None:
    active = {run.info.run_id: run for run in run_logger.runs() if run.info.lifecycle_stage == "active"}
    mirror = {row.run_id: row for row in MirroredRun.objects.all()}
    assert set(mirror) == set(active)
    for run_id, run in active.items():
        assert mirrored_row(mirror[run_id]) == expected_row(run), run_id


def snapshot() -> list[tuple]:
    """Every mirrored row and rollup, as values (ids and write times left out)."""
    runs = sorted(MirroredRun.objects.values_list(
        *[f.name for f in MirroredRun._meta.concrete_fields if f.name not in {"id", "mirrored_at", "source_digest"}]))
    rollups = sorted((r.experiment_id, r.day, r.dimension, r.value, r.runs, r.errors, r.latency_count,
                      round(r.latency_sum_ms, 6), r.latency_min_ms, r.latency_max_ms,
                      tuple(map(tuple, LatencySketch.from_stored(r.latency_sketch).stored())))
                     for r in DailyRollup.objects.all())
    return [tuple(runs), tuple(rollups)]


def log_contract_sample(run_logger) -> dict[str, str]:
    """Runs covering the contract: success, FAILED with error tags, LM usage, a fallback, custom names,
    a run still RUNNING."""
    ids = {
        "ok": run_logger.log(start_ms=DAY0_MS + 1_000, intent="transfer", requires_workflow=True,
                             message="send 300 dollars to savings", template_match=True),
        "failed": run_logger.log(start_ms=DAY0_MS + 2_000, intent="out_of_scope", role="admin",
                                 error_category="lm_timeout", confidence=0.0, latency_ms=10_000.0),
        "fallback": run_logger.log(start_ms=DAY0_MS + 3_000, error_category="lm_unavailable", fallback=True,
                                   model="openai/gpt-4o-mini", tokens=(120, 14, 0.00021)),
        "custom": run_logger.log(start_ms=DAY0_MS + 4_000, extra_metrics={"toxicity": 0.02, "judge_score": 4.0},
                                 extra_tags={"ab_bucket": "B"}, extra_params={"temperature": "0.2"}),
        "running": run_logger.log(start_ms=DAY0_MS + 5_000, finish=False),
        "next_day": run_logger.log(start_ms=DAY0_MS + 30 * HOUR_MS, tab="", role="agent", module="travel",
                                   intent="international_visa", latency_ms=0.05),
    }
    return ids


def test_sync_mirrors_every_run_field_by_field(run_logger):
    ids = log_contract_sample(run_logger)

    result = runs_sync()

    assert (result.added, result.updated, result.deleted) == (len(ids), 0, 0)
    # A SQLite store with MLflow 3.17.2's schema: attached to a SQLite mirror, read with SQL into PostgreSQL.
    assert result.source == ("attached" if connection.vendor == "sqlite" else "sql")
    assert_mirror_equals_mlflow(run_logger)
    custom = MirroredRun.objects.get(run_id=ids["custom"])
    assert custom.metrics == {"toxicity": 0.02, "judge_score": 4.0}  # a new metric, no migration
    assert custom.tags["ab_bucket"] == "B" and custom.params == {"temperature": "0.2"}
    failed = MirroredRun.objects.get(run_id=ids["failed"])
    assert (failed.status, failed.is_error, failed.error_category, failed.error_type) == (
        "FAILED", True, "lm_timeout", "TimeoutError")
    fallback = MirroredRun.objects.get(run_id=ids["fallback"])
    assert (fallback.is_error, fallback.fallback_used, fallback.prompt_tokens, fallback.cost_usd) == (
        False, True, 120, 0.00021)
    running = MirroredRun.objects.get(run_id=ids["running"])
    assert (running.status, running.end_time, running.confidence_score) == ("RUNNING", None, None)
    state = SyncState.objects.get()
    assert state.watermark_ms == DAY0_MS + 30 * HOUR_MS
    assert state.mirrored_runs == len(ids) and state.last_error == "" and state.lease_owner == ""
    assert state.newest_start_time == datetime.fromtimestamp((DAY0_MS + 30 * HOUR_MS) / 1000, UTC)
    assert state.lag is not None and state.lag.total_seconds() > 0


def test_second_sync_changes_nothing(run_logger):
    log_contract_sample(run_logger)
    runs_sync()
    written_at = dict(MirroredRun.objects.values_list("run_id", "mirrored_at"))
    before = snapshot()

    again = runs_sync()

    assert (again.added, again.updated, again.deleted) == (0, 0, 0)
    assert again.unchanged == again.runs_read > 0  # the overlap window was read again, nothing differed
    assert snapshot() == before
    assert dict(MirroredRun.objects.values_list("run_id", "mirrored_at")) == written_at  # not even rewritten


def test_a_tag_added_to_an_old_run_after_the_watermark_passed_it_is_mirrored(run_logger, settings):
    settings.ANALYTICS_SYNC_OVERLAP_S = 2 * 3600
    old = run_logger.log(start_ms=DAY0_MS)
    run_logger.log(start_ms=DAY0_MS + HOUR_MS)  # the watermark moves an hour past `old`
    runs_sync()
    assert SyncState.objects.get().watermark_ms == DAY0_MS + HOUR_MS

    run_logger.client.set_tag(old, "feedback", "wrong_intent")
    run_logger.client.log_metric(old, "judge_score", 2.0)
    result = runs_sync()

    assert (result.added, result.updated, result.deleted) == (0, 1, 0)
    row = MirroredRun.objects.get(run_id=old)
    assert row.tags["feedback"] == "wrong_intent" and row.metrics["judge_score"] == 2.0
    assert_mirror_equals_mlflow(run_logger)


def test_a_change_older_than_the_overlap_waits_for_a_full_sync(run_logger, settings):
    settings.ANALYTICS_SYNC_OVERLAP_S = 60
    old = run_logger.log(start_ms=DAY0_MS, intent="balance")
    run_logger.log(start_ms=DAY0_MS + HOUR_MS, intent="pay_bill")
    runs_sync()
    run_logger.client.set_tag(old, "detected_intent", "transfer")  # a relabel, far behind the watermark

    incremental = runs_sync()
    assert incremental.updated == 0
    assert MirroredRun.objects.get(run_id=old).detected_intent == "balance"

    full = runs_sync(full=True)
    assert (full.added, full.updated, full.deleted) == (0, 1, 0)
    assert MirroredRun.objects.get(run_id=old).detected_intent == "transfer"
    assert DailyRollup.objects.get(dimension="intent", value="transfer").runs == 1
    assert not DailyRollup.objects.filter(dimension="intent", value="balance").exists()


def test_a_run_still_running_behind_the_window_is_polled_until_it_ends(run_logger, settings):
    from mlflow.entities import Metric

    settings.ANALYTICS_SYNC_OVERLAP_S = 60
    running = run_logger.log(start_ms=DAY0_MS, finish=False)
    run_logger.log(start_ms=DAY0_MS + 2 * HOUR_MS)  # the next window starts long after `running` did
    runs_sync()
    assert MirroredRun.objects.get(run_id=running).status == "RUNNING"
    run_logger.client.log_batch(running, metrics=[Metric("response_time_ms", 8.0, DAY0_MS + 8, 0)])
    run_logger.client.set_terminated(running, status="FINISHED", end_time=DAY0_MS + 8)

    result = runs_sync()

    assert (result.added, result.updated, result.unchanged) == (0, 1, 1)
    row = MirroredRun.objects.get(run_id=running)
    assert (row.status, row.response_time_ms, ms(row.end_time)) == ("FINISHED", 8.0, DAY0_MS + 8)
    assert DailyRollup.objects.get(dimension="all", day=row.day).latency_count == 2


def test_a_deleted_run_leaves_the_mirror_and_the_rollups_and_returns_when_restored(run_logger, settings):
    settings.ANALYTICS_RECONCILE_INTERVAL_S = 10**9  # no reconcile: the incremental read sees the lifecycle
    keep = run_logger.log(start_ms=DAY0_MS, intent="balance")
    gone = run_logger.log(start_ms=DAY0_MS + 1000, intent="transfer")
    runs_sync()
    assert DailyRollup.objects.get(dimension="all").runs == 2

    run_logger.client.delete_run(gone)
    deleted = runs_sync()

    assert (deleted.added, deleted.updated, deleted.deleted) == (0, 0, 1)
    assert list(MirroredRun.objects.values_list("run_id", flat=True)) == [keep]
    assert DailyRollup.objects.get(dimension="all").runs == 1
    assert not DailyRollup.objects.filter(dimension="intent", value="transfer").exists()
    assert SyncState.objects.get().mirrored_runs == 1

    run_logger.client.restore_run(gone)
    restored = runs_sync()

    assert (restored.added, restored.deleted) == (1, 0)
    assert DailyRollup.objects.get(dimension="all").runs == 2
    assert_mirror_equals_mlflow(run_logger)


def test_runs_deleted_and_restored_behind_the_window_are_caught_by_the_reconcile(run_logger, settings):
    settings.ANALYTICS_SYNC_OVERLAP_S = 60
    settings.ANALYTICS_RECONCILE_INTERVAL_S = 10**9
    old = run_logger.log(start_ms=DAY0_MS)
    run_logger.log(start_ms=DAY0_MS + 2 * HOUR_MS)
    runs_sync()
    run_logger.client.delete_run(old)
    assert runs_sync().deleted == 0  # the incremental window does not reach it

    settings.ANALYTICS_RECONCILE_INTERVAL_S = 0
    reconciled = runs_sync()

    assert reconciled.reconciled and reconciled.deleted == 1
    assert not MirroredRun.objects.filter(run_id=old).exists()
    run_logger.client.restore_run(old)
    back = runs_sync()
    assert back.added == 1 and MirroredRun.objects.filter(run_id=old).exists()
    assert_mirror_equals_mlflow(run_logger)


def test_a_run_removed_by_mlflow_gc_is_removed_by_the_reconcile(run_logger, mlflow_store, settings):
    settings.ANALYTICS_RECONCILE_INTERVAL_S = 10**9
    run_logger.log(start_ms=DAY0_MS, intent="balance")
    victim = run_logger.log(start_ms=DAY0_MS + 1000, intent="transfer")
    runs_sync()
    run_logger.client.delete_run(victim)
    subprocess.run([sys.executable, "-m", "mlflow", "gc", "--backend-store-uri", mlflow_store, "--run-ids", victim],
                   check=True, capture_output=True, timeout=120, env=os.environ | {"MLFLOW_TRACKING_URI": mlflow_store})
    assert victim not in {run.info.run_id for run in run_logger.runs()}  # gone from MLflow for good

    unaware = runs_sync()
    assert unaware.deleted == 0 and MirroredRun.objects.filter(run_id=victim).exists()  # reads cannot see absence

    settings.ANALYTICS_RECONCILE_INTERVAL_S = 0
    reconciled = runs_sync()

    assert reconciled.reconciled and reconciled.deleted == 1
    assert not MirroredRun.objects.filter(run_id=victim).exists()
    assert not DailyRollup.objects.filter(dimension="intent", value="transfer").exists()
    assert DailyRollup.objects.get(dimension="all").runs == 1


def test_full_sync_reconciles_and_rebuilds_every_rollup(run_logger):
    rng = random.Random(7)
    for i in range(20):
        run_logger.log_random(rng, start_ms=DAY0_MS + i * 3 * HOUR_MS)
    runs_sync()
    DailyRollup.objects.filter(dimension="intent").delete()  # rollups damaged behind the sync's back
    MirroredRun.objects.filter(pk__in=MirroredRun.objects.order_by("start_time")[:2].values("pk")).delete()
    before = snapshot()

    result = runs_sync(full=True)

    assert result.added == 2 and result.reconciled
    assert snapshot() != before
    assert_mirror_equals_mlflow(run_logger)
    from tests.analytics.test_rollups import assert_rollups_exact

    assert_rollups_exact()


def test_the_command_prints_a_one_line_summary(run_logger, capsys):
    for i in range(3):
        run_logger.log(start_ms=DAY0_MS + i)

    call_command("sync_mlflow_runs")
    first = capsys.readouterr()
    call_command("sync_mlflow_runs", "--full", "--no-progress")
    second = capsys.readouterr()

    line = first.out.strip()
    assert line.startswith("intent_detection: 3 added, 0 updated, 0 deleted") and "runs/s" in line, line
    assert "3/3" in first.err  # the tqdm bar, on stderr
    assert second.out.strip().startswith("intent_detection: 0 added, 0 updated, 0 deleted")
    assert second.err == ""


def test_the_command_says_its_result_once_and_no_log_line_crosses_the_bar(run_logger):
    """As a user sees it (a process of its own, logging configured as in production): the summary once, on
    stdout; stderr holds the bar and no copy of the summary."""
    for i in range(3):
        run_logger.log(start_ms=DAY0_MS + i)
    done = subprocess.run([sys.executable, "manage.py", "sync_mlflow_runs"], env=child_env(LOG_LEVEL="INFO"),
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    everything = done.stdout + done.stderr
    assert everything.count("3 added, 0 updated, 0 deleted") == 1, everything
    assert done.stdout.strip().startswith("intent_detection: 3 added") and "Mirror sync:" not in everything


def test_the_command_syncs_another_experiment_by_name(run_logger, capsys):
    other = run_logger.client.create_experiment("shadow_detection")
    run_logger.log(start_ms=DAY0_MS)
    shadow = type(run_logger)(client=run_logger.client, experiment_id=other)
    shadow.log(start_ms=DAY0_MS)
    shadow.log(start_ms=DAY0_MS + 1)

    call_command("sync_mlflow_runs", "--experiment", "shadow_detection", "--no-progress")

    assert capsys.readouterr().out.startswith("shadow_detection: 2 added")
    assert set(MirroredRun.objects.values_list("experiment_id", flat=True)) == {other}
    assert DailyRollup.objects.get(dimension="all", experiment_id=other).runs == 2
    assert runs_sync().added == 1  # the default experiment is mirrored on its own
    assert DailyRollup.objects.filter(dimension="all").count() == 2


def test_an_experiment_mlflow_does_not_have_yet_syncs_nothing(mlflow_store):
    result = runs_sync(experiment_name="not_created_yet")
    assert (result.added, result.runs_read, result.skipped) == (0, 0, False)
    assert SyncState.objects.get(experiment_name="not_created_yet").last_succeeded_at is not None


def test_a_nan_metric_and_malformed_contract_values_are_kept_not_lost(run_logger):
    run_id = run_logger.log(start_ms=DAY0_MS, extra_metrics={"confidence_score": math.nan, "drift": math.nan},
                            extra_params={"message_length": "unknown"}, extra_tags={"fallback_used": "maybe"})
    runs_sync()
    row = MirroredRun.objects.get(run_id=run_id)
    # JSON has no NaN: null says "logged, but NaN", and the typed column is empty
    assert row.confidence_score is None and row.metrics == {"confidence_score": None, "drift": None}
    assert row.message_length is None and row.params == {"message_length": "unknown"}
    assert row.fallback_used is None and row.tags["fallback_used"] == "maybe"


def test_a_row_edited_behind_the_syncs_back_is_repaired_by_a_full_sync(run_logger):
    ids = log_contract_sample(run_logger)
    runs_sync()
    MirroredRun.objects.filter(run_id=ids["ok"]).update(detected_intent="tampered", confidence_score=0.0)

    incremental = runs_sync()  # same MLflow content (same digest): the row is not even looked at
    assert incremental.updated == 0 and MirroredRun.objects.get(run_id=ids["ok"]).detected_intent == "tampered"
    full = runs_sync(full=True)  # compares every column in the database

    assert (full.added, full.updated, full.deleted) == (0, 1, 0)
    assert_mirror_equals_mlflow(run_logger)


def test_an_incremental_read_of_a_sqlite_store_starts_at_the_tail_of_its_runs_table(run_logger, mlflow_store,
                                                                                     settings):
    settings.ANALYTICS_SYNC_OVERLAP_S = 3600
    settings.ANALYTICS_RECONCILE_INTERVAL_S = 10**9
    path = mlflow_store.removeprefix("sqlite:///")
    early = [run_logger.log(start_ms=DAY0_MS + i * HOUR_MS) for i in range(6)]  # rowids 1..6
    runs_sync()

    def rowid(run_id: str) -> int:
        with sqlite3.connect(path) as conn:
            return conn.execute("SELECT rowid FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()[0]

    # The next window starts an hour before the newest run: the newest two runs, from its rowid on.
    position = SyncState.objects.get().source_position
    assert position["rowid_floor"] == rowid(early[4]) and position["rowid_max"] == rowid(early[5])
    late = run_logger.log(start_ms=DAY0_MS + 5 * HOUR_MS - 1)  # logged late: an old start time, a new rowid
    run_logger.client.set_tag(early[5], "feedback", "ok")  # a change inside the window
    run_logger.client.set_tag(early[0], "feedback", "ok")  # a change behind it: not read again

    result = runs_sync()

    assert (result.runs_read, result.added, result.updated) == (3, 1, 1)  # early[4], early[5], late
    assert MirroredRun.objects.get(run_id=late).run_id == late
    assert MirroredRun.objects.get(run_id=early[5]).tags["feedback"] == "ok"
    assert "feedback" not in MirroredRun.objects.get(run_id=early[0]).tags

    # `mlflow gc` removes the run of the highest rowid: the table's highest rowid goes down (as when a VACUUM
    # renumbers rows), so the noted position is not trusted and the whole table is read again.
    run_logger.client.delete_run(late)
    subprocess.run([sys.executable, "-m", "mlflow", "gc", "--backend-store-uri", mlflow_store, "--run-ids", late],
                   check=True, capture_output=True, timeout=120, env=os.environ | {"MLFLOW_TRACKING_URI": mlflow_store})
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT MAX(rowid) FROM runs").fetchone()[0] < position["rowid_max"] + 1
    newest = run_logger.log(start_ms=DAY0_MS + 5 * HOUR_MS + 1)

    settings.ANALYTICS_RECONCILE_INTERVAL_S = 0
    result = runs_sync()

    assert (result.added, result.deleted) == (1, 1) and MirroredRun.objects.filter(run_id=newest).exists()
    assert SyncState.objects.get().source_position["rowid_max"] == rowid(newest)
    assert not MirroredRun.objects.filter(run_id=late).exists()
