/* The "Detection analytics" admin page's main report: key figures, daily trends, distributions, errors, prompt
   versions and models, read from /api/analytics/mlflow/report (the admin's session) for the period and filters in
   the URL (dashboard-state.js). Charts are created once and updated in place, so `Chart.getChart(canvas)` always
   answers for what the page shows. */
(function () {
  "use strict";

  const AD = window.AnalyticsDashboard;
  if (!AD) return;
  const AC = window.AnalyticsCharts;
  const { format, td, fillRows, element, DASH } = AC;
  const { int, pct, dec, ms, usd } = format;
  const root = AD.root;
  const TOP_INTENTS = 15;
  const LATEST_ERRORS = 10;
  const NO_RUNS = "No runs in this period — send one with POST /api/intent/detect, or widen the period or the filters.";

  // --- Charts ---------------------------------------------------------------------------------------------------
  const charts = {};
  const canvas = (id) => document.getElementById(id);
  const box = (id) => canvas(id).parentElement;

  function createCharts() {
    const daily = { labelKind: "day", xTitle: "day (UTC)" };
    charts.runs = AC.bar(canvas("chart-runs"), { ...daily, kind: "int", yTitle: "runs" });
    charts.success = AC.line(canvas("chart-success"), { ...daily, kind: "pct", yTitle: "success rate",
                                                        y: { min: 0, max: 1 } });
    charts.confidence = AC.line(canvas("chart-confidence"), { ...daily, kind: "dec", yTitle: "avg confidence",
                                                              y: { min: 0, max: 1 } });
    charts.latency = AC.line(canvas("chart-latency"), { ...daily, kind: "ms", yTitle: "latency", yLog: true, legend: true,
      y: { ticks: { callback: (v) => ([0.1, 1, 10, 100, 1000, 10000, 100000].includes(v) ? ms(v) : "") } } });
    charts.intents = AC.bar(canvas("chart-intents"), { kind: "int", xTitle: "runs", yTitle: "intent" });
    charts.modules = AC.bar(canvas("chart-modules"), { kind: "int", xTitle: "runs", yTitle: "module" });
    charts.errors = AC.bar(canvas("chart-errors"), { kind: "int", xTitle: "failed runs", yTitle: "category" });
  }

  const one = (label, data, color) => [{ label, data, color }];

  // --- Rendering a report ----------------------------------------------------------------------------------------
  function setKpi(name, value, note) {
    const tile = root.querySelector('[data-kpi="' + name + '"]');
    tile.querySelector(".ad-kpi-value").textContent = value;
    tile.querySelector(".ad-kpi-note").textContent = note || "";
  }

  function renderKpis(report) {
    const o = report.overview;
    const rt = o.response_time_ms || {};
    const tokens = o.tokens || {};
    setKpi("total_runs", int(o.total_runs), o.user_roles.length ? o.user_roles.length + " user roles" : "");
    setKpi("success_rate", pct(o.success_rate), o.total_runs ? int(o.total_runs - report.errors.total_errors) + " succeeded" : "");
    setKpi("error_rate", pct(o.error_rate), int(report.errors.total_errors) + " errors");
    setKpi("avg_confidence", dec(o.avg_confidence), o.labelled_runs ? "accuracy " + pct(o.accuracy) + " of " + int(o.labelled_runs) + " labelled" : "");
    setKpi("p50", ms(rt.p50), AC.isNum(rt.avg) ? "avg " + ms(rt.avg) : "");
    setKpi("p95", ms(rt.p95), AC.isNum(rt.p99) ? "p99 " + ms(rt.p99) : "");
    setKpi("out_of_scope_rate", pct(o.out_of_scope_rate));
    setKpi("fallback_rate", pct(o.fallback_rate), "local backend answered");
    setKpi("template_match_rate", pct(o.template_match_rate));
    setKpi("tokens", int(tokens.total), usd(o.cost_usd));
  }

  function renderTrends(report) {
    const days = report.trends.days;
    const labels = days.map((d) => d.day);
    AC.setSeries(charts.runs, labels, one("Runs", days.map((d) => d.runs)));
    AC.setSeries(charts.success, labels, one("Success rate", days.map((d) => d.success_rate), AC.STATUS.good));
    AC.setSeries(charts.confidence, labels, one("Avg confidence", days.map((d) => d.avg_confidence)));
    AC.setSeries(charts.latency, labels, [{ label: "p95", data: days.map((d) => d.p95_ms), color: AC.PALETTE[1] },
                                          { label: "p50", data: days.map((d) => d.p50_ms), color: AC.PALETTE[0] }]);
    const empty = report.overview.total_runs ? "" : NO_RUNS;
    ["chart-runs", "chart-success", "chart-confidence", "chart-latency"].forEach((id) => AC.showEmpty(box(id), empty));
  }

  function renderDistributions(report) {
    const o = report.overview;
    const intents = o.intent_distribution.slice(0, TOP_INTENTS);
    AC.setSeries(charts.intents, intents.map((i) => i.intent || "(none)"), one("Runs", intents.map((i) => i.runs)));
    document.getElementById("ad-intents-note").textContent = o.intent_distribution.length > TOP_INTENTS
      ? "(top " + TOP_INTENTS + " of " + o.intent_distribution.length + ")" : "";
    AC.showEmpty(box("chart-intents"), intents.length ? "" : NO_RUNS);
    AC.setSeries(charts.modules, o.modules.map((m) => m.module || "(none)"),
                 one("Runs", o.modules.map((m) => m.runs), AC.PALETTE[4]));
    AC.showEmpty(box("chart-modules"), o.modules.length ? "" : NO_RUNS);
  }

  function renderErrors(report) {
    const errors = report.errors;
    const categories = errors.by_category.filter((c) => c.count > 0);
    AC.setSeries(charts.errors, categories.map((c) => c.error_category || "(none)"),
                 one("Errors", categories.map((c) => c.count), AC.STATUS.bad));
    AC.showEmpty(box("chart-errors"), categories.length ? "" : "No errors in this period.");
    document.getElementById("ad-errors-note").textContent = errors.total_errors
      ? "(" + int(errors.total_errors) + ", " + pct(errors.error_rate) + ")" : "";
    fillRows(document.querySelector("#table-error-types tbody"), errors.by_type.map((t) => [
      td(code(t.error_type)), td(t.error_category), td(int(t.count), "num"), td(code(t.sample_run_id)),
    ]), 4, "No errors in this period.");
    fillRows(document.querySelector("#table-latest-errors tbody"), errors.latest.slice(0, LATEST_ERRORS).map((r) => [
      td(when(r.start_time)), td(r.error_category), td(r.error_type), td(code(r.request_id)), td(link(r.run_id, r.mlflow_url)),
    ]), 5, "No failing runs in this period.");
  }

  function renderVersionsAndModels(report) {
    fillRows(document.querySelector("#table-prompts tbody"), report.prompt_analysis.versions.map((v) => {
      const e = v.evaluation;
      const evaluation = e ? "in-scope " + pct(e.in_scope_accuracy) + " · OOS recall " + pct(e.oos_recall) +
        " · macro-F1 " + dec(e.macro_f1) : "";
      return [td(link(v.prompt_version, drillDown({ prompt_version: v.prompt_version }))), td(when(v.first_seen)),
              td(when(v.last_seen)), td(int(v.runs), "num"), td(dec(v.avg_confidence), "num"), td(ms(v.avg_ms), "num"),
              td(ms(v.p95_ms), "num"), td(pct(v.error_rate), "num"), td(pct(v.out_of_scope_rate), "num"),
              td(v.labelled_runs ? pct(v.accuracy) : DASH, "num"), td(evaluation)];
    }), 11, "No prompt version ran in this period.");
    // Confidence and latency are the model's own answers'; the local backend's answers after a failure apart.
    fillRows(document.querySelector("#table-models tbody"), report.model_comparison.models.map((m) => [
      td(link(m.model_name, drillDown({ model_name: m.model_name }))), td(int(m.runs), "num"),
      td(pct(m.lm_success_rate), "num"), td(pct(m.fallback_rate), "num"), td(dec(m.avg_confidence), "num"),
      td(ms(m.p50_ms), "num"), td(ms(m.p95_ms), "num"),
      td(m.fallback_answers.runs ? dec(m.fallback_answers.avg_confidence) : DASH, "num"),
      td(int((m.prompt_tokens || 0) + (m.completion_tokens || 0)), "num"),
      td(usd(m.cost_usd), "num"), td(m.labelled_runs ? pct(m.accuracy) : DASH, "num"),
    ]), 11, "No model ran in this period.");
  }

  function showPeriod(report, current) {
    const p = report.period;
    const shown = Object.entries(current.filters).map(([name, value]) => name + "=" + value).join(", ");
    const head = current.period.custom ? p.days + " days: " : "Last " + p.days + " days: ";
    document.getElementById("ad-period").textContent = head + p.since + " → " + p.until + " (UTC)" +
      (current.period.clipped ? " (at most " + p.days + " days)" : "") + (shown ? " · " + shown : "");
  }

  function showMessage(text, isError) {
    const message = document.getElementById("ad-message");
    message.classList.toggle("is-error", Boolean(isError));
    message.hidden = !text;
    message.textContent = text || "";
  }

  function render(report, current) {
    renderKpis(report);
    renderTrends(report);
    renderDistributions(report);
    renderErrors(report);
    renderVersionsAndModels(report);
    showPeriod(report, current);
    const p = report.period;
    const filtered = Object.keys(current.filters).length ? " under these filters" : "";
    const last = current.period.custom ? "" : "last ";
    showMessage(report.overview.total_runs > 0 ? "" : "No detections were recorded in the " + last + p.days +
      " days (" + p.since + " → " + p.until + ")" + filtered + ". Send one with POST /api/intent/detect, or widen " +
      "the period" + (filtered ? " or clear the filters" : "") + "; once runs arrive in MLflow and the sync mirrors " +
      "them, they show here.");
  }

  // --- Links ------------------------------------------------------------------------------------------------------
  const when = (iso) => (iso ? iso.replace("T", " ").slice(0, 16) : DASH);  // UTC, to the minute
  const code = (text) => element("code", { text: text || DASH });

  function link(text, href) {
    if (!href) return code(text);
    return element("a", { attrs: { href, target: "_blank", rel: "noopener" } }, [code(text)]);
  }

  // the report filters as the detections' admin list calls them (drill-downs keep them)
  const DETAIL_FILTERS = { module: "current_module", user_role: "user_role", model_name: "model_name",
                           prompt_version: "prompt_version", tab: "current_tab", intent: "detected_intent" };
  let shownPeriod = null;

  // The detections behind a bar or a row: intent's admin list, filtered, over the period shown.
  function drillDown(filters) {
    if (!root.dataset.detailsUrl) return null;  // this user may not read detections' messages
    const params = new URLSearchParams();
    Object.entries(AD.state().filters).forEach(([name, value]) => {
      if (DETAIL_FILTERS[name]) params.set(DETAIL_FILTERS[name], value);
    });
    Object.entries(filters).forEach(([name, value]) => params.set(name, value));
    if (shownPeriod) {  // UTC instants: a bare date is a naive datetime to the admin's filter
      params.set("created_at__gte", shownPeriod.since + "T00:00:00+00:00");
      params.set("created_at__lt", AD.addDays(shownPeriod.until, 1) + "T00:00:00+00:00");
    }
    return root.dataset.detailsUrl + "?" + params.toString();
  }

  function clickThrough(chart, filter) {
    if (!root.dataset.detailsUrl) return;
    chart.canvas.style.cursor = "pointer";
    chart.canvas.addEventListener("click", (event) => {
      const hit = chart.getElementsAtEventForMode(event, "nearest", { intersect: true }, true)[0];
      if (hit) window.location.href = drillDown(filter(chart.data.labels[hit.index]));
    });
  }

  // --- Loading -------------------------------------------------------------------------------------------------------
  let latestRequest = 0;
  let loadedQuery = null;

  async function load(current) {
    if (current.period.error) {
      showMessage(current.period.error + " Choose another range.", true);
      root.dataset.state = "error";
      return;
    }
    const query = AD.query(current);
    if (query === loadedQuery) return;  // e.g. only the comparison changed
    const request = ++latestRequest;
    root.dataset.state = "loading";
    try {
      const report = await AC.request(root.dataset.reportUrl + query);
      // The filters' choices: the values of the period without filters.
      const unfiltered = Object.keys(current.filters).length
        ? await AC.request(root.dataset.reportUrl + AD.query(current, { filters: {} })) : report;
      if (request !== latestRequest) return;  // a newer state was asked for meanwhile
      shownPeriod = report.period;
      render(report, current);
      AD.setChoices(unfiltered);
      AD.reported(current);
      loadedQuery = query;
      root.dataset.filters = JSON.stringify(current.filters);
      root.dataset.loadedDays = String(report.period.days);
      root.dataset.loadedQuery = query;
      root.dataset.state = "ready";
    } catch (error) {
      if (request !== latestRequest) return;
      showMessage("The report could not be loaded: " + error.message, true);
      root.dataset.state = "error";
    }
  }

  async function loadHealth() {
    const pill = document.getElementById("ad-health");
    let health;
    try {
      health = await AC.request(root.dataset.healthUrl);
    } catch (error) {
      health = error.answer || {};  // 503: down, and why
    }
    pill.dataset.status = health.status || "unknown";
    pill.textContent = "health " + (health.status || "unknown");
    pill.title = (health.reasons || []).join(", ") || (health.status ? "MLflow, sync, broker and database are fine" : "");
  }

  createCharts();
  clickThrough(charts.intents, (intent) => ({ detected_intent: intent }));
  clickThrough(charts.errors, (category) => ({ error_category: category }));
  AD.subscribe(load);
  loadHealth();
})();
