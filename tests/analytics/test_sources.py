"""The SQL fast path and the client path read the same runs and build the same mirror; the SQL path is
used only on the MLflow schema it was written for."""

from __future__ import annotations

import math
import random
import shutil
import sqlite3

import pytest
from django.db import connection

from analytics.mirror.sources import run_source_get
from analytics.mirror.sources.attached import AttachedRunSource
from analytics.mirror.sources.base import MLFLOW_SCHEMA_REVISION, MlflowSourceError
from analytics.mirror.sources.client import ClientRunSource
from analytics.mirror.sources.sql import SqlRunSource
from analytics.mirror.sync import _attachable, runs_sync
from analytics.models import DailyRollup, MirroredRun, SyncState
from tests.analytics.conftest import DAY0_MS, HOUR_MS
from tests.analytics.test_sync import assert_mirror_equals_mlflow, snapshot

pytestmark = pytest.mark.django_db


def log_mixed(run_logger) -> None:
    rng = random.Random(9)
    ids = [run_logger.log_random(rng, start_ms=DAY0_MS + i * HOUR_MS) for i in range(40)]
    run_logger.log(start_ms=DAY0_MS + 3, finish=False)  # RUNNING, no metrics yet
    run_logger.log(start_ms=DAY0_MS + 5, extra_metrics={"drift": math.nan, "huge": math.inf},
                   extra_tags={"feedback": "ok"}, extra_params={"temperature": "0.7"})
    run_logger.log(start_ms=DAY0_MS + 7)  # same millisecond as another run: paging must keep both
    run_logger.log(start_ms=DAY0_MS + 7)
    run_logger.client.delete_run(ids[3])


def comparable(runs) -> list:
    def metric(value: float):
        return "nan" if math.isnan(value) else value

    return sorted((r.run_id, r.experiment_id, r.status, r.lifecycle, r.start_time, r.end_time, sorted(r.tags.items()),
                   sorted(r.params.items()), sorted((k, metric(v)) for k, v in r.metrics.items())) for r in runs)


def test_both_paths_read_the_same_runs_page_by_page(run_logger, mlflow_store):
    log_mixed(run_logger)
    client, sql = ClientRunSource(mlflow_store), SqlRunSource(mlflow_store)
    experiment_id = run_logger.experiment_id
    assert sql.experiment_id_get("intent_detection") == client.experiment_id_get("intent_detection") == experiment_id
    assert sql.experiment_id_get("nope") is None and client.experiment_id_get("nope") is None

    for since in (None, DAY0_MS + 7, DAY0_MS + 10 * HOUR_MS):
        via_client = [run for page in client.runs_read(experiment_id=experiment_id, since_ms=since, page_size=7)
                      for run in page]
        via_sql = [run for page in sql.runs_read(experiment_id=experiment_id, since_ms=since, page_size=7)
                   for run in page]
        assert comparable(via_sql) == comparable(via_client)
        assert len({run.run_id for run in via_sql}) == len(via_sql)  # no page repeats a run
        assert sql.runs_count(experiment_id=experiment_id, since_ms=since) == len(via_sql)
    some = [run.run_id for run in via_sql[:5]] + ["0" * 32]
    assert comparable(sql.runs_get(experiment_id=experiment_id, run_ids=some)) == comparable(
        client.runs_get(experiment_id=experiment_id, run_ids=some))
    assert sql.run_ids_list(experiment_id=experiment_id) == client.run_ids_list(experiment_id=experiment_id)
    assert list(sql.run_ids_list(experiment_id=experiment_id).values()).count("deleted") == 1


# Values at the edges of the mapping: too long for their column, neither boolean, integers that are not
# ASCII digits or not 32-bit, metrics neither whole nor finite, text that JSON must escape.
EDGE_CASES = [
    dict(extra_tags={"detected_intent": "x" * 201, "fallback_used": "True", "status": "partial",
                     "expected_intent": "y" * 201, "note": 'quote " backslash \\ tab \t line \n ctrl \x01 é 漢 😀'},
         extra_params={"message_length": "+5", "message_word_count": "99999999999", "requires_workflow": "yes"},
         extra_metrics={"available_workflow_templates": 2.5, "prompt_tokens": 1e12, "is_correct": 0.5,
                        "precise": 0.1 + 0.2, "tiny": 5e-324, "big": 1.7976931348623157e308}),
    dict(extra_tags={"user_role": "r" * 200, "expected_intent": "balance", "fallback_used": "False"},
         extra_params={"message_length": "-0", "message_word_count": "007", "requires_workflow": "True"},
         extra_metrics={"is_correct": 1.0, "completion_tokens": -3.0, "available_agent_templates": math.inf,
                        "confidence_score": math.nan, "huge": -math.inf, "drift": math.nan}),
    dict(extra_params={"message_length": " 5", "message_word_count": "1_000"},
         extra_metrics={"is_correct": 0.0, "prompt_tokens": 2147483648.0, "completion_tokens": -2147483648.0}),
    dict(extra_params={"message_length": "2147483647", "message_word_count": "-2147483649"},
         extra_tags={"status": "error", "mlflow.note.content": "{}[]"}),
    dict(extra_params={"message_length": "\u0661\u0662", "message_word_count": "12a"}, latency_ms=0.0999999,
         extra_metrics={"response_time_ms": math.nan}),
    dict(latency_ms=100_000.0, extra_metrics={"response_time_ms": 100_000.0, "cost_usd": 1e-12}),
]


def columns_as_stored() -> list[tuple]:
    """The mirror's rows as SQL text and numbers, exactly as stored (what the upsert's change test compares)."""
    names = [f.column for f in MirroredRun._meta.concrete_fields if f.name not in {"id", "mirrored_at", "source_digest"}]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(names)} FROM {MirroredRun._meta.db_table} ORDER BY run_id")
        return cursor.fetchall()


def mirror_reset() -> None:
    MirroredRun.objects.all().delete()
    DailyRollup.objects.all().delete()
    SyncState.objects.all().delete()


@pytest.mark.django_db(transaction=True)  # the attached path reads outside a transaction
def test_every_path_builds_the_same_mirror_edge_cases_included(run_logger, settings):
    log_mixed(run_logger)
    for case in EDGE_CASES:
        run_logger.log(start_ms=DAY0_MS + 9, **case)
    settings.ANALYTICS_SYNC_PAGE_SIZE = 9
    paths = ["client", "sql"] + (["attached"] if connection.vendor == "sqlite" else [])
    # By default: attached when the mirror is SQLite too (and the caller outside a transaction), else SQL.
    assert type(run_source_get(attachable=_attachable())) is (
        AttachedRunSource if connection.vendor == "sqlite" else SqlRunSource)
    if connection.vendor != "sqlite":
        with pytest.raises(MlflowSourceError):
            run_source_get(attachable=_attachable(), kind="attached")
    results, mirrors, stored = {}, {}, {}
    for path in paths:
        mirror_reset()
        settings.ANALYTICS_SYNC_SOURCE = path
        results[path] = runs_sync()
        mirrors[path], stored[path] = snapshot(), columns_as_stored()

    assert [results[path].source for path in paths] == paths
    assert {results[path].added for path in paths} == {43 + len(EDGE_CASES)}
    for path in paths[1:]:
        assert mirrors[path] == mirrors["client"], path
        assert stored[path] == stored["client"], path  # the very same text: dates, JSON, numbers
    edge = MirroredRun.objects.get(detected_intent="", tags__note__startswith="quote")
    assert edge.tags["detected_intent"] == "x" * 201 and edge.expected_intent is None
    assert (edge.message_length, edge.message_word_count, edge.tags["status"]) == (None, None, "partial")
    assert edge.metrics["precise"] == 0.1 + 0.2 and edge.metrics["is_correct"] == 0.5
    assert MirroredRun.objects.filter(message_length=2147483647, message_word_count=None, is_error=True).count() == 1

    # A late tag, then every path in turn: the content each writes is the same, so each finds the rows of
    # the others equal (a Python path only adds its digests to rows the attached one wrote).
    run_logger.client.set_tag(run_logger.runs()[0].info.run_id, "feedback", "late")
    settings.ANALYTICS_SYNC_SOURCE = paths[-1]
    assert runs_sync(full=True).updated == 1
    assert_mirror_equals_mlflow(run_logger)
    after = columns_as_stored()
    for path in paths:
        settings.ANALYTICS_SYNC_SOURCE = path
        runs_sync(full=True)
        assert columns_as_stored() == after, path
    assert runs_sync(full=True).updated == 0


def test_the_sql_path_is_used_only_on_the_schema_it_knows(mlflow_store, tmp_path):
    assert isinstance(run_source_get(attachable=False, uri=mlflow_store), SqlRunSource)
    assert isinstance(run_source_get(attachable=False, uri=mlflow_store, kind="client"), ClientRunSource)

    other = tmp_path / "migrated-by-a-newer-mlflow.db"
    shutil.copy(mlflow_store.removeprefix("sqlite:///"), other)
    with sqlite3.connect(other) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] != MLFLOW_SCHEMA_REVISION
    conn.close()

    assert isinstance(run_source_get(attachable=False, uri=f"sqlite:///{other}"), ClientRunSource)
    with pytest.raises(MlflowSourceError):
        run_source_get(attachable=False, uri=f"sqlite:///{other}", kind="sql")
    assert isinstance(run_source_get(attachable=False, uri="http://127.0.0.1:9"), ClientRunSource)
