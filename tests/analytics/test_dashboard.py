"""The "Detection analytics" admin page in a real headless Chromium (Debian's `chromium` + `chromium-driver`):
its charts are drawn with the data of the report API, for the presets and any range, under the filters in the URL;
the compare view and the confusion matrix show what the APIs answer; zero runs are fine; a 700 px window does not
scroll sideways; the admin's theme toggle (or the system's scheme) repaints the charts without a reload.

`DASHBOARD_SCREENSHOT=docs/dashboard.png BOARD_SCREENSHOT=docs/board.png pytest tests/analytics/test_dashboard.py -k
screenshot` (or `make screenshot`) also writes the README's screenshots (a filtered view, a custom board) from a
demo-like month of runs."""

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
from tests.analytics.conftest import MODELS
from tests.browser import WAIT_S, narrow_window, staff_session, wait_dataset

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


CHARTS = {"runs": "chart-runs", "success": "chart-success", "confidence": "chart-confidence",
          "latency": "chart-latency", "intents": "chart-intents", "modules": "chart-modules", "errors": "chart-errors"}


def wait_for(driver, script: str, *args):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S).until(lambda d: d.execute_script(script, *args))


def report_query(**params) -> str:
    """The page's API query for these parameters, in its order: days, until, then the filters as given."""
    return "?" + "&".join(f"{name}={value}" for name, value in params.items())


def shown(driver, query: str, *sections: str) -> dict:
    """Wait until the page (and these sections: confusion, compare) shows `query`, then read every chart's data."""
    wait_dataset(driver, "analytics-dashboard",
                 lambda s: s.get("state") == "ready" and s.get("loadedQuery") == query
                 and all(s.get(name) == "ready" and s.get(f"{name}Query") == query for name in sections),
                 f"the dashboard showing {query} {sections or ''}")
    return driver.execute_script("""
        const read = (id) => { const c = Chart.getChart(document.getElementById(id));
            return {labels: c.data.labels, data: c.data.datasets.map((d) => d.data)}; };
        return Object.fromEntries(Object.entries(arguments[0]).map(([name, id]) => [name, read(id)]));""", CHARTS)


def charts_of(report: dict) -> dict:
    """What each chart must hold for this report answer of the API."""
    days = report["trends"]["days"]
    overview = report["overview"]
    errors = [c for c in report["errors"]["by_category"] if c["count"] > 0]
    series = lambda *names: [[day[name] for day in days] for name in names]  # noqa: E731
    return {
        "runs": {"labels": [d["day"] for d in days], "data": series("runs")},
        "success": {"labels": [d["day"] for d in days], "data": series("success_rate")},
        "confidence": {"labels": [d["day"] for d in days], "data": series("avg_confidence")},
        "latency": {"labels": [d["day"] for d in days], "data": series("p95_ms", "p50_ms")},
        "intents": {"labels": [i["intent"] for i in overview["intent_distribution"][:15]],
                    "data": [[i["runs"] for i in overview["intent_distribution"][:15]]]},
        "modules": {"labels": [m["module"] for m in overview["modules"]], "data": [[m["runs"] for m in overview["modules"]]]},
        "errors": {"labels": [c["error_category"] for c in errors], "data": [[c["count"] for c in errors]]},
    }


def confusion_shown(driver) -> dict:
    return driver.execute_script("""
        const detected = Array.from(document.querySelectorAll('#table-confusion thead th')).slice(1).map((th) => th.textContent);
        const cells = {};
        document.querySelectorAll('#table-confusion tbody tr[data-expected]').forEach((tr) => {
            tr.querySelectorAll('td').forEach((td, i) => {
                if (td.dataset.count !== '0') cells[tr.dataset.expected + ' -> ' + detected[i]] = Number(td.dataset.count); }); });
        const perIntent = {};
        document.querySelectorAll('#table-per-intent tbody tr[data-intent]').forEach((tr) => {
            perIntent[tr.dataset.intent] = JSON.parse(tr.dataset.values); });
        return {cells, perIntent};""")


def seed_two_versions(log) -> None:
    """24 runs over the last 4 days: two prompt versions, two modules with their tabs, two models, five intents,
    a few errors, half of them labelled (one label in four says the detection was wrong)."""
    places = [("balance", "banking", "accounts"), ("transfer", "banking", "accounts"), ("pay_bill", "banking", "bills"),
              ("international_visa", "travel", "trips"), ("exchange_rate", "travel", "trips")]
    for i in range(24):
        intent, module, tab = places[i % len(places)]
        expected = intent if i % 4 else ("balance" if intent != "balance" else "transfer")
        labelled = i % 2 == 0
        log(start_ms=today_ms(i % 4, seconds=i), intent=intent, module=module, tab=tab,
            prompt_version="v-old" if i % 3 == 0 else "v-new", model=MODELS[i % 2], confidence=0.5 + (i % 5) / 10,
            latency_ms=1.0 + i * 7, error_category="lm_timeout" if i % 7 == 3 else None,
            extra_metrics={"is_correct": float(expected == intent)} if labelled else None,
            extra_tags={"expected_intent": expected} if labelled else None)
    runs_sync()


def test_filters_and_any_period_drive_every_chart_and_the_confusion_matrix_like_the_api(
        transactional_db, live_server, browser, django_user_model, run_logger, admin_client):
    seed_two_versions(run_logger.log)
    staff_session(live_server, browser, django_user_model)
    today = timezone.now().astimezone(UTC).date()
    since, until = (today - timedelta(days=6)).isoformat(), today.isoformat()
    api = lambda path, params: admin_client.get(f"/api/analytics/mlflow/{path}", params).json()  # noqa: E731

    # given: a shared link with a date range and two filters (module and tab)
    browser.get(f"{live_server.url}{PAGE}?since={since}&until={until}&module=banking&tab=accounts")
    params = {"days": 7, "until": until, "module": "banking", "tab": "accounts"}
    banking = shown(browser, report_query(**params), "confusion")
    confusion = api("confusion", params)
    matrix = confusion_shown(browser)

    # then: every chart holds what the report API answers for the same period and filters
    report = api("report", params)
    assert banking == charts_of(report) and report["overview"]["total_runs"] > 0
    assert set(banking["modules"]["labels"]) == {"banking"}
    # and the confusion matrix and the per-intent table what the confusion API answers
    assert matrix["cells"] == {f"{c['expected']} -> {c['detected']}": c["count"] for c in confusion["matrix"]}
    assert matrix["perIntent"] == {i["intent"]: [i["precision"], i["recall"], i["f1"], i["support"]]
                                   for i in confusion["per_intent"]} and confusion["labelled_runs"] > 0

    # when: an intent is chosen among the values of the unfiltered period
    from selenium.webdriver.support.ui import Select

    offered = [o.get_attribute("value") for o in
               Select(browser.find_element("css selector", '#ad-filters select[name="intent"]')).options]
    assert set(offered) == {"", "balance", "transfer", "pay_bill", "international_visa", "exchange_rate"}
    tabs = [o.get_attribute("value") for o in
            Select(browser.find_element("css selector", '#ad-filters select[name="tab"]')).options]
    assert sorted(tabs) == ["", "accounts", "bills", "trips"]  # the tab's free text: offered from the rollups
    assert not browser.find_element("css selector", '#ad-filters select[name="experiment"]').is_displayed()  # none ran
    Select(browser.find_element("css selector", '#ad-filters select[name="intent"]')).select_by_value("balance")
    params |= {"intent": "balance"}
    balance = shown(browser, report_query(days=7, until=until, module="banking", tab="accounts", intent="balance"))
    assert balance == charts_of(api("report", params)) and balance["intents"]["labels"] == ["balance"]
    assert "intent=balance" in browser.execute_script("return location.search")

    # when: the range starts later (the From date): three days, every chart follows
    browser.execute_script("const f = document.getElementById('ad-since'); f.value = arguments[0];"
                           "f.dispatchEvent(new Event('change'));", (today - timedelta(days=2)).isoformat())
    params |= {"days": 3}
    three = shown(browser, report_query(**params))
    assert three == charts_of(api("report", params)) and len(three["runs"]["labels"]) == 3

    # when: the filters are cleared, the period stays
    browser.find_element("id", "ad-filters-clear").click()
    everything = shown(browser, report_query(days=3, until=until))
    assert everything == charts_of(api("report", {"days": 3, "until": until}))
    assert sum(everything["modules"]["data"][0]) > sum(three["modules"]["data"][0])
    location = browser.execute_script("return location.search")
    assert f"since={(today - timedelta(days=2)).isoformat()}" in location and "module" not in location


def compare_shown(driver) -> dict:
    return driver.execute_script("""
        const heads = Array.from(document.querySelectorAll('#table-compare thead th')).slice(1).map((th) => th.textContent);
        const rows = {};
        document.querySelectorAll('#table-compare tbody tr').forEach((tr) => {
            rows[tr.dataset.kpi] = Array.from(tr.querySelectorAll('td')).map((td) => JSON.parse(td.dataset.value)); });
        const c = Chart.getChart(document.getElementById('chart-compare'));
        return {heads, rows, labels: c.data.labels, series: c.data.datasets.map((d) => [d.label, d.data]),
                deltas: Array.from(document.querySelectorAll('#table-compare td small')).map((s) => s.textContent)};""")


COMPARED = {"Runs": lambda o: o["total_runs"], "Success rate": lambda o: o["success_rate"],
            "Accuracy (labelled)": lambda o: o["accuracy"], "Avg confidence": lambda o: o["avg_confidence"],
            "Latency p50": lambda o: o["response_time_ms"]["p50"], "Latency p95": lambda o: o["response_time_ms"]["p95"],
            "Out of scope": lambda o: o["out_of_scope_rate"], "Fallback rate": lambda o: o["fallback_rate"]}


def test_compare_shows_two_prompt_versions_and_two_periods_side_by_side_like_the_api(
        transactional_db, live_server, browser, django_user_model, run_logger, admin_client):
    seed_two_versions(run_logger.log)
    staff_session(live_server, browser, django_user_model)
    report = lambda **params: admin_client.get("/api/analytics/mlflow/report", params).json()  # noqa: E731
    from selenium.webdriver.support.ui import Select

    # when: prompt versions are picked for comparison (the period's two are taken), then the success rate's series
    browser.get(f"{live_server.url}{PAGE}?days=7")
    shown(browser, report_query(days=7))
    Select(browser.find_element("css selector", '#ad-compare select[name="compare"]')).select_by_value("prompt_version")
    wait_for(browser, "return document.getElementById('analytics-dashboard').dataset.compare === 'ready'")
    versions = compare_shown(browser)
    Select(browser.find_element("css selector", '#ad-compare select[name="compare_series"]')).select_by_value("success_rate")
    wait_for(browser, "return (document.getElementById('analytics-dashboard').dataset.compareQuery || '')"
                      ".includes('|success_rate|')")
    success = compare_shown(browser)

    # then: both versions' key figures and daily series are the API's for each
    assert sorted(versions["heads"]) == ["v-new", "v-old"]
    answers = [report(days=7, prompt_version=version)["overview"] for version in versions["heads"]]
    daily = [report(days=7, prompt_version=version)["trends"]["days"] for version in versions["heads"]]
    assert versions["rows"] == {name: [read(answer) for answer in answers] for name, read in COMPARED.items()}
    assert versions["labels"] == [d["day"] for d in daily[0]]
    assert versions["series"] == [[head, [d["runs"] for d in days]] for head, days in zip(versions["heads"], daily, strict=True)]
    assert success["series"][1] == [versions["heads"][1], [d["success_rate"] for d in daily[1]]]
    assert any(delta.endswith("vs " + versions["heads"][0]) for delta in versions["deltas"])
    assert "compare=prompt_version" in browser.execute_script("return location.search")

    # when: two periods are compared (a shared link), day by day
    today = timezone.now().astimezone(UTC).date()
    ranges = [(today - timedelta(days=1), today), (today - timedelta(days=3), today - timedelta(days=2))]
    values = "&".join(f"compare_value={a.isoformat()}..{b.isoformat()}" for a, b in ranges)
    browser.get(f"{live_server.url}{PAGE}?days=7&compare=period&{values}")
    wait_for(browser, "return document.getElementById('analytics-dashboard').dataset.compare === 'ready'")
    periods = compare_shown(browser)
    answers = [report(days=2, until=b.isoformat())["overview"] for _, b in ranges]
    assert periods["rows"] == {name: [read(answer) for answer in answers] for name, read in COMPARED.items()}
    assert periods["labels"] == ["day 1", "day 2"] and len(periods["series"]) == 2


def chart_colours(driver) -> dict:
    """Each chart's grid and tick colours (its y axis'), with the admin theme's own and a marker of this page load."""
    return driver.execute_script("""
        const css = getComputedStyle(document.documentElement);
        return {marker: window.pageMarker || null, theme: document.documentElement.dataset.theme,
                hairline: css.getPropertyValue('--hairline-color').trim(), quiet: css.getPropertyValue('--body-quiet-color').trim(),
                charts: Object.values(Chart.instances).map((c) => [c.canvas.id, c.options.scales.y.grid.color,
                                                                   c.options.scales.y.ticks.color])};""")


def test_the_page_fits_a_700px_window_and_the_theme_repaints_its_charts_without_a_reload(
        transactional_db, live_server, browser, django_user_model, run_logger):
    seed_two_versions(run_logger.log)
    staff_session(live_server, browser, django_user_model)
    browser.get(f"{live_server.url}{PAGE}?days=7&compare=prompt_version")
    shown(browser, report_query(days=7), "confusion")
    wait_for(browser, "return document.getElementById('analytics-dashboard').dataset.compare === 'ready'")

    # when: the window is 700 px wide
    narrow = narrow_window(browser, 700)
    # then: nothing sticks out sideways, and every chart is as wide as its (narrower) box
    assert narrow["scroll"] <= narrow["client"] <= 700
    assert len(narrow["charts"]) == 9 and all(0 < width <= box <= 700 for width, box in narrow["charts"])

    # when: the admin's theme toggle is clicked until it is dark (no reload: the page's marker stays)
    browser.execute_script("window.pageMarker = 'same page'")
    light = chart_colours(browser)
    while browser.execute_script("return document.documentElement.dataset.theme") != "dark":
        browser.find_element("css selector", "button.theme-toggle").click()
    wait_for(browser, "return Chart.getChart(document.getElementById('chart-runs')).options.scales.y.grid.color"
                      " !== arguments[0]", light["hairline"])
    dark = chart_colours(browser)
    # then: every chart's grid and ticks have the dark theme's colours
    assert dark["marker"] == "same page" and dark["hairline"] != light["hairline"]
    assert {(grid, ticks) for _, grid, ticks in light["charts"]} == {(light["hairline"], light["quiet"])}
    assert {(grid, ticks) for _, grid, ticks in dark["charts"]} == {(dark["hairline"], dark["quiet"])}

    # when: the theme follows the system (auto) and the system turns light, then dark
    while browser.execute_script("return document.documentElement.dataset.theme") != "auto":
        browser.find_element("css selector", "button.theme-toggle").click()
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "light"}]})
    wait_for(browser, "return Chart.getChart(document.getElementById('chart-runs')).options.scales.y.grid.color"
                      " === arguments[0]", light["hairline"])
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    wait_for(browser, "return Chart.getChart(document.getElementById('chart-runs')).options.scales.y.grid.color"
                      " === arguments[0]", dark["hairline"])
    assert chart_colours(browser)["marker"] == "same page"


def test_experiment_and_variant_are_chosen_from_dropdowns_of_the_values_that_ran(
        transactional_db, live_server, browser, django_user_model, run_logger, admin_client):
    from selenium.webdriver.support.ui import Select

    for i, (experiment, variant) in enumerate([("tone", "control"), ("tone", "short"), ("length", "long")] * 4):
        run_logger.log(start_ms=today_ms(i % 3, seconds=i), intent="balance", module="banking", tab="accounts",
                       prompt_version="v1", model=MODELS[0], confidence=0.8, latency_ms=2.0 + i,
                       extra_tags={"experiment": experiment, "variant": variant})
    runs_sync()
    staff_session(live_server, browser, django_user_model)
    browser.get(f"{live_server.url}{PAGE}")
    shown(browser, report_query(days=30))

    def offered(name: str) -> list[str]:
        return [o.get_attribute("value") for o in
                Select(browser.find_element("css selector", f'#ad-filters select[name="{name}"]')).options]

    assert browser.find_element("css selector", '#ad-filters select[name="experiment"]').is_displayed()
    assert offered("experiment") == ["", "length", "tone"]
    assert offered("variant") == ["", "control", "long", "short"]  # every experiment's arms, none chosen
    Select(browser.find_element("css selector", '#ad-filters select[name="experiment"]')).select_by_value("tone")
    shown(browser, report_query(days=30, experiment="tone"))
    assert offered("variant") == ["", "control", "short"]  # the chosen experiment's arms only
    Select(browser.find_element("css selector", '#ad-filters select[name="variant"]')).select_by_value("short")
    query = report_query(days=30, experiment="tone", variant="short")
    charts = shown(browser, query)
    assert "experiment=tone&variant=short" in browser.execute_script("return location.search")
    report = admin_client.get("/api/analytics/mlflow/report", {"days": 30, "experiment": "tone", "variant": "short"})
    assert charts == charts_of(report.json()) and report.json()["overview"]["total_runs"] == 4


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


SCREENSHOT_WIDTH = 1280
DEMO_BOARD = [  # a custom board over the demo month: every chart type, all on the banking module
    {"title": "Banking detections", "metric": "runs", "days": 30, "chart": "number", "width": 3, "height": 1},
    {"title": "Success rate", "metric": "success_rate", "days": 30, "chart": "number", "width": 3, "height": 1},
    {"title": "Accuracy (labelled)", "metric": "accuracy", "days": 30, "chart": "number", "width": 3, "height": 1},
    {"title": "Latency p95", "metric": "latency_p95_ms", "days": 30, "chart": "number", "width": 3, "height": 1},
    {"title": "Detections per day", "metric": "runs", "breakdown": "day", "days": 30, "chart": "line", "width": 8},
    {"title": "Fallbacks per model", "metric": "fallback_rate", "breakdown": "model_name", "days": 30, "chart": "table",
     "width": 4},
    {"title": "Top intents this week", "metric": "runs", "breakdown": "intent", "days": 7, "chart": "bar", "width": 6,
     "height": 3},
    {"title": "Confidence per user role", "metric": "avg_confidence", "breakdown": "user_role", "days": 30,
     "chart": "bar", "width": 6, "height": 3},
]


def whole_page_screenshot(driver, target: Path) -> bool:
    """The whole page in one picture, SCREENSHOT_WIDTH wide, its charts redrawn at their final size."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(SCREENSHOT_WIDTH, height + 140)
    driver.execute_script("Object.values(Chart.instances).forEach((c) => { c.options.animation = false; c.resize(); });")
    target.parent.mkdir(parents=True, exist_ok=True)
    return driver.get_screenshot_as_file(str(target))


def test_screenshot_of_a_demo_month(transactional_db, live_server, browser, django_user_model, settings, tmp_path,
                                    mlflow_store):
    """The README's pictures: the dashboard filtered on a module with two prompt versions compared
    (DASHBOARD_SCREENSHOT), and a custom board (BOARD_SCREENSHOT)."""
    settings.MLFLOW_UI_URL = "http://127.0.0.1:5000"
    runs = demo_runs(runs=6000, days=30)
    now = timezone.now()
    MirroredRun.objects.bulk_create([MirroredRun(**mirror_row_build(run), mirrored_at=now) for run in runs],
                                    batch_size=500)
    rollups_refresh(experiment_id="1", days=set(MirroredRun.objects.values_list("day", flat=True)))
    SyncState.objects.create(experiment_name=settings.MLFLOW_EXPERIMENT_NAME, experiment_id="1",
                             last_succeeded_at=now, newest_start_time=now, mirrored_runs=len(runs))
    from analytics.boards.services import default_boards_create
    from analytics.models import Board
    from analytics.monitors.defaults import monitors_create_defaults
    from analytics.monitors.services import monitors_evaluate

    monitors_create_defaults()  # as `make demo` does, evaluated once: the page shows their states
    monitors_evaluate()
    default_boards_create()
    staff_session(live_server, browser, django_user_model)
    browser.set_window_size(SCREENSHOT_WIDTH, 1000)

    browser.get(f"{live_server.url}{PAGE}?days=30&module=banking&compare=prompt_version")
    month = shown(browser, report_query(days=30, module="banking"), "confusion", "calibration")
    wait_for(browser, "return document.getElementById('analytics-dashboard').dataset.compare === 'ready'")
    runs_tile = browser.find_element("css selector", '[data-kpi="total_runs"] .ad-kpi-value').text
    dashboard = Path(os.environ.get("DASHBOARD_SCREENSHOT") or tmp_path / "dashboard.png")
    dashboard_saved = whole_page_screenshot(browser, dashboard)

    owner = django_user_model.objects.get(username="analyst")
    board = Board.objects.create(name="Banking this month", owner=owner, visibility=Board.Visibility.STAFF,
                                 description="What the support team watches for banking customers.",
                                 widgets=[{"filters": {"module": "banking"}, "breakdown": "", "until": None,
                                           "height": 2} | widget for widget in DEMO_BOARD])
    browser.set_window_size(SCREENSHOT_WIDTH, 1000)
    browser.get(f"{live_server.url}/admin/analytics/board/{board.pk}/view/")
    wait_for(browser, "return document.getElementById('analytics-board').dataset.state === 'ready'")
    board_picture = Path(os.environ.get("BOARD_SCREENSHOT") or tmp_path / "board.png")
    board_saved = whole_page_screenshot(browser, board_picture)

    in_window = [run for run in runs if run.start_time >= today_ms(29) and run.tags["current_module"] == "banking"]
    assert runs_tile == f"{len(in_window):,}" and sum(month["runs"]["data"][0]) == len(in_window)
    assert dashboard_saved and dashboard.stat().st_size > 50_000
    assert board_saved and board_picture.stat().st_size > 20_000
    print(json.dumps({"screenshots": [str(dashboard), str(board_picture)], "runs": len(in_window)}))


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
