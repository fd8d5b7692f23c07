"""The admin shows the mirror read-only: lists with filters, search by request id / run id, date hierarchy; the
runs' list at a glance (2-decimal confidence, short ids, links to MLflow and the record) and its free-text filters
bounded by the rollups."""

from __future__ import annotations

import re
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from analytics.mirror.sync import runs_sync
from analytics.models import DailyRollup, MirroredRun, SyncState
from tests.admin_pages import result_rows
from tests.analytics.conftest import DAY0_MS
from tests.analytics.test_reports_api import at, mirror, mirrored

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_logged(client, django_user_model):
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")
    client.force_login(admin)
    return client


def test_mirrored_runs_are_listed_filtered_and_searched_but_not_editable(run_logger, admin_client_logged):
    transfer = run_logger.log(start_ms=DAY0_MS, intent="transfer", request_id="req-transfer-1")
    run_logger.log(start_ms=DAY0_MS + 1, intent="balance", request_id="req-balance-1")
    runs_sync()
    url = "/admin/analytics/mirroredrun/"

    listing = admin_client_logged.get(url)
    filtered = admin_client_logged.get(url, {"detected_intent": "transfer", "status": "FINISHED"})
    by_request = admin_client_logged.get(url, {"q": "req-transfer-1"})
    by_run = admin_client_logged.get(url, {"q": transfer})
    by_day = admin_client_logged.get(url, {"start_time__year": "2026", "start_time__month": "11"})

    assert listing.status_code == 200 and listing.content.count(b"/change/") == 2
    for response in (filtered, by_request, by_run):
        assert response.status_code == 200
        assert response.content.count(b"/change/") == 1 and transfer.encode() in response.content
    assert by_day.status_code == 200 and by_day.content.count(b"/change/") == 2
    row = MirroredRun.objects.get(run_id=transfer)
    assert admin_client_logged.get(f"{url}add/").status_code == 403
    detail = admin_client_logged.get(f"{url}{row.pk}/change/")
    assert detail.status_code == 200 and b'name="_save"' not in detail.content  # view only
    assert admin_client_logged.post(f"{url}{row.pk}/delete/", {"post": "yes"}).status_code == 403
    assert MirroredRun.objects.filter(pk=row.pk).exists()


def test_sync_state_and_rollups_are_shown(run_logger, admin_client_logged):
    run_logger.log(start_ms=DAY0_MS)
    runs_sync()
    state = SyncState.objects.get()

    states = admin_client_logged.get("/admin/analytics/syncstate/")
    detail = admin_client_logged.get(f"/admin/analytics/syncstate/{state.pk}/change/")
    rollups = admin_client_logged.get("/admin/analytics/dailyrollup/", {"dimension": "intent"})

    assert states.status_code == 200 and b"intent_detection" in states.content
    assert detail.status_code == 200 and b"lag" in detail.content
    assert rollups.status_code == 200 and b"balance" in rollups.content
    # A rollup's page reads its sketch: one run, so every percentile is exactly its latency.
    rollup = DailyRollup.objects.get(dimension="all")
    page = admin_client_logged.get(f"/admin/analytics/dailyrollup/{rollup.pk}/change/").content.decode()
    latency = rollup.latency_min_ms
    assert rollup.latency_max_ms == latency
    assert f"p50 {latency:.3g} ms, p95 {latency:.3g} ms, p99 {latency:.3g} ms (1 latencies)" in page


# --- The runs' list at a glance ------------------------------------------------------------------------------

RUNS = "/admin/analytics/mirroredrun/"
MLFLOW_UI = "http://mlflow.example:5000"


def a_run(*, confidence: float = 0.93456789012345, module: str = "banking", **fields) -> MirroredRun:
    run = mirrored(uuid.uuid4().hex, start=at(0, 8), confidence=confidence, module=module, **fields)
    run.request_id = str(uuid.uuid4())
    return run


def test_the_runs_list_is_compact_with_2_decimals_and_links_to_mlflow_and_the_record(admin_client_logged, settings):
    # given
    settings.MLFLOW_UI_URL = MLFLOW_UI
    run = a_run(latency_ms=1234.5678, prompt_version="a1b2c3d4e5f6a7b8", model="openai/gpt-4o-mini",
                error_category="lm_unavailable", error_type="ConnectionError", fallback=True,
                module="m" * 200)  # a spammed module
    mirror([run])

    # when
    response = admin_client_logged.get(RUNS)
    content = response.content.decode()
    [row] = result_rows(response)

    # then
    assert row["confidence"] == "0.93" and row["latency"] == "1234.6" and row["prompt"] == "a1b2c3d4"
    assert f'href="{MLFLOW_UI}/#/experiments/{run.experiment_id}/runs/{run.run_id}"' in content
    assert f'href="/admin/intent/detectionrecord/?request_id={run.request_id}"' in content
    assert row["links"] == f"{run.run_id[:8]} · record"
    assert row["outcome"] == "lm_unavailable"  # the fallback's category as its status
    assert row["model_answer"] == "openai/gpt-4o-mini ↳ local/tfidf-linear"  # configured, and who answered
    # fits 1400 px: few cells, no long id or value printed as text (the full ones are in titles and links)
    assert len(row) <= 10
    assert not any(re.search(r"[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-", cell) for cell in row.values())
    assert max(len(cell) for cell in row.values()) <= 50


def test_the_runs_list_sorts_by_confidence(admin_client_logged):
    runs = [a_run(confidence=value) for value in (0.5, 0.9, 0.7)]
    mirror(runs)
    columns = list(admin_client_logged.get(RUNS).context["cl"].list_display)

    ascending = admin_client_logged.get(RUNS, {"o": str(columns.index("confidence"))})
    descending = admin_client_logged.get(RUNS, {"o": f"-{columns.index('confidence')}"})

    assert [r.confidence_score for r in ascending.context["cl"].result_list] == [0.5, 0.7, 0.9]
    assert [r.confidence_score for r in descending.context["cl"].result_list] == [0.9, 0.7, 0.5]
    assert [row["confidence"] for row in result_rows(descending)] == ["0.90", "0.70", "0.50"]


def test_free_text_filters_offer_the_20_most_frequent_values_from_the_rollups(admin_client_logged):
    # given 300 modules mirrored today, module-000 the most frequent, then module-001, ...
    runs = [a_run(module=f"module-{n:03d}") for n in range(300)]
    runs += [a_run(module=f"module-{n:03d}") for n in range(25) for _ in range(25 - n)]
    mirror(runs)

    # when
    with CaptureQueriesContext(connection) as queries:
        listing = admin_client_logged.get(RUNS)
    listing_sql = [query["sql"] for query in queries.captured_queries]  # the next request clears the log
    chosen = admin_client_logged.get(RUNS, {"current_module": "module-007"})
    rare = admin_client_logged.get(RUNS, {"current_module": "module-299"})

    # then
    modules = next(spec for spec in listing.context["cl"].filter_specs
                   if getattr(spec, "parameter_name", "") == "current_module")
    assert [value for value, _ in modules.lookup_choices] == [f"module-{n:03d}" for n in range(20)]
    assert listing_sql and not any("DISTINCT" in sql and "analytics_mirroredrun" in sql for sql in listing_sql)
    assert {run.current_module for run in chosen.context["cl"].result_list} == {"module-007"}
    assert len(chosen.context["cl"].result_list) == 26 - 7
    assert [run.current_module for run in rare.context["cl"].result_list] == ["module-299"]
    assert "module-299" in [value for value, _ in next(
        spec for spec in rare.context["cl"].filter_specs
        if getattr(spec, "parameter_name", "") == "current_module").lookup_choices]  # the chosen one stays listed


def test_the_run_page_groups_its_fields_and_links(admin_client_logged, settings):
    settings.MLFLOW_UI_URL = MLFLOW_UI
    run = a_run(is_error=True, error_category="lm_timeout", error_type="TimeoutError")
    mirror([run])
    row = MirroredRun.objects.get(run_id=run.run_id)

    content = admin_client_logged.get(f"{RUNS}{row.pk}/change/").content.decode()

    for heading in ("What", "How well", "Context", "MLflow"):
        assert f">{heading}</h2>" in content
    assert f'href="{MLFLOW_UI}/#/experiments/{run.experiment_id}/runs/{run.run_id}"' in content
    assert f'href="/admin/intent/detectionrecord/?request_id={run.request_id}"' in content
    assert ">0.93<" in content and "lm_timeout" in content and 'name="_save"' not in content
