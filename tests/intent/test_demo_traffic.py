"""seed_demo_traffic: demo traffic through the real detection service, MLflow store, feedback and mirror."""

from __future__ import annotations

import time
from collections import Counter
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from mlflow.tracking import MlflowClient

from analytics.mirror.sources import sources_reset
from analytics.models import MirroredRun
from intent import tracking

pytestmark = pytest.mark.django_db
DAY_MS = 86_400_000


@pytest.fixture(autouse=True)
def fresh_sources():
    sources_reset()
    yield
    sources_reset()


def seed(*args: str) -> str:
    out = StringIO()
    call_command("seed_demo_traffic", "--no-progress", *args, stdout=out)
    return out.getvalue()


def detection_runs(uri: str) -> list:
    return MlflowClient(tracking_uri=uri).search_runs([tracking.experiment_id_get()], max_results=10_000)


def test_a_month_of_demo_traffic_reaches_mlflow_and_the_mirror(small_catalog, mlflow_store):
    # given: the demo user, an empty store
    call_command("create_demo_user", stdout=StringIO())
    before_ms = int(time.time() * 1000)

    # when
    output = seed("--days", "3", "--per-day", "20")

    # then: 60 runs, started over the 3 days before now
    runs = detection_runs(mlflow_store)
    assert len(runs) == 60, output
    starts = sorted(run.info.start_time for run in runs)
    assert before_ms - 3 * DAY_MS <= starts[0] and starts[-1] <= int(time.time() * 1000)
    assert starts[-1] - starts[0] > 1.5 * DAY_MS
    assert len({start // DAY_MS for start in starts}) >= 3
    tags = [run.data.tags for run in runs]
    assert {tag["current_module"] for tag in tags} <= {"banking", "travel", ""}
    assert Counter(tag["user_role"] for tag in tags).most_common(1)[0][0] == "customer"
    # 10 % through the unreachable LM: failed at once, answered by the local fallback
    failed = [run for run in runs if run.data.tags.get("error_category") == "lm_unavailable"]
    assert len(failed) == 6
    assert all(run.data.tags["answered_by"] == "local/tfidf-linear" and run.data.tags["fallback_used"] == "true"
               and run.data.params["model_name"] == "openai/gpt-4o-mini" for run in failed)
    assert {run.data.params["model_name"] for run in runs if run not in failed} == {"local/tfidf-linear"}
    # some out-of-scope, and 5 % labelled with the dataset's true intent
    assert any(tag["detected_intent"] == "out_of_scope" for tag in tags)
    labelled = [run for run in runs if "expected_intent" in run.data.tags]
    assert len(labelled) == 3
    assert all(run.data.metrics["is_correct"] == float(run.data.tags["expected_intent"]
                                                        == run.data.tags["detected_intent"]) for run in labelled)
    # mirrored, labels included
    mirrored = MirroredRun.objects.filter(experiment_id=tracking.experiment_id_get())
    assert mirrored.count() == 60
    assert mirrored.filter(is_correct__isnull=False).count() == 3
    assert "detections     60" in output and "runs written   60" in output and "60 runs mirrored" in output


def test_a_store_with_runs_is_seeded_again_only_with_force(small_catalog, mlflow_store):
    call_command("create_demo_user", stdout=StringIO())
    seed("--days", "1", "--per-day", "20")

    with pytest.raises(CommandError, match="already holds runs"):
        seed("--days", "1", "--per-day", "20")
    assert "already holds runs" in seed("--days", "1", "--per-day", "20", "--if-empty")
    assert len(detection_runs(mlflow_store)) == 20

    seed("--days", "2", "--per-day", "5", "--force", "--seed", "1")
    assert len(detection_runs(mlflow_store)) == 30
    assert MirroredRun.objects.filter(experiment_id=tracking.experiment_id_get()).count() == 30


@pytest.mark.parametrize("args", [["--days", "0"], ["--days", "366"], ["--per-day", "10001"], ["--lm-share", "2"]])
def test_out_of_range_arguments_are_refused(args):
    with pytest.raises(CommandError, match="invalid"):
        seed(*args)


def test_an_unknown_user_is_refused_politely(small_catalog, mlflow_store):
    with pytest.raises(CommandError, match="create_demo_user"):
        seed("--days", "1", "--per-day", "1", "--user", "nobody")
