"""The SQL fast path and the client path read the same runs and build the same mirror; the SQL path is
used only on the MLflow schema it was written for."""

from __future__ import annotations

import math
import random
import shutil
import sqlite3

import pytest

from analytics.mlflow_source import (
    MLFLOW_SCHEMA_REVISION,
    ClientRunSource,
    MlflowSourceError,
    SqlRunSource,
    run_source_get,
)
from analytics.models import DailyRollup, MirroredRun, SyncState
from analytics.services import runs_sync
from tests.analytics.conftest import DAY0_MS, HOUR_MS
from tests.analytics.test_sync import snapshot

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


def test_client_path_and_sql_path_build_the_same_mirror(run_logger, settings):
    log_mixed(run_logger)
    settings.ANALYTICS_SYNC_PAGE_SIZE = 9
    settings.ANALYTICS_SYNC_SOURCE = "client"
    by_client = runs_sync()
    mirror_by_client = snapshot()
    MirroredRun.objects.all().delete()
    DailyRollup.objects.all().delete()
    SyncState.objects.all().delete()

    settings.ANALYTICS_SYNC_SOURCE = "auto"
    by_sql = runs_sync()

    assert (by_client.source, by_sql.source) == ("client", "sql")
    assert by_client.added == by_sql.added == 43
    assert snapshot() == mirror_by_client
    run_logger.client.set_tag(run_logger.runs()[0].info.run_id, "feedback", "late")
    settings.ANALYTICS_SYNC_SOURCE = "client"
    assert runs_sync().updated == 1  # the client path also picks up what the SQL path wrote before


def test_the_sql_path_is_used_only_on_the_schema_it_knows(mlflow_store, tmp_path):
    assert isinstance(run_source_get(uri=mlflow_store), SqlRunSource)
    assert isinstance(run_source_get(uri=mlflow_store, kind="client"), ClientRunSource)

    other = tmp_path / "migrated-by-a-newer-mlflow.db"
    shutil.copy(mlflow_store.removeprefix("sqlite:///"), other)
    with sqlite3.connect(other) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] != MLFLOW_SCHEMA_REVISION
    conn.close()

    assert isinstance(run_source_get(uri=f"sqlite:///{other}"), ClientRunSource)
    with pytest.raises(MlflowSourceError):
        run_source_get(uri=f"sqlite:///{other}", kind="sql")
    assert isinstance(run_source_get(uri="http://127.0.0.1:9"), ClientRunSource)
