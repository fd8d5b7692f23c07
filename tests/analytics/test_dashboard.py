"""The "Detection analytics" admin page in a real headless Chromium (Debian's `chromium` + `chromium-driver`):
its charts are drawn with the data of the report API, the period selector reloads them, zero runs are fine.

`DASHBOARD_SCREENSHOT=docs/dashboard.png pytest tests/analytics/test_dashboard.py -k screenshot` (or
`make screenshot`) also writes the README's screenshot from a demo-like month of runs."""

from __future__ import annotations

import json
import math
import os
import random
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from analytics.mirror.mapping import mirror_row_build
from analytics.mirror.rollups import rollups_refresh
from analytics.mirror.sources.base import SourceRun
from analytics.mirror.sync import runs_sync
from analytics.models import MirroredRun, SyncState
from tests.browser import WAIT_S, staff_session

PAGE = "/admin/analytics/detectionanalytics/"


def page_state(driver, days: int) -> dict:
    """Wait until the page shows the report of `days`, then read what its charts and tiles hold."""
    from selenium.webdriver.support.ui import WebDriverWait

    def ready(d):
        state = d.execute_script("return document.getElementById('analytics-dashboard').dataset")
        if state.get("state") == "error":
            raise AssertionError(d.find_element("id", "ad-message").text)
        return state.get("state") == "ready" and state.get("loadedDays") == str(days)

    WebDriverWait(driver, WAIT_S).until(ready)
    return driver.execute_script("""
        const chart = (id) => { const c = Chart.getChart(document.getElementById(id));
            return {labels: c.data.labels, data: c.data.datasets.map((d) => d.data)}; };
        const tiles = {};
        document.querySelectorAll('[data-kpi]').forEach((t) => tiles[t.dataset.kpi] = t.querySelector('.ad-kpi-value').textContent);
        return {
          runs: chart('chart-runs'), success: chart('chart-success'), confidence: chart('chart-confidence'),
          latency: chart('chart-latency'), intents: chart('chart-intents'), modules: chart('chart-modules'),
          errors: chart('chart-errors'), tiles: tiles,
          message: document.getElementById('ad-message').hidden ? null : document.getElementById('ad-message').textContent,
          prompts: Array.from(document.querySelectorAll('#table-prompts tbody tr')).map((r) => r.innerText),
          errorTypes: Array.from(document.querySelectorAll('#table-error-types tbody tr')).map((r) => r.innerText),
          active: document.querySelector('.ad-period.is-active').dataset.days,
          location: window.location.search,
          canvasPixels: (() => { const c = document.getElementById('chart-runs');
                                 return c.width * c.height; })(),
        };""")


def today_ms(days_ago: int, *, seconds: int = 0) -> int:
    midnight = datetime.combine(timezone.now().astimezone(UTC).date(), datetime.min.time(), tzinfo=UTC)
    return int((midnight - timedelta(days=days_ago)).timestamp() * 1000) + seconds * 1000


def test_the_charts_show_the_mirrored_runs_and_the_period_selector_reloads_them(
        transactional_db, live_server, browser, django_user_model, run_logger):
    # given: runs logged in MLflow and mirrored by the real sync: 5 in the last week, 4 more 20 days ago
    log = run_logger.log
    log(start_ms=today_ms(0, seconds=1), intent="balance", module="banking", latency_ms=2.0, prompt_version="v-new")
    log(start_ms=today_ms(0, seconds=2), intent="balance", module="banking", latency_ms=4.0, prompt_version="v-new")
    log(start_ms=today_ms(0, seconds=3), intent="transfer", module="banking", latency_ms=800.0, prompt_version="v-new",
        error_category="lm_timeout", model="openai/gpt-4o-mini")
    log(start_ms=today_ms(1), intent="international_visa", module="travel", confidence=0.5, prompt_version="v-new")
    log(start_ms=today_ms(1, seconds=1), intent="international_visa", module="travel", confidence=0.7,
        prompt_version="v-new")
    for i in range(4):
        log(start_ms=today_ms(20, seconds=i), intent="exchange_rate", module="travel", prompt_version="v-old")
    # the same error type in another category: a row of its own in the error types' table
    log(start_ms=today_ms(20, seconds=9), intent="transfer", module="banking", prompt_version="v-old",
        error_category="lm_unavailable", extra_tags={"error_type": "TimeoutError"}, model="openai/gpt-4o-mini")
    runs_sync()
    assert MirroredRun.objects.count() == 10
    staff_session(live_server, browser, django_user_model)

    # when: the page opens (its default period is 30 days), then 7 and 90 days are chosen
    browser.get(f"{live_server.url}{PAGE}?days=7")
    week = page_state(browser, 7)
    browser.find_element("css selector", '.ad-period[data-days="30"]').click()
    month = page_state(browser, 30)
    browser.find_element("css selector", '.ad-period[data-days="90"]').click()
    quarter = page_state(browser, 90)

    # then: the week
    assert week["tiles"]["total_runs"] == "5" and week["tiles"]["error_rate"] == "20.0%"
    assert week["tiles"]["success_rate"] == "80.0%"
    assert len(week["runs"]["labels"]) == 7 and week["runs"]["data"][0][-2:] == [2, 3]  # yesterday, today
    assert sum(week["runs"]["data"][0]) == 5
    assert week["success"]["data"][0][-2:] == [1.0, pytest.approx(2 / 3)]
    assert week["success"]["data"][0][0] is None  # a day without runs has no rate
    assert week["confidence"]["data"][0][-2] == pytest.approx(0.6)
    assert len(week["latency"]["data"]) == 2 and week["latency"]["data"][0][-1] is not None  # p95, p50
    assert dict(zip(week["intents"]["labels"], week["intents"]["data"][0], strict=True)) == {
        "balance": 2, "transfer": 1, "international_visa": 2}
    assert dict(zip(week["modules"]["labels"], week["modules"]["data"][0], strict=True)) == {"banking": 3, "travel": 2}
    assert dict(zip(week["errors"]["labels"], week["errors"]["data"][0], strict=True)) == {"lm_timeout": 1}
    assert len(week["prompts"]) == 1 and week["prompts"][0].startswith("v-new")
    assert len(week["errorTypes"]) == 1 and "TimeoutError" in week["errorTypes"][0]
    assert week["message"] is None and week["active"] == "7" and week["canvasPixels"] > 0
    # the month takes in the older runs
    assert month["tiles"]["total_runs"] == "10" and month["active"] == "30" and month["location"] == "?days=30"
    assert len(month["runs"]["labels"]) == 30 and sum(month["runs"]["data"][0]) == 10
    assert month["runs"]["data"][0][-21] == 5  # 20 days ago
    assert sorted(row.split("\t")[:3] for row in month["errorTypes"]) == [
        ["TimeoutError", "lm_timeout", "1"], ["TimeoutError", "lm_unavailable", "1"]]
    assert dict(zip(month["intents"]["labels"], month["intents"]["data"][0], strict=True))["exchange_rate"] == 4
    assert [row.split("\t")[0] for row in month["prompts"]] == ["v-new", "v-old"]  # newest first
    assert len(quarter["runs"]["labels"]) == 90 and quarter["tiles"]["total_runs"] == "10"


def filtered_state(driver, filters: dict) -> dict:
    """Wait until the page shows the report under these filters, then read its charts and tiles."""
    from selenium.webdriver.support.ui import WebDriverWait

    expected = json.dumps(filters, separators=(",", ":"))
    WebDriverWait(driver, WAIT_S).until(lambda d: d.execute_script(
        "const s = document.getElementById('analytics-dashboard').dataset;"
        "return s.state === 'ready' && s.filters === arguments[0];", expected))
    return page_state(driver, 7)


def test_filters_live_in_the_url_and_every_chart_follows_them(
        transactional_db, live_server, browser, django_user_model, run_logger, admin_client):
    log = run_logger.log
    for second, (intent, module) in enumerate([("balance", "banking"), ("balance", "banking"), ("transfer", "banking"),
                                               ("international_visa", "travel"), ("exchange_rate", "travel")]):
        log(start_ms=today_ms(0, seconds=second), intent=intent, module=module, prompt_version="v-new")
    runs_sync()
    staff_session(live_server, browser, django_user_model)

    # a shared link opens filtered
    browser.get(f"{live_server.url}{PAGE}?days=7&module=banking")
    banking = filtered_state(browser, {"module": "banking"})
    api = admin_client.get("/api/analytics/mlflow/report", {"days": 7, "module": "banking"}).json()
    assert banking["tiles"]["total_runs"] == str(api["overview"]["total_runs"]) == "3"
    assert dict(zip(banking["intents"]["labels"], banking["intents"]["data"][0], strict=True)) == {
        item["intent"]: item["runs"] for item in api["overview"]["intent_distribution"]}
    assert sum(banking["runs"]["data"][0]) == 3

    # choosing another module reloads every chart and puts it in the URL
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element("css selector", '#ad-filters select[name="module"]')).select_by_value("travel")
    travel = filtered_state(browser, {"module": "travel"})
    assert travel["tiles"]["total_runs"] == "2" and "module=travel" in travel["location"]
    assert dict(zip(travel["intents"]["labels"], travel["intents"]["data"][0], strict=True)) == {
        "international_visa": 1, "exchange_rate": 1}

    # cleared: everything again
    browser.find_element("id", "ad-filters-clear").click()
    everything = filtered_state(browser, {})
    assert everything["tiles"]["total_runs"] == "5" and "module" not in everything["location"]


def test_no_runs_at_all_is_shown_plainly(transactional_db, live_server, browser, django_user_model, mlflow_store):
    staff_session(live_server, browser, django_user_model)

    browser.get(f"{live_server.url}{PAGE}")
    empty = page_state(browser, 30)

    assert empty["tiles"]["total_runs"] == "0" and empty["tiles"]["success_rate"] == "–"
    assert empty["runs"]["data"][0] == [0] * 30
    assert empty["intents"]["data"][0] == [] and empty["modules"]["data"][0] == []
    assert "No detections were recorded in the last 30 days" in empty["message"]
    assert browser.find_element("css selector", "#table-prompts tbody tr").text == "No prompt version ran in this period."
    severe = [entry for entry in browser.get_log("browser")
              if entry["level"] == "SEVERE" and "favicon.ico" not in entry["message"]]
    assert severe == []  # no script error, no failed request


def test_the_admin_index_links_the_page_for_staff_only(transactional_db, client, django_user_model):
    staff = django_user_model.objects.create_user("analyst", password="pw-analyst-123", is_staff=True)
    user = django_user_model.objects.create_user("user", password="pw-user-123")

    client.force_login(staff)
    index = client.get("/admin/")
    page = client.get(PAGE)
    client.force_login(user)
    refused = client.get(PAGE)

    assert index.status_code == 200 and PAGE.encode() in index.content and b"Detection analytics" in index.content
    assert page.status_code == 200 and b'id="analytics-dashboard"' in page.content
    # Chart.js is served with the app: nothing is loaded from another host (a "cdn" substring check failed once on
    # the random CSRF token of the admin's logout form)
    assert b"analytics/vendor/chart.umd.min.js" in page.content
    assert not re.search(rb'(?:src|href)=["\'](?:https?:)?//', page.content)
    assert refused.status_code == 302 and "/admin/login/" in refused["Location"]


# --- The README's screenshot: a demo-like month -------------------------------------------------------------

DEMO_MODULES = {
    "banking": ["balance", "transfer", "pay_bill", "freeze_account", "routing", "bill_balance", "interest_rate"],
    "credit_cards": ["card_declined", "credit_limit", "report_lost_card", "rewards_balance", "apr"],
    "travel": ["international_visa", "exchange_rate", "plug_type", "book_flight", "travel_alert", "lost_luggage"],
    "utility": ["timer", "weather", "date", "calculator"],
}


def demo_runs(*, runs: int, days: int, seed: int = 7) -> list[SourceRun]:
    """A plausible month: more traffic on weekdays and lately, a Zipf-like intent mix, 30 % LM answers with
    tokens and cost, a few failures and fallbacks, a prompt version change ten days ago."""
    rng = random.Random(seed)
    intents = [(module, intent) for module, names in DEMO_MODULES.items() for intent in names]
    weights = [1 / (rank + 1) ** 0.9 for rank in range(len(intents))]
    now_ms = today_ms(0) + 12 * 3_600_000
    result = []
    for i in range(runs):
        day = int(rng.expovariate(1 / (days / 2.5))) % days
        start = now_ms - day * 86_400_000 - rng.randint(0, 86_000_000)
        module, intent = rng.choices(intents, weights)[0]
        lm = rng.random() < 0.3
        error = rng.choices(["lm_timeout", "lm_rate_limit", "parse_error", "invalid_output"], [5, 2, 2, 1])[0] \
            if lm and rng.random() < 0.12 else None
        fallback = bool(error) and rng.random() < 0.7
        out_of_scope = rng.random() < 0.06
        tags = {"user_role": rng.choice(["customer", "customer", "agent", "admin"]), "current_module": module,
                "current_tab": "", "detected_intent": "out_of_scope" if out_of_scope else intent,
                "dspy_version": "3.4.1", "prompt_version": "3fa2c81d09be" if day < 10 else "9b1e77c0d4a2",
                "request_id": f"req-{i:06d}", "status": "error" if error and not fallback else "success",
                "fallback_used": str(fallback).lower()}
        if error:
            tags |= {"error_category": error, "error_type": {"lm_timeout": "TimeoutError", "lm_rate_limit": "RateLimitError",
                                                          "parse_error": "AdapterParseError",
                                                          "invalid_output": "ValueError"}[error]}
        latency = math.exp(rng.gauss(6.6, 0.5)) if lm else math.exp(rng.gauss(0.2, 0.5))
        metrics = {"confidence_score": round(min(1.0, max(0.05, rng.betavariate(6, 1.6))), 4),
                   "response_time_ms": latency, "template_match_rate": float(rng.random() < 0.4)}
        if lm:
            metrics |= {"prompt_tokens": float(rng.randint(380, 520)), "completion_tokens": float(rng.randint(20, 60)),
                        "cost_usd": rng.uniform(6e-5, 1e-4)}
        if rng.random() < 0.05:  # a label on one run in twenty: right about as often as the confidence says
            right = rng.random() < metrics["confidence_score"] ** 1.3
            metrics["is_correct"] = 1.0 if right else 0.0
            tags["expected_intent"] = intent if right else "out_of_scope"
        model = "openai/gpt-4o-mini" if lm else "local/tfidf-linear"
        result.append(SourceRun(run_id=f"{i:032x}", experiment_id="1",
                                status="FAILED" if error and not fallback else "FINISHED", lifecycle="active",
                                start_time=start, end_time=start + max(1, round(latency)), tags=tags,
                                params={"model_name": model, "category_source": "database"}, metrics=metrics))
    return result


def test_screenshot_of_a_demo_month(transactional_db, live_server, browser, django_user_model, settings, tmp_path,
                                    mlflow_store):
    settings.MLFLOW_UI_URL = "http://127.0.0.1:5000"
    runs = demo_runs(runs=6000, days=30)
    now = timezone.now()
    MirroredRun.objects.bulk_create([MirroredRun(**mirror_row_build(run), mirrored_at=now) for run in runs],
                                    batch_size=500)
    rollups_refresh(experiment_id="1", days=set(MirroredRun.objects.values_list("day", flat=True)))
    SyncState.objects.create(experiment_name=settings.MLFLOW_EXPERIMENT_NAME, experiment_id="1",
                             last_succeeded_at=now, newest_start_time=now, mirrored_runs=len(runs))
    from analytics.monitors.defaults import monitors_create_defaults
    from analytics.monitors.services import monitors_evaluate

    monitors_create_defaults()  # as `make demo` does, evaluated once: the page shows their states
    monitors_evaluate()
    staff_session(live_server, browser, django_user_model)

    browser.get(f"{live_server.url}{PAGE}?days=30")
    month = page_state(browser, 30)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1440, height + 140)  # the whole page in one picture
    browser.execute_script("Object.values(Chart.instances).forEach((c) => { c.options.animation = false; c.resize(); });")
    target = Path(os.environ.get("DASHBOARD_SCREENSHOT") or tmp_path / "dashboard.png")
    target.parent.mkdir(parents=True, exist_ok=True)
    saved = browser.get_screenshot_as_file(str(target))

    in_window = [run for run in runs if run.start_time >= today_ms(29)]
    assert month["tiles"]["total_runs"] == f"{len(in_window):,}"
    assert sum(month["runs"]["data"][0]) == len(in_window)
    assert saved and target.stat().st_size > 50_000
    print(json.dumps({"screenshot": str(target), "runs": len(in_window)}))


def test_the_page_shows_the_monitors_states_and_latest_alerts(transactional_db, live_server, browser,
                                                              django_user_model, mlflow_store):
    from analytics.models import Alert, Monitor

    alerting = Monitor.objects.create(name="LM fallbacks", metric="fallback_rate", alert_threshold=0.2, state="alert",
                                      last_value=0.35, filters={"module": "banking"})
    Monitor.objects.create(name="Latency p95", metric="latency_p95_ms", alert_threshold=3000, state="ok")
    now = timezone.now()
    Alert.objects.create(monitor=alerting, from_state="ok", to_state="alert", value=0.35, threshold=0.2,
                         window_start=now - timedelta(minutes=15), window_end=now, created_at=now, delivery="delivered")
    staff_session(live_server, browser, django_user_model)

    browser.get(f"{live_server.url}{PAGE}")
    rows = [row.text for row in browser.find_elements("css selector", "#ad-monitors table:first-of-type tbody tr")]
    alerts = [row.text for row in browser.find_elements("css selector", "#ad-alerts tbody tr")]

    assert rows[0].startswith("LM fallbacks") and "module=banking" in rows[0] and "Alert" in rows[0]
    assert "0.35" in rows[0] and rows[1].startswith("Latency p95") and "Ok" in rows[1]  # alerts first
    assert len(alerts) == 1 and "LM fallbacks" in alerts[0] and "ok → alert" in alerts[0] and "Delivered" in alerts[0]
