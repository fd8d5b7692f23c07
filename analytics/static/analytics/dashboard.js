/* The "Detection analytics" admin page: reads /api/analytics/mlflow/report (session auth, same origin) for the
   chosen period and draws it with Chart.js. Charts are created once and updated in place on a period change,
   so `Chart.getChart(canvas)` always answers for the page's current data. */
(function () {
  "use strict";

  const TOP_INTENTS = 15;
  const LATEST_ERRORS = 10;
  const root = document.getElementById("analytics-dashboard");
  if (!root) return;

  const css = getComputedStyle(document.documentElement);
  const cssVar = (name, fallback) => (css.getPropertyValue(name) || "").trim() || fallback;
  const COLORS = {
    primary: cssVar("--primary", "#417690"),
    secondary: cssVar("--secondary", "#79aec8"),
    text: cssVar("--body-quiet-color", "#666"),
    grid: cssVar("--hairline-color", "#e8e8e8"),
    good: "#2e9e5b",
    bad: "#d9534f",
    warn: "#e0a526",
  };
  const PALETTE = ["#417690", "#79aec8", "#e0a526", "#2e9e5b", "#d9534f", "#8e6cc0", "#4bb3a4", "#c0648e",
                   "#7f8c8d", "#b5a642", "#5d7ec4", "#d4804c"];

  // --- Formatting ---------------------------------------------------------------------------------------
  const dash = "–";
  const isNum = (x) => typeof x === "number" && isFinite(x);
  const pct = (x, digits = 1) => (isNum(x) ? (x * 100).toFixed(digits) + "%" : dash);
  const int = (x) => (isNum(x) ? Math.round(x).toLocaleString("en-US") : dash);
  const dec = (x, digits = 2) => (isNum(x) ? x.toFixed(digits) : dash);
  const ms = (x) => {
    if (!isNum(x)) return dash;
    if (x >= 1000) return (x / 1000).toFixed(2) + " s";
    return (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2)) + " ms";
  };
  const usd = (x) => (isNum(x) ? "$" + (x >= 100 ? x.toFixed(0) : x.toFixed(x >= 1 ? 2 : 4)) : dash);
  const dayLabel = (day) => new Date(day + "T00:00:00Z").toLocaleDateString("en-US",
    { month: "short", day: "numeric", timeZone: "UTC" });
  const when = (iso) => (iso ? iso.replace("T", " ").slice(0, 16) : dash);  // UTC, to the minute

  // --- Charts ---------------------------------------------------------------------------------------------
  const charts = {};

  function baseOptions(extra) {
    return Object.assign({
      responsive: true,
      maintainAspectRatio: false,
      animation: { duration: 250 },
      interaction: { mode: "index", intersect: false },
      plugins: { legend: { display: false } },
    }, extra || {});
  }

  function timeAxes(y) {
    return {
      x: { grid: { display: false }, ticks: { color: COLORS.text, maxRotation: 0, autoSkipPadding: 12 } },
      y: Object.assign({ grid: { color: COLORS.grid }, ticks: { color: COLORS.text }, beginAtZero: true }, y || {}),
    };
  }

  function chart(id, config) {
    if (charts[id]) return charts[id];
    const canvas = document.getElementById(id);
    charts[id] = new window.Chart(canvas, config);
    return charts[id];
  }

  function setData(id, labels, datasets) {
    const c = charts[id];
    c.data.labels = labels;
    datasets.forEach((values, i) => { c.data.datasets[i].data = values; });
    c.update();
  }

  function showEmpty(id, empty) {
    const note = document.getElementById(id).parentElement.querySelector(".ad-empty");
    if (note) note.hidden = !empty;
  }

  function createCharts() {
    Chart.defaults.font.family = cssVar("--font-family-primary", "system-ui, sans-serif");
    Chart.defaults.color = COLORS.text;
    const line = (label, color) => ({ label, data: [], borderColor: color, backgroundColor: color + "33",
                                      pointRadius: 2, borderWidth: 2, tension: 0.25, spanGaps: false, fill: false });
    chart("chart-runs", { type: "bar", data: { labels: [], datasets: [
      { label: "Runs", data: [], backgroundColor: COLORS.primary, borderRadius: 3, maxBarThickness: 28 }] },
      options: baseOptions({ scales: timeAxes({ ticks: { color: COLORS.text, precision: 0 } }) }) });
    chart("chart-success", { type: "line", data: { labels: [], datasets: [line("Success rate", COLORS.good)] },
      options: baseOptions({ scales: timeAxes({ min: 0, max: 1, ticks: { color: COLORS.text, callback: (v) => pct(v, 0) } }),
        plugins: { legend: { display: false }, tooltip: { callbacks: { label: (c) => "Success " + pct(c.parsed.y) } } } }) });
    chart("chart-confidence", { type: "line", data: { labels: [], datasets: [line("Avg confidence", COLORS.secondary)] },
      options: baseOptions({ scales: timeAxes({ min: 0, max: 1 }) }) });
    chart("chart-latency", { type: "line", data: { labels: [], datasets: [line("p95", COLORS.warn), line("p50", COLORS.primary)] },
      options: baseOptions({ scales: timeAxes({ type: "logarithmic", beginAtZero: false,
        ticks: { color: COLORS.text, callback: (v) => ([0.1, 1, 10, 100, 1000, 10000, 100000].includes(v) ? ms(v) : "") } }),
        plugins: { legend: { display: true, position: "bottom", labels: { boxWidth: 12 } },
                   tooltip: { callbacks: { label: (c) => c.dataset.label + " " + ms(c.parsed.y) } } } }) });
    chart("chart-intents", { type: "bar", data: { labels: [], datasets: [
      { label: "Runs", data: [], backgroundColor: COLORS.secondary, borderRadius: 3, maxBarThickness: 18 }] },
      options: baseOptions({ indexAxis: "y", interaction: { mode: "nearest", axis: "y", intersect: false },
        scales: { x: { beginAtZero: true, grid: { color: COLORS.grid }, ticks: { color: COLORS.text, precision: 0 } },
                  y: { grid: { display: false }, ticks: { color: COLORS.text, autoSkip: false } } } }) });
    chart("chart-modules", { type: "doughnut", data: { labels: [], datasets: [
      { label: "Runs", data: [], backgroundColor: PALETTE, borderWidth: 1 }] },
      options: baseOptions({ cutout: "58%", interaction: { mode: "nearest", intersect: true },
        plugins: { legend: { display: true, position: "bottom", labels: { boxWidth: 12 } } } }) });
    chart("chart-calibration", { type: "scatter", data: { datasets: [
      { label: "Observed", data: [], backgroundColor: COLORS.primary, borderColor: COLORS.primary, showLine: true,
        pointRadius: 4, borderWidth: 2 },
      { label: "Perfect", data: [{ x: 0, y: 0 }, { x: 1, y: 1 }], borderColor: COLORS.grid, borderDash: [4, 4],
        showLine: true, pointRadius: 0, borderWidth: 1 }] },
      options: baseOptions({ scales: {
        x: { min: 0, max: 1, title: { display: true, text: "mean confidence", color: COLORS.text }, grid: { color: COLORS.grid }, ticks: { color: COLORS.text } },
        y: { min: 0, max: 1, title: { display: true, text: "accuracy", color: COLORS.text }, grid: { color: COLORS.grid }, ticks: { color: COLORS.text } } },
        plugins: { legend: { display: true, position: "bottom", labels: { boxWidth: 12 } },
                   tooltip: { callbacks: { label: (c) => "confidence " + dec(c.parsed.x) + " → accuracy " + pct(c.parsed.y) } } } }) });
    chart("chart-errors", { type: "bar", data: { labels: [], datasets: [
      { label: "Errors", data: [], backgroundColor: COLORS.bad, borderRadius: 3, maxBarThickness: 18 }] },
      options: baseOptions({ indexAxis: "y", interaction: { mode: "nearest", axis: "y", intersect: false },
        scales: { x: { beginAtZero: true, grid: { color: COLORS.grid }, ticks: { color: COLORS.text, precision: 0 } },
                  y: { grid: { display: false }, ticks: { color: COLORS.text } } } }) });
  }

  // --- Tables -------------------------------------------------------------------------------------------
  function td(content, className) {
    const cell = document.createElement("td");
    if (className) cell.className = className;
    if (content instanceof Node) cell.appendChild(content);
    else cell.textContent = content === null || content === undefined || content === "" ? dash : String(content);
    return cell;
  }

  function code(text) {
    const el = document.createElement("code");
    el.textContent = text || dash;
    return el;
  }

  function link(text, href) {
    if (!href) return code(text);
    const a = document.createElement("a");
    a.href = href;
    a.target = "_blank";
    a.rel = "noopener";
    a.appendChild(code(text));
    return a;
  }

  function fillTable(id, rows, columns, emptyText) {
    const body = document.querySelector("#" + id + " tbody");
    body.replaceChildren();
    if (!rows.length) {
      const tr = document.createElement("tr");
      tr.className = "ad-none";
      const cell = td(emptyText);
      cell.colSpan = columns;
      tr.appendChild(cell);
      body.appendChild(tr);
      return;
    }
    rows.forEach((cells) => {
      const tr = document.createElement("tr");
      cells.forEach((cell) => tr.appendChild(cell));
      body.appendChild(tr);
    });
  }

  // --- Rendering a report ---------------------------------------------------------------------------------
  function setKpi(name, value, note) {
    const tile = root.querySelector('[data-kpi="' + name + '"]');
    tile.querySelector(".ad-kpi-value").textContent = value;
    tile.querySelector(".ad-kpi-note").textContent = note || "";
  }

  function render(report) {
    const o = report.overview;
    const period = report.period;
    const rt = o.response_time_ms || {};
    document.getElementById("ad-period").textContent = "Last " + period.days + " days: " + period.since + " → " +
      period.until + " (UTC)";
    setKpi("total_runs", int(o.total_runs), o.user_roles.length ? o.user_roles.length + " user roles" : "");
    setKpi("success_rate", pct(o.success_rate), o.total_runs ? int(o.total_runs - report.errors.total_errors) + " succeeded" : "");
    setKpi("error_rate", pct(o.error_rate), report.errors ? int(report.errors.total_errors) + " errors" : "");
    setKpi("avg_confidence", dec(o.avg_confidence), o.labelled_runs ? "accuracy " + pct(o.accuracy) + " of " + int(o.labelled_runs) + " labelled" : "");
    setKpi("p50", ms(rt.p50), isNum(rt.avg) ? "avg " + ms(rt.avg) : "");
    setKpi("p95", ms(rt.p95), isNum(rt.p99) ? "p99 " + ms(rt.p99) : "");
    setKpi("out_of_scope_rate", pct(o.out_of_scope_rate));
    setKpi("fallback_rate", pct(o.fallback_rate), "local backend answered");
    setKpi("template_match_rate", pct(o.template_match_rate));
    const tokens = o.tokens || {};
    setKpi("tokens", int(tokens.total), usd(o.cost_usd));

    const days = report.trends.days;
    const labels = days.map((d) => dayLabel(d.day));
    setData("chart-runs", labels, [days.map((d) => d.runs)]);
    setData("chart-success", labels, [days.map((d) => d.success_rate)]);
    setData("chart-confidence", labels, [days.map((d) => d.avg_confidence)]);
    setData("chart-latency", labels, [days.map((d) => d.p95_ms), days.map((d) => d.p50_ms)]);

    const intents = o.intent_distribution.slice(0, TOP_INTENTS);
    setData("chart-intents", intents.map((i) => i.intent || "(none)"), [intents.map((i) => i.runs)]);
    document.getElementById("ad-intents-note").textContent = o.intent_distribution.length > TOP_INTENTS
      ? "(top " + TOP_INTENTS + " of " + o.intent_distribution.length + ")" : "";
    showEmpty("chart-intents", !intents.length);
    const modules = o.modules;
    setData("chart-modules", modules.map((m) => m.module || "(none)"), [modules.map((m) => m.runs)]);
    showEmpty("chart-modules", !modules.length);

    const errors = report.errors;
    const categories = errors.by_category.filter((c) => c.count > 0);
    setData("chart-errors", categories.map((c) => c.error_category || "(none)"), [categories.map((c) => c.count)]);
    showEmpty("chart-errors", !categories.length);
    document.getElementById("ad-errors-note").textContent = errors.total_errors ? "(" + int(errors.total_errors) + ", " + pct(errors.error_rate) + ")" : "";
    fillTable("table-error-types", errors.by_type.map((t) => [
      td(code(t.error_type)), td(t.error_category), td(int(t.count), "num"), td(code(t.sample_run_id)),
    ]), 4, "No errors in this period.");
    fillTable("table-latest-errors", errors.latest.slice(0, LATEST_ERRORS).map((r) => [
      td(when(r.start_time)), td(r.error_category), td(r.error_type), td(code(r.request_id)), td(link(r.run_id, r.mlflow_url)),
    ]), 5, "No failing runs in this period.");

    fillTable("table-prompts", report.prompt_analysis.versions.map((v) => {
      const e = v.evaluation;
      const evaluation = e ? "in-scope " + pct(e.in_scope_accuracy) + " · OOS recall " + pct(e.oos_recall) +
        " · macro-F1 " + dec(e.macro_f1) : "";
      return [td(link(v.prompt_version, drillDown({ prompt_version: v.prompt_version }))), td(when(v.first_seen)), td(when(v.last_seen)), td(int(v.runs), "num"),
              td(dec(v.avg_confidence), "num"), td(ms(v.avg_ms), "num"), td(ms(v.p95_ms), "num"),
              td(pct(v.error_rate), "num"), td(pct(v.out_of_scope_rate), "num"),
              td(v.labelled_runs ? pct(v.accuracy) : dash, "num"), td(evaluation)];
    }), 11, "No prompt version ran in this period.");

    // Confidence and latency are the model's own answers'; the local backend's answers after a failure apart.
    fillTable("table-models", report.model_comparison.models.map((m) => [
      td(link(m.model_name, drillDown({ model_name: m.model_name }))), td(int(m.runs), "num"), td(pct(m.lm_success_rate), "num"), td(pct(m.fallback_rate), "num"),
      td(dec(m.avg_confidence), "num"), td(ms(m.p50_ms), "num"), td(ms(m.p95_ms), "num"),
      td(m.fallback_answers.runs ? dec(m.fallback_answers.avg_confidence) : dash, "num"),
      td(int((m.prompt_tokens || 0) + (m.completion_tokens || 0)), "num"),
      td(usd(m.cost_usd), "num"), td(m.labelled_runs ? pct(m.accuracy) : dash, "num"),
    ]), 11, "No model ran in this period.");

    const message = document.getElementById("ad-message");
    message.classList.remove("is-error");
    message.hidden = o.total_runs > 0;
    message.textContent = o.total_runs > 0 ? "" : "No detections were recorded in the last " + period.days +
      " days (" + period.since + " → " + period.until + "). Once runs arrive in MLflow and the sync mirrors them, they show here.";
  }

  // --- Drill-downs and calibration ------------------------------------------------------------------------
  let shownPeriod = null;

  // The detections behind a bar or a row: intent's admin list, filtered, over the period shown.
  function drillDown(filters) {
    if (!root.dataset.detailsUrl) return null;  // this user may not read detections' messages
    const params = new URLSearchParams(filters);
    Object.entries(pageState().filters).forEach(([name, value]) => {
      if (DETAIL_FILTERS[name]) params.set(DETAIL_FILTERS[name], value);
    });
    if (shownPeriod) {
      params.set("created_at__gte", shownPeriod.since);
      params.set("created_at__lt", nextDay(shownPeriod.until));
    }
    return root.dataset.detailsUrl + "?" + params.toString();
  }

  function nextDay(day) {
    const date = new Date(day + "T00:00:00Z");
    date.setUTCDate(date.getUTCDate() + 1);
    return date.toISOString().slice(0, 10);
  }

  function clickThrough(id, filter) {
    const canvas = document.getElementById(id);
    if (!root.dataset.detailsUrl) return;
    canvas.style.cursor = "pointer";
    canvas.addEventListener("click", (event) => {
      const c = Chart.getChart(canvas);
      const hit = c.getElementsAtEventForMode(event, "nearest", { intersect: true }, true)[0];
      if (hit) window.location.href = drillDown(filter(c.data.labels[hit.index]));
    });
  }

  function renderCalibration(body) {
    const groups = body.groups;
    const top = groups[0];
    setData("chart-calibration", undefined, [top ? top.bins.filter((b) => b.runs > 0).map(
      (b) => ({ x: b.mean_confidence, y: b.accuracy })) : []]);
    showEmpty("chart-calibration", !top);
    document.getElementById("ad-calibration-note").textContent = top ? "(" + top.model_name + " · " +
      top.prompt_version + ": " + int(top.labelled_runs) + " labelled, ECE " + dec(top.ece) + ")" : "";
    fillTable("table-calibration", groups.map((g) => [
      td(code(g.model_name)), td(code(g.prompt_version)), td(int(g.labelled_runs), "num"), td(pct(g.accuracy), "num"),
      td(dec(g.mean_confidence), "num"), td(dec(g.ece), "num"), td(dec(g.brier), "num"),
      td(g.threshold.threshold === null ? "not reached" : dec(g.threshold.threshold) + " (keeps " + pct(g.threshold.coverage) + ")"),
    ]), 8, "No labelled runs in this period.");
    root.dataset.calibration = "ready";
  }

  async function loadCalibration(days) {
    root.dataset.calibration = "loading";
    try {
      const response = await fetch(root.dataset.calibrationUrl + reportQuery(days),
        { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(String(response.status));
      renderCalibration(await response.json());
    } catch (error) {
      root.dataset.calibration = "error";
    }
  }

  // --- Filters: the page's state lives in its URL (?days=&until=&module=...), so a view can be shared ----------
  const FILTERS = ["module", "user_role", "model_name", "prompt_version", "experiment", "variant"];
  // the report filters as the detections' admin list calls them (drill-downs keep them)
  const DETAIL_FILTERS = { module: "current_module", user_role: "user_role", model_name: "model_name",
                           prompt_version: "prompt_version" };

  function pageState() {
    const params = new URL(window.location.href).searchParams;
    const state = { filters: {}, until: params.get("until") || "" };
    FILTERS.forEach((name) => { if (params.get(name)) state.filters[name] = params.get(name); });
    return state;
  }

  function reportQuery(days) {
    const state = pageState();
    const params = new URLSearchParams({ days: String(days) });
    if (state.until) params.set("until", state.until);
    Object.entries(state.filters).forEach(([name, value]) => params.set(name, value));
    return "?" + params.toString();
  }

  function setOptions(name, values) {
    const select = document.querySelector('#ad-filters select[name="' + name + '"]');
    if (!select) return;
    const current = pageState().filters[name] || "";
    const all = Array.from(new Set([current, ...values].filter((v) => v !== "" && v !== null && v !== undefined)));
    select.replaceChildren(new Option("all", ""), ...all.sort().map((v) => new Option(v, v)));
    select.value = current;
  }

  // The choices of each filter: the values of the period without filters (a filtered report knows only its own).
  async function filterChoices(days, body) {
    const state = pageState();
    if (!Object.keys(state.filters).length) return body;
    const params = new URLSearchParams({ days: String(days) });
    if (state.until) params.set("until", state.until);
    const response = await fetch(root.dataset.reportUrl + "?" + params.toString(),
      { credentials: "same-origin", headers: { Accept: "application/json" } });
    return response.ok ? response.json() : body;
  }

  function showFilters(report) {
    const o = report.overview;
    setOptions("module", (o.modules || []).map((m) => m.module));
    setOptions("user_role", (o.user_roles || []).map((r) => r.user_role));
    setOptions("model_name", (report.model_comparison.models || []).map((m) => m.model_name));
    setOptions("prompt_version", (report.prompt_analysis.versions || []).map((v) => v.prompt_version));
    const state = pageState();
    root.querySelectorAll("#ad-filters input").forEach((input) => {
      input.value = input.name === "until" ? state.until : (state.filters[input.name] || "");
    });
    root.dataset.filters = JSON.stringify(state.filters);
    const shown = Object.entries(state.filters).map(([name, value]) => name + "=" + value).join(", ");
    if (shown) document.getElementById("ad-period").textContent += " · " + shown;
  }

  function filtersChanged() {
    const url = new URL(window.location.href);
    root.querySelectorAll("#ad-filters select, #ad-filters input").forEach((field) => {
      if (field.value) url.searchParams.set(field.name, field.value);
      else url.searchParams.delete(field.name);
    });
    window.history.pushState(null, "", url);
    load(Number(root.dataset.days));
  }

  // --- Loading --------------------------------------------------------------------------------------------
  let latestRequest = 0;

  async function load(days) {
    const request = ++latestRequest;
    root.dataset.state = "loading";
    root.querySelectorAll(".ad-period").forEach((button) => {
      const active = Number(button.dataset.days) === days;
      button.classList.toggle("is-active", active);
      button.setAttribute("aria-pressed", String(active));
    });
    try {
      const response = await fetch(root.dataset.reportUrl + reportQuery(days),
        { credentials: "same-origin", headers: { Accept: "application/json" } });
      const body = await response.json();
      if (request !== latestRequest) return;  // a newer period was asked for meanwhile
      if (!response.ok) throw new Error(body.detail || JSON.stringify(body));
      const choices = await filterChoices(days, body);
      if (request !== latestRequest) return;
      shownPeriod = body.period;
      render(body);
      showFilters(choices);
      loadCalibration(days);
      root.dataset.days = String(days);
      root.dataset.loadedDays = String(days);
      root.dataset.state = "ready";
    } catch (error) {
      if (request !== latestRequest) return;
      const message = document.getElementById("ad-message");
      message.hidden = false;
      message.classList.add("is-error");
      message.textContent = "The report could not be loaded: " + error.message;
      root.dataset.state = "error";
    }
  }

  async function loadHealth() {
    const pill = document.getElementById("ad-health");
    try {
      const response = await fetch(root.dataset.healthUrl, { credentials: "same-origin", headers: { Accept: "application/json" } });
      const health = await response.json();
      pill.dataset.status = health.status || "unknown";
      pill.textContent = "health " + (health.status || "unknown");
      pill.title = (health.reasons || []).join(", ") || "MLflow, sync, broker and database are fine";
    } catch (error) {
      pill.dataset.status = "unknown";
      pill.textContent = "health unknown";
    }
  }

  function start() {
    createCharts();
    clickThrough("chart-intents", (intent) => ({ detected_intent: intent }));
    clickThrough("chart-errors", (category) => ({ error_category: category }));
    root.querySelectorAll(".ad-period").forEach((button) => {
      button.addEventListener("click", () => {
        const days = Number(button.dataset.days);
        const url = new URL(window.location.href);
        url.searchParams.set("days", String(days));
        window.history.replaceState(null, "", url);
        load(days);
      });
    });
    root.querySelectorAll("#ad-filters select, #ad-filters input").forEach((field) => {
      field.addEventListener("change", filtersChanged);
    });
    document.getElementById("ad-filters-clear").addEventListener("click", () => {
      root.querySelectorAll("#ad-filters select, #ad-filters input").forEach((field) => { field.value = ""; });
      filtersChanged();
    });
    window.addEventListener("popstate", () => load(Number(root.dataset.days)));
    load(Number(root.dataset.days));
    loadHealth();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
