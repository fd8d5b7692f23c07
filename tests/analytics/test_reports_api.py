"""The analytics reports over HTTP against known mirrored data: exact numbers, filters (rollup and raw
paths), percentiles, CSV export. Bad parameters, permissions and the schema: test_reports_params.py."""

from __future__ import annotations

import csv
import io
import math
import random
from datetime import UTC, date, datetime, timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from rest_framework.test import APIClient

from analytics.mirror.rollups import rollups_refresh
from analytics.mirror.sketch import RELATIVE_ACCURACY, sketch_key
from analytics.models import MirroredRun, SyncState
from tests.analytics.reference import nearest_rank

pytestmark = pytest.mark.django_db

EXPERIMENT_ID = "1"
BASE = "/api/analytics/mlflow/"
ENDPOINTS = ("overview", "trends", "errors", "model-comparison", "prompt-analysis", "report", "confusion")
LOCAL, GPT = "local/tfidf-linear", "openai/gpt-4o-mini"


def today() -> date:
    return timezone.now().astimezone(UTC).date()


def at(days_ago: int, hour: int) -> datetime:
    return datetime.combine(today() - timedelta(days=days_ago), datetime.min.time(), tzinfo=UTC) + timedelta(
        hours=hour)


def mirrored(run_id: str, *, start: datetime, experiment_id: str = EXPERIMENT_ID, intent: str = "balance",
             role: str = "customer", module: str = "banking", model: str = LOCAL, prompt_version: str = "v1",
             confidence: float | None = 0.9, latency_ms: float | None = 1.0, error_category: str = "",
             error_type: str = "", is_error: bool = False, fallback: bool = False, template_match: bool = False,
             tokens: tuple[int, int, float] | None = None, expected: str | None = None,
             correct: bool | None = None, **fields) -> MirroredRun:
    return MirroredRun(
        run_id=run_id, experiment_id=experiment_id, status="FAILED" if is_error else "FINISHED", start_time=start,
        end_time=start + timedelta(milliseconds=latency_ms or 1), day=start.date(), detected_intent=intent,
        user_role=role, current_module=module, model_name=model, prompt_version=prompt_version,
        answered_by=fields.pop("answered_by", LOCAL if fallback else model),
        request_id=f"req-{run_id}", fallback_used=fallback, error_category=error_category, error_type=error_type,
        is_error=is_error, confidence_score=confidence, response_time_ms=latency_ms,
        template_match_rate=1.0 if template_match else 0.0, prompt_tokens=tokens[0] if tokens else None,
        completion_tokens=tokens[1] if tokens else None, cost_usd=tokens[2] if tokens else None,
        latency_bucket=sketch_key(latency_ms), expected_intent=expected, is_correct=correct,
        mirrored_at=timezone.now(), **fields)


def mirror(runs: list[MirroredRun], *, experiment_name: str | None = None, experiment_id: str = EXPERIMENT_ID):
    """Rows into the mirror, their days' rollups recomputed, the experiment's sync state in place."""
    MirroredRun.objects.bulk_create(runs)
    SyncState.objects.update_or_create(experiment_name=experiment_name or settings.MLFLOW_EXPERIMENT_NAME,
                                       defaults={"experiment_id": experiment_id})
    rollups_refresh(experiment_id=experiment_id, days={run.day for run in runs})


@pytest.fixture
def known_runs() -> dict[str, MirroredRun]:
    """Seven runs on four days (today, 1, 3 and 10 days ago): the numbers below are worked out by hand."""
    runs = {
        "r1": mirrored("r1", start=at(0, 8), confidence=0.9, latency_ms=1.0),
        "r2": mirrored("r2", start=at(0, 9), intent="transfer", role="admin", model=GPT, prompt_version="v2",
                       confidence=0.7, latency_ms=500.0, tokens=(100, 10, 0.001), template_match=True),
        "r3": mirrored("r3", start=at(0, 10), intent="out_of_scope", module="travel", model=GPT, prompt_version="v2",
                       confidence=0.2, latency_ms=2000.0, error_category="lm_timeout", error_type="TimeoutError",
                       is_error=True),
        "r4": mirrored("r4", start=at(1, 8), confidence=0.8, latency_ms=2.0, expected="balance", correct=True),
        "r5": mirrored("r5", start=at(1, 9), intent="transfer", module="travel", confidence=0.6, latency_ms=3.0,
                       error_category="lm_unavailable", error_type="ConnectionError", fallback=True,
                       expected="balance", correct=False),
        "r6": mirrored("r6", start=at(3, 8), role="agent", model=GPT, prompt_version="v2", confidence=1.0,
                       latency_ms=800.0, tokens=(200, 20, 0.002), error_category="parse_error",
                       error_type="ValueError", is_error=True),
        "r7": mirrored("r7", start=at(10, 8), confidence=0.5, latency_ms=4.0),
    }
    mirror(list(runs.values()))
    return runs


def get(client: APIClient, endpoint: str, **params) -> dict:
    response = client.get(BASE + endpoint, params)
    assert response.status_code == 200, response.content
    return response.json()


def close(value, expected, rel: float = 1e-9) -> bool:
    return value is not None and math.isclose(value, expected, rel_tol=rel, abs_tol=1e-12)


def within_one_percent(estimate: float | None, exact: float) -> bool:
    """What the latency sketch promises: within 1 % of the exact nearest-rank percentile."""
    return estimate is not None and abs(estimate - exact) <= (RELATIVE_ACCURACY + 1e-12) * exact


# --- Each endpoint against known data -----------------------------------------------------------------------

def test_overview_of_the_last_7_days(staff_client, known_runs):
    body = get(staff_client, "overview")
    assert body["period"] == {"days": 7, "since": (today() - timedelta(days=6)).isoformat(),
                              "until": today().isoformat()}
    assert body["filters"] == {}
    assert body["total_runs"] == 6  # r7 is 10 days old
    assert close(body["success_rate"], 4 / 6) and close(body["error_rate"], 2 / 6)
    assert close(body["avg_confidence"], 4.2 / 6)
    latency = body["response_time_ms"]
    assert close(latency["avg"], 3306 / 6, rel=1e-6)
    # nearest rank of [1, 2, 3, 500, 800, 2000]: p50 = 3, p95 = p99 = 2000
    assert within_one_percent(latency["p50"], 3.0) and within_one_percent(latency["p95"], 2000.0)
    assert within_one_percent(latency["p99"], 2000.0)
    assert close(body["template_match_rate"], 1 / 6) and close(body["out_of_scope_rate"], 1 / 6)
    assert close(body["fallback_rate"], 1 / 6)
    assert body["tokens"] == {"prompt": 300, "completion": 30, "total": 330}
    assert close(body["cost_usd"], 0.003)
    assert body["labelled_runs"] == 2 and close(body["accuracy"], 0.5)
    assert [(row["intent"], row["runs"]) for row in body["intent_distribution"]] == [
        ("balance", 3), ("transfer", 2), ("out_of_scope", 1)]
    assert close(body["intent_distribution"][0]["share"], 0.5)
    assert [(row["user_role"], row["runs"]) for row in body["user_roles"]] == [
        ("customer", 4), ("admin", 1), ("agent", 1)]
    assert [(row["module"], row["runs"]) for row in body["modules"]] == [("banking", 4), ("travel", 2)]


def test_overview_of_an_empty_period_has_nulls_not_errors(staff_client, known_runs):
    body = get(staff_client, "overview", days=1, until=(today() - timedelta(days=2)).isoformat())
    assert body["total_runs"] == 0
    assert body["success_rate"] is None and body["avg_confidence"] is None and body["accuracy"] is None
    assert body["response_time_ms"] == {"avg": None, "p50": None, "p95": None, "p99": None}
    assert body["intent_distribution"] == []


def test_trends_have_one_row_per_day_oldest_first_with_empty_days(staff_client, known_runs):
    days = get(staff_client, "trends")["days"]
    assert len(days) == 30
    assert days[0]["day"] == (today() - timedelta(days=29)).isoformat() and days[-1]["day"] == today().isoformat()
    by_day = {row["day"]: row for row in days}
    assert [by_day[(today() - timedelta(days=n)).isoformat()]["runs"] for n in (0, 1, 2, 3, 10)] == [3, 2, 0, 1, 1]
    now = by_day[today().isoformat()]
    assert close(now["success_rate"], 2 / 3) and close(now["avg_confidence"], 0.6)
    assert close(now["out_of_scope_rate"], 1 / 3)
    assert within_one_percent(now["p50_ms"], 500.0) and within_one_percent(now["p95_ms"], 2000.0)
    empty = by_day[(today() - timedelta(days=2)).isoformat()]
    assert empty == {"day": empty["day"], "runs": 0, "success_rate": None, "avg_confidence": None, "p50_ms": None,
                     "p95_ms": None, "out_of_scope_rate": None, "error_rate": None}


def test_errors_by_category_type_day_and_latest_with_mlflow_links(staff_client, known_runs, settings):
    settings.MLFLOW_UI_URL = "http://mlflow.example:5000"
    body = get(staff_client, "errors")
    assert body["period"]["days"] == 7
    assert body["total_errors"] == 2 and close(body["error_rate"], 2 / 6)
    assert body["by_category"] == [
        {"error_category": "lm_timeout", "count": 1, "fallbacks": 0, "runs": 1},
        {"error_category": "parse_error", "count": 1, "fallbacks": 0, "runs": 1},
        {"error_category": "lm_unavailable", "count": 0, "fallbacks": 1, "runs": 1},
    ]
    assert body["by_type"] == [
        {"error_type": "TimeoutError", "error_category": "lm_timeout", "count": 1, "sample_run_id": "r3"},
        {"error_type": "ValueError", "error_category": "parse_error", "count": 1, "sample_run_id": "r6"},
    ]
    per_day = {row["day"]: row for row in body["per_day"]}
    assert len(per_day) == 7
    assert per_day[today().isoformat()]["errors"] == 1 and close(per_day[today().isoformat()]["error_rate"], 1 / 3)
    assert per_day[(today() - timedelta(days=3)).isoformat()] == {
        "day": (today() - timedelta(days=3)).isoformat(), "runs": 1, "errors": 1, "error_rate": 1.0}
    assert [row["run_id"] for row in body["latest"]] == ["r3", "r6"]
    assert body["latest"][0]["mlflow_url"] == "http://mlflow.example:5000/#/experiments/1/runs/r3"
    assert body["latest"][0]["request_id"] == "req-r3" and body["latest"][0]["error_type"] == "TimeoutError"


def test_without_mlflow_ui_url_runs_have_no_link(staff_client, known_runs, settings):
    settings.MLFLOW_UI_URL = ""
    assert [row["mlflow_url"] for row in get(staff_client, "errors")["latest"]] == [None, None]


def test_model_comparison(staff_client, known_runs):
    models = {row["model_name"]: row for row in get(staff_client, "model-comparison")["models"]}
    assert list(models) == [LOCAL, GPT]  # most runs first
    local, gpt = models[LOCAL], models[GPT]
    assert local["runs"] == 4 and local["success_rate"] == 1.0 and close(local["avg_confidence"], 0.7)
    assert close(local["fallback_rate"], 0.25) and local["labelled_runs"] == 2 and close(local["accuracy"], 0.5)
    assert local["prompt_tokens"] == 0 and local["cost_usd"] == 0
    assert gpt["runs"] == 3 and close(gpt["success_rate"], 1 / 3)
    assert (gpt["prompt_tokens"], gpt["completion_tokens"]) == (300, 30) and close(gpt["cost_usd"], 0.003)
    assert within_one_percent(gpt["p50_ms"], 800.0) and within_one_percent(gpt["p95_ms"], 2000.0)
    assert gpt["labelled_runs"] == 0 and gpt["accuracy"] is None


def test_one_error_type_in_two_categories_is_two_rows(staff_client):
    """The same exception type can mean a timeout or an unreachable LM: types are grouped with their category."""
    runs = [mirrored(f"t{i}", start=at(0, i), model=GPT, error_category="lm_timeout", error_type="LMTransportError",
                     is_error=True) for i in range(2)]
    runs += [mirrored(f"u{i}", start=at(1, i), model=GPT, error_category="lm_unavailable",
                      error_type="LMTransportError", is_error=True) for i in range(3)]
    mirror(runs)
    body = get(staff_client, "errors")
    assert [(row["error_category"], row["count"]) for row in body["by_category"]] == [
        ("lm_unavailable", 3), ("lm_timeout", 2)]
    assert [(row["error_type"], row["error_category"], row["count"], row["sample_run_id"]) for row in
            body["by_type"]] == [("LMTransportError", "lm_unavailable", 3, "u2"),
                                 ("LMTransportError", "lm_timeout", 2, "t1")]
    # the same through the raw rows (two filters)
    raw = get(staff_client, "errors", model_name=GPT, module="banking")
    assert [(row["error_category"], row["count"]) for row in raw["by_type"]] == [("lm_unavailable", 3),
                                                                                 ("lm_timeout", 2)]


def test_fallback_answers_are_not_credited_to_the_lm(staff_client):
    """An LM that failed 3 times out of 5: its success rate, fallback rate, and the confidence and latency of its
    own answers apart from those the local backend gave in its place."""
    own = [mirrored(f"o{i}", start=at(0, i), model=GPT, confidence=0.6 + 0.1 * i, latency_ms=700.0 + 100 * i)
           for i in range(2)]
    fallbacks = [mirrored(f"f{i}", start=at(0, 5 + i), model=GPT, answered_by=LOCAL, fallback=True, confidence=0.98,
                          latency_ms=10_000.0 + i, error_category="lm_timeout", error_type="LMTimeoutError",
                          is_error=True) for i in range(3)]
    mirror(own + fallbacks)
    for body in (get(staff_client, "model-comparison"), get(staff_client, "report")["model_comparison"],
                 get(staff_client, "model-comparison", model_name=GPT, module="banking")):  # rollups and raw rows
        (gpt,) = body["models"]
        assert gpt["model_name"] == GPT and gpt["runs"] == 5
        assert close(gpt["lm_success_rate"], 2 / 5) and close(gpt["fallback_rate"], 3 / 5)
        assert gpt["own_answers"]["runs"] == 2 and close(gpt["own_answers"]["avg_confidence"], 0.65)
        assert close(gpt["avg_confidence"], 0.65) and within_one_percent(gpt["p95_ms"], 800.0)
        assert gpt["fallback_answers"]["runs"] == 3 and close(gpt["fallback_answers"]["avg_confidence"], 0.98)
        assert within_one_percent(gpt["fallback_answers"]["p50_ms"], 10_001.0)


def test_prompt_analysis_newest_version_first(staff_client, known_runs):
    versions = get(staff_client, "prompt-analysis")["versions"]
    assert [row["prompt_version"] for row in versions] == ["v2", "v1"]  # v2 ran last (r3, today 10:00)
    v2, v1 = versions
    assert v2["runs"] == 3 and close(v2["error_rate"], 2 / 3) and close(v2["out_of_scope_rate"], 1 / 3)
    assert datetime.fromisoformat(v2["first_seen"]) == known_runs["r6"].start_time
    assert datetime.fromisoformat(v2["last_seen"]) == known_runs["r3"].start_time
    assert close(v2["avg_ms"], 3300 / 3) and within_one_percent(v2["p95_ms"], 2000.0)
    assert v1["runs"] == 4 and v1["labelled_runs"] == 2 and close(v1["accuracy"], 0.5)
    assert datetime.fromisoformat(v1["first_seen"]) == known_runs["r7"].start_time
    assert v1["evaluation"] is None and v2["evaluation"] is None


def test_report_holds_every_part_and_the_sla_lines(staff_client, known_runs, settings):
    settings.ANALYTICS_SLA_P95_MS = 1000
    settings.ANALYTICS_SLA_ERROR_RATE = 0.01
    body = get(staff_client, "report")
    assert body["period"]["days"] == 30
    assert body["overview"]["total_runs"] == 7
    assert len(body["trends"]["days"]) == 30
    assert body["errors"]["total_errors"] == 2
    assert [row["model_name"] for row in body["model_comparison"]["models"]] == [LOCAL, GPT]
    assert [row["prompt_version"] for row in body["prompt_analysis"]["versions"]] == ["v2", "v1"]
    # Days with runs: today (p95 2000 ms, 1/3 errors), -1 (3 ms, none), -3 (800 ms, 1/1 errors), -10 (4 ms, none)
    assert body["sla"] == {"p95_ms_target": 1000.0, "error_rate_target": 0.01, "days_with_runs": 4,
                           "days_meeting_p95": 3, "days_meeting_error_rate": 2, "share_meeting_p95": 0.75,
                           "share_meeting_error_rate": 0.5}
    # The parts equal the endpoints of the same period
    assert body["overview"] == {k: v for k, v in get(staff_client, "overview", days=30).items()
                                if k not in ("period", "filters")}
    assert body["errors"]["by_type"] == get(staff_client, "errors", days=30)["by_type"]


def test_rows_copied_as_the_selector_wrote_them_are_what_drf_represents(known_runs, monkeypatch):
    """The report's lists of scalar rows (shares, days) skip DRF's per-field representation: the same document."""
    from rest_framework import serializers

    from analytics.reports.scope import scope_get
    from analytics.reports.selectors import report_get
    from analytics.reports.serializers import FullReportSerializer, ScalarRowsSerializer

    answer = report_get(scope=scope_get(days=30))
    assert any(row["success_rate"] is None for row in answer["trends"]["days"])  # nulls among the rows
    copied = FullReportSerializer().to_representation(answer)
    monkeypatch.setattr(ScalarRowsSerializer, "to_representation", serializers.ListSerializer.to_representation)
    assert copied == FullReportSerializer().to_representation(answer)
    assert len(copied["overview"]["intent_distribution"]) == 3 and len(copied["errors"]["per_day"]) == 30


def test_report_as_csv_is_the_daily_table(staff_client, known_runs):
    response = staff_client.get(BASE + "report", {"format": "csv", "days": 5})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [row["day"] for row in rows] == [(today() - timedelta(days=n)).isoformat() for n in range(4, -1, -1)]
    assert [int(row["runs"]) for row in rows] == [0, 1, 0, 2, 3]
    assert rows[0]["success_rate"] == "" and float(rows[-1]["success_rate"]) == pytest.approx(2 / 3)


def test_report_csv_with_a_bad_parameter_is_a_json_400(staff_client, known_runs):
    response = staff_client.get(BASE + "report", {"format": "csv", "days": 0})
    assert response.status_code == 400
    assert "days" in response.json()


def test_confusion_of_the_labelled_runs(staff_client, known_runs):
    body = get(staff_client, "confusion")
    assert body["labelled_runs"] == 2 and close(body["accuracy"], 0.5)
    assert body["matrix"] == [{"expected": "balance", "detected": "balance", "count": 1},
                              {"expected": "balance", "detected": "transfer", "count": 1}]
    scores = {row["intent"]: row for row in body["per_intent"]}
    assert scores["balance"]["precision"] == 1.0 and scores["balance"]["recall"] == 0.5
    assert close(scores["balance"]["f1"], 2 / 3) and scores["balance"]["support"] == 2
    assert scores["transfer"] == {"intent": "transfer", "precision": 0.0, "recall": None, "f1": None, "support": 0}


# --- Filters ------------------------------------------------------------------------------------------------

def test_one_filter_totals_from_its_rollup_and_breakdowns_from_raw_rows(staff_client, known_runs):
    body = get(staff_client, "overview", module="banking")
    assert body["filters"] == {"module": "banking"}
    assert body["total_runs"] == 4 and close(body["error_rate"], 0.25)  # r1, r2, r4, r6
    assert [(row["intent"], row["runs"]) for row in body["intent_distribution"]] == [("balance", 3), ("transfer", 1)]
    assert [(row["module"], row["runs"]) for row in body["modules"]] == [("banking", 4)]
    assert body["labelled_runs"] == 1 and body["accuracy"] == 1.0
    trends = {row["day"]: row["runs"] for row in get(staff_client, "trends", module="travel")["days"]}
    assert trends[today().isoformat()] == 1 and trends[(today() - timedelta(days=1)).isoformat()] == 1
    assert sum(trends.values()) == 2


def test_several_filters_combine(staff_client, known_runs):
    body = get(staff_client, "overview", module="banking", model_name=GPT)
    assert body["total_runs"] == 2  # r2, r6
    assert within_one_percent(body["response_time_ms"]["p50"], 500.0) and within_one_percent(body["response_time_ms"]["p95"], 800.0)
    assert body["tokens"]["total"] == 330
    models = get(staff_client, "model-comparison", model_name=GPT, user_role="customer")["models"]
    assert [(row["model_name"], row["runs"]) for row in models] == [(GPT, 1)]  # r3
    errors = get(staff_client, "errors", prompt_version="v2", user_role="agent")
    assert errors["total_errors"] == 1 and [row["run_id"] for row in errors["latest"]] == ["r6"]
    assert get(staff_client, "confusion", module="travel")["matrix"] == [
        {"expected": "balance", "detected": "transfer", "count": 1}]


def test_a_filter_matching_nothing_gives_an_empty_report(staff_client, known_runs):
    body = get(staff_client, "report", prompt_version="nope")
    assert body["overview"]["total_runs"] == 0 and body["prompt_analysis"]["versions"] == []
    assert all(row["runs"] == 0 for row in body["trends"]["days"])
    assert body["sla"]["days_with_runs"] == 0 and body["sla"]["share_meeting_p95"] is None


def test_filtered_results_equal_the_rollup_path_for_the_filters_own_dimension(staff_client, known_runs):
    """model-comparison under model_name reads that model's rollup; with a second filter, the raw rows:
    both give the same numbers for the same runs."""
    from_rollups = get(staff_client, "model-comparison", model_name=LOCAL)["models"]
    from_raw = get(staff_client, "model-comparison", model_name=LOCAL, module="banking")["models"]
    assert [row["runs"] for row in from_rollups] == [4] and [row["runs"] for row in from_raw] == [3]  # r1, r4, r7
    all_local = get(staff_client, "model-comparison", model_name=LOCAL, prompt_version="v1")["models"]
    assert all_local == from_rollups  # every local run is v1: same runs, same figures through either path


# --- Percentiles ----------------------------------------------------------------------------------------------

def test_percentiles_are_within_one_percent_of_exact_on_both_read_paths(staff_client):
    rng = random.Random(5)
    runs, latencies = [], []
    for index in range(600):
        latency = math.exp(rng.gauss(6.5, 0.8)) if rng.random() < 0.3 else math.exp(rng.gauss(0.3, 0.6))
        runs.append(mirrored(f"p{index}", start=at(rng.randrange(7), rng.randrange(24)), latency_ms=latency,
                             module=rng.choice(["banking", "travel"]), model=rng.choice([LOCAL, GPT])))
        latencies.append(latency)
    mirror(runs)

    def exact(values: list[float], q: float) -> float:
        return nearest_rank(values, q)

    overview = get(staff_client, "overview")["response_time_ms"]
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        assert within_one_percent(overview[name], exact(latencies, q)), name
    filtered = get(staff_client, "overview", module="banking", model_name=GPT)["response_time_ms"]
    subset = [run.response_time_ms for run in runs if run.current_module == "banking" and run.model_name == GPT]
    assert within_one_percent(filtered["p95"], exact(subset, 0.95)) and within_one_percent(filtered["p50"], exact(subset, 0.5))
    for row in get(staff_client, "trends", days=7)["days"]:
        day_values = [run.response_time_ms for run in runs if run.day.isoformat() == row["day"]]
        assert within_one_percent(row["p95_ms"], exact(day_values, 0.95)), row["day"]


def test_an_error_type_missing_from_the_newest_failures_still_gets_its_sample(staff_client, known_runs, monkeypatch):
    from analytics.reports import selectors

    monkeypatch.setattr(selectors, "SAMPLE_WINDOW", 1)  # only r3 is "recent": r6's type is looked up on its own
    body = get(staff_client, "errors")
    assert [(row["error_type"], row["error_category"], row["sample_run_id"]) for row in body["by_type"]] == [
        ("TimeoutError", "lm_timeout", "r3"), ("ValueError", "parse_error", "r6")]
    assert [row["run_id"] for row in body["latest"]] == ["r3", "r6"]  # read on their own, newest first
