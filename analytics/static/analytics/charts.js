/* Shared pieces of the analytics admin pages (Detection analytics, a board): a colour-blind-safe palette, the
   admin theme's colours and the charts' repaint when the theme changes, numbers formatted for reading, JSON
   requests with the admin's session, and a small chart factory (line, bar; number and table for widgets).
   Exposed as `window.AnalyticsCharts`; needs the vendored Chart.js loaded before it. */
(function () {
  "use strict";

  // Okabe & Ito's palette, which the common colour-vision deficiencies still tell apart; its black is left out
  // (invisible on the dark theme) and a mid grey stands last in its place.
  const PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442", "#999999"];
  const STATUS = { good: "#009E73", bad: "#D55E00", warn: "#E69F00" };

  // --- Numbers ---------------------------------------------------------------------------------------------
  // In the admin's language (<html lang>), so separators read as the rest of the admin does.
  const LANG = document.documentElement.lang || undefined;
  const DASH = "–";
  const isNum = (x) => typeof x === "number" && isFinite(x);
  const numberFormat = (options) => new Intl.NumberFormat(LANG, options);
  const FORMATS = {
    int: numberFormat({ maximumFractionDigits: 0 }),
    pct: numberFormat({ style: "percent", minimumFractionDigits: 1, maximumFractionDigits: 1 }),
    pct0: numberFormat({ style: "percent", maximumFractionDigits: 0 }),
    dec: numberFormat({ minimumFractionDigits: 2, maximumFractionDigits: 2 }),
    signed: numberFormat({ minimumFractionDigits: 1, maximumFractionDigits: 1, signDisplay: "exceptZero" }),
  };

  // Dollars with the digits that matter: $1,234 · $12.30 · $0.0952 (a detection costs fractions of a cent).
  function usd(x) {
    if (!isNum(x)) return DASH;
    const digits = Math.abs(x) >= 100 ? 0 : Math.abs(x) >= 1 ? 2 : 4;
    return numberFormat({ style: "currency", currency: "USD", minimumFractionDigits: digits,
                          maximumFractionDigits: digits }).format(x);
  }

  // Three significant digits or so: 1.59 ms · 12.4 ms · 253 ms · 1.16 s.
  function ms(x) {
    if (!isNum(x)) return DASH;
    const fixed = (value, digits) => numberFormat({ minimumFractionDigits: digits, maximumFractionDigits: digits })
      .format(value);
    if (Math.abs(x) >= 1000) return fixed(x / 1000, 2) + " s";
    return fixed(x, Math.abs(x) >= 100 ? 0 : Math.abs(x) >= 10 ? 1 : 2) + " ms";
  }

  const format = {
    int: (x) => (isNum(x) ? FORMATS.int.format(Math.round(x)) : DASH),
    pct: (x) => (isNum(x) ? FORMATS.pct.format(x) : DASH),
    dec: (x) => (isNum(x) ? FORMATS.dec.format(x) : DASH),
    usd,
    ms,
  };

  // The kind of number each report metric is (widgets' metrics and the reports' fields alike).
  const KINDS = { runs: "int", labelled_runs: "int", tokens: "int", total_runs: "int", avg_confidence: "dec",
                  cost_usd: "usd", accuracy: "pct" };

  function kindOf(metric) {
    if (KINDS[metric]) return KINDS[metric];
    if (/_rate$/.test(metric)) return "pct";
    if (/_ms$/.test(metric) || /^p\d+$/.test(metric)) return "ms";
    return "dec";
  }

  // A difference to a baseline, as a reader compares: rates in percentage points, counts in per cent.
  function delta(kind, value, base) {
    if (!isNum(value) || !isNum(base)) return "";
    const diff = value - base;
    if (kind === "pct") return FORMATS.signed.format(diff * 100) + " pp";
    if (kind === "int") return base ? FORMATS.signed.format((diff / base) * 100) + " %" : "";
    if (kind === "ms") return (diff > 0 ? "+" : "") + ms(diff);
    return (diff > 0 ? "+" : "") + format[kind](diff);
  }

  const dayLabel = (day) => new Date(day + "T00:00:00Z").toLocaleDateString(LANG,
    { month: "short", day: "numeric", timeZone: "UTC" });

  // --- Requests with the admin's session ----------------------------------------------------------------------
  function csrfToken() {
    const field = document.querySelector("input[name=csrfmiddlewaretoken]");
    return field ? field.value : "";
  }

  // JSON in and out; a refused request throws an Error whose message is the API's own words (its answer, if any,
  // in `error.answer`: a health check's 503 still says what is down).
  async function request(url, { method = "GET", body } = {}) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET") headers["X-CSRFToken"] = csrfToken();
    const response = await fetch(url, { method, headers, credentials: "same-origin",
                                        body: body === undefined ? undefined : JSON.stringify(body) });
    const answer = await response.json().catch(() => null);
    if (!response.ok) {
      const detail = answer && (answer.detail || JSON.stringify(answer));
      throw Object.assign(new Error(detail || response.status + " " + response.statusText), { answer });
    }
    return answer;
  }

  // --- Theme: the admin's light / dark / auto, read from its CSS variables ------------------------------------
  function theme() {
    const css = getComputedStyle(document.documentElement);
    const value = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
    return { text: value("--body-quiet-color", "#666"), grid: value("--hairline-color", "#e8e8e8"),
             border: value("--border-color", "#ccc"), font: value("--font-family-primary", "system-ui, sans-serif") };
  }

  // Series keep their palette's colours, which read on both themes; the axes, grids and legends take the theme's,
  // and on a change of theme every chart is painted again and updated in place (no reload, no new chart).
  function paint(chart, colors) {
    Object.values(chart.options.scales || {}).forEach((scale) => {
      scale.grid.color = colors.grid;
      scale.border.color = colors.border;
      scale.ticks.color = colors.text;
      scale.title.color = colors.text;
    });
    chart.options.plugins.legend.labels.color = colors.text;
  }

  function repaint() {
    const colors = theme();
    Chart.defaults.color = colors.text;
    Object.values(Chart.instances).forEach((chart) => {
      paint(chart, colors);
      chart.update("none");
    });
  }

  function followTheme() {
    new MutationObserver(repaint).observe(document.documentElement,
      { attributes: true, attributeFilter: ["data-theme"] });
    window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", repaint);
    const colors = theme();
    Chart.defaults.font.family = colors.font;
    Chart.defaults.color = colors.text;
  }

  // --- Chart factory -----------------------------------------------------------------------------------------
  const TICKS = { ...format, pct: (v) => FORMATS.pct0.format(v) };  // whole per cents along an axis

  // One axis: its title, the theme's colours, and ticks written like the values (a day axis keeps ISO dates
  // as labels, so a chart's data say which day, and shows them short).
  function axis(kind, title, { grid = true, ticks = {}, ...rest } = {}) {
    const colors = theme();
    let callback = TICKS[kind];
    if (kind === "day") callback = function (value) { return dayLabel(this.getLabelForValue(value)); };
    const precision = kind === "int" ? { precision: 0 } : {};  // no "0.5 runs" between whole ones
    return { ...rest, title: { display: Boolean(title), text: title || "", color: colors.text },
             grid: { display: grid, color: colors.grid }, border: { color: colors.border },
             ticks: { color: colors.text, ...precision, ...(callback ? { callback } : {}), ...ticks } };
  }

  function options({ legend = false, kind = "int", valueAxis = "y", labelKind, scales, ...rest }) {
    const shown = format[kind] || format.dec;
    const title = labelKind === "day" ? (items) => (items[0] ? dayLabel(items[0].label) : "") : undefined;
    return {
      responsive: true, maintainAspectRatio: false, animation: { duration: 250 },
      interaction: { mode: "index", intersect: false }, scales, ...rest,
      plugins: {
        legend: { display: legend, position: "bottom", labels: { boxWidth: 12, color: theme().text } },
        tooltip: { callbacks: { ...(title ? { title } : {}),
          label: (c) => (c.dataset.label ? c.dataset.label + ": " : "") + shown(c.parsed[valueAxis]) } },
      },
    };
  }

  function dataset(type, { label = "", data = [], color }, index) {
    const paintWith = color || PALETTE[index % PALETTE.length];
    if (type === "bar") return { label, data, backgroundColor: paintWith, borderRadius: 3, maxBarThickness: 28 };
    return { label, data, borderColor: paintWith, backgroundColor: paintWith + "33", pointRadius: 2,
             borderWidth: 2, tension: 0.25, spanGaps: false, fill: false };
  }

  function make(canvas, config) {
    const existing = Chart.getChart(canvas);
    if (existing) existing.destroy();
    return new Chart(canvas, config);
  }

  // A daily (or any ordered) series: one line a series. `labelKind` "day": labels are ISO dates.
  function line(canvas, { labels = [], series = [], kind = "int", labelKind = "category", xTitle, yTitle,
                          legend = series.length > 1, yLog = false, y = {} }) {
    const yScale = yLog ? { type: "logarithmic", ...y } : { beginAtZero: true, ...y };
    return make(canvas, { type: "line", data: { labels, datasets: series.map((s, i) => dataset("line", s, i)) },
      options: options({ legend, kind, labelKind, scales: {
        x: axis(labelKind, xTitle, { grid: false, ticks: { maxRotation: 0, autoSkipPadding: 12 } }),
        y: axis(kind, yTitle, yScale) } }) });
  }

  // Bars: vertical over days, horizontal over categories (long names read best down the side).
  function bar(canvas, { labels = [], series = [], kind = "int", labelKind = "category", xTitle, yTitle,
                         legend = series.length > 1, horizontal = labelKind !== "day" }) {
    const valueAxis = horizontal ? "x" : "y";
    const categoryAxis = horizontal ? "y" : "x";
    const scales = {
      [categoryAxis]: axis(labelKind, horizontal ? yTitle : xTitle, { grid: false, ticks: horizontal
        ? { autoSkip: false } : { maxRotation: 0, autoSkipPadding: 12 } }),
      [valueAxis]: axis(kind, horizontal ? xTitle : yTitle, { beginAtZero: true, ticks: { autoSkipPadding: 10 } }),
    };
    return make(canvas, { type: "bar", data: { labels, datasets: series.map((s, i) => dataset("bar", s, i)) },
      options: options({ legend, kind, labelKind, valueAxis, indexAxis: horizontal ? "y" : "x",
                         interaction: { mode: "nearest", axis: categoryAxis, intersect: false }, scales }) });
  }

  // New data in place (the chart stays the same object: Chart.getChart(canvas) answers for what is shown).
  function setSeries(chart, labels, series) {
    const type = chart.config.type === "bar" ? "bar" : "line";
    chart.data.labels = labels;
    series.forEach((s, i) => {
      if (chart.data.datasets[i]) Object.assign(chart.data.datasets[i], { label: s.label, data: s.data });
      else chart.data.datasets.push(dataset(type, s, i));
    });
    chart.data.datasets.length = series.length;
    chart.update();
  }

  // The "nothing to show" note over a chart's box (what to do about it, not just "no data").
  function showEmpty(box, text) {
    let note = box.querySelector(".ad-empty");
    if (!note) {
      note = document.createElement("p");
      note.className = "ad-empty";
      box.appendChild(note);
    }
    note.hidden = !text;
    if (text) note.textContent = text;
  }

  // --- Tables --------------------------------------------------------------------------------------------------
  function element(tag, { className, text, attrs } = {}, children = []) {
    const el = document.createElement(tag);
    if (className) el.className = className;
    if (text !== undefined) el.textContent = text;
    Object.entries(attrs || {}).forEach(([name, value]) => el.setAttribute(name, value));
    children.forEach((child) => el.appendChild(child));
    return el;
  }

  function td(content, className) {
    const cell = element("td", { className });
    if (content instanceof Node) cell.appendChild(content);
    else cell.textContent = content === null || content === undefined || content === "" ? DASH : String(content);
    return cell;
  }

  // Rows of cells into a table's body, or one row that says why there are none.
  function fillRows(body, rows, columns, emptyText) {
    body.replaceChildren();
    if (!rows.length) {
      const cell = td(emptyText);
      cell.colSpan = columns;
      body.appendChild(element("tr", { className: "ad-none" }, [cell]));
      return;
    }
    rows.forEach((cells) => body.appendChild(cells instanceof Node ? cells : element("tr", {}, cells)));
  }

  // --- A board's widget: one metric, drawn as a number, a line, bars or a table ---------------------------------
  const NO_RUNS = "No runs in this widget's period — send one with POST /api/intent/detect, or widen its period.";
  const BREAKDOWN_TITLES = { day: "day (UTC)", intent: "intent", user_role: "user role", module: "module", tab: "tab",
                             model_name: "model", prompt_version: "prompt version", error_category: "error category",
                             experiment: "experiment", variant: "experiment / variant" };
  const metricTitle = (metric) => metric.replace(/_ms$/, " (ms)").replace(/_/g, " ");

  // What a number without a value lacks: runs in its period, or runs that measure it (labels for accuracy).
  function numberNote(data) {
    const runs = data.total.runs;
    if (!runs) return NO_RUNS;
    if (data.total.value !== null) return format.int(runs) + " runs";
    if (data.metric === "accuracy") return "None of its " + format.int(runs) + " runs is labelled yet: label detections to see it.";
    return "None of its " + format.int(runs) + " runs measured it.";
  }

  function numberWidget(body, data, kind) {
    const value = data.total.value;
    body.appendChild(element("div", { className: "ad-number", text: format[kind](value),
                                      attrs: { "data-value": JSON.stringify(value) } }));
    body.appendChild(element("div", { className: "ad-number-note", text: numberNote(data) }));
  }

  // A day without runs has no rate, but it has zero runs (the API leaves both null).
  const COUNTS = new Set(["runs", "labelled_runs", "tokens", "cost_usd"]);
  const rowValue = (metric, row) => (row.value === null && !row.runs && COUNTS.has(metric) ? 0 : row.value);

  function tableWidget(body, data, kind) {
    const head = element("thead", {}, [element("tr", {}, [
      element("th", { text: BREAKDOWN_TITLES[data.breakdown] || "value" }),
      element("th", { className: "num", text: metricTitle(data.metric) }), element("th", { className: "num", text: "runs" })])]);
    const rows = (data.rows.length ? data.rows : [{ key: "all", ...data.total }]).map((row) => element("tr",
      { attrs: { "data-key": row.key, "data-value": JSON.stringify(row.value) } },
      [td(row.key || "(none)"), td(format[kind](row.value), "num"), td(format.int(row.runs), "num")]));
    const tbody = element("tbody");
    fillRows(tbody, data.total.runs ? rows : [], 3, NO_RUNS);
    body.appendChild(element("div", { className: "ad-table-wrap" }, [element("table", { className: "ad-table" }, [head, tbody])]));
  }

  function chartWidget(body, data, kind, chart, title) {
    const canvas = element("canvas", { attrs: { role: "img", "aria-label": title } });
    const box = element("div", { className: "ad-chart ad-chart-fill" }, [canvas]);
    body.appendChild(box);
    const labelKind = data.breakdown === "day" ? "day" : "category";
    const spec = { labels: data.rows.map((row) => row.key), kind, labelKind,
                   series: [{ label: metricTitle(data.metric), data: data.rows.map((row) => rowValue(data.metric, row)) }],
                   xTitle: BREAKDOWN_TITLES[data.breakdown], yTitle: metricTitle(data.metric) };
    if (chart === "bar" && labelKind !== "day") [spec.xTitle, spec.yTitle] = [spec.yTitle, spec.xTitle];
    (chart === "line" ? line : bar)(canvas, spec);
    showEmpty(box, data.total.runs ? "" : NO_RUNS);
  }

  // `entry`: one item of /api/analytics/boards/{id}/data ({index, widget, data}). A widget without a breakdown
  // has a single number whatever its chart says.
  function drawWidget(body, entry) {
    const { widget, data } = entry;
    const kind = kindOf(data.metric);
    const chart = data.breakdown ? widget.chart : (widget.chart === "table" ? "table" : "number");
    body.replaceChildren();
    body.dataset.chart = chart;
    if (chart === "number") numberWidget(body, data, kind);
    else if (chart === "table") tableWidget(body, data, kind);
    else chartWidget(body, data, kind, chart, widget.title || metricTitle(data.metric));
  }

  followTheme();
  window.AnalyticsCharts = { PALETTE, STATUS, DASH, isNum, format, kindOf, delta, dayLabel, request, theme, repaint,
                             axis, options, make, line, bar, setSeries, showEmpty, element, td, fillRows, drawWidget,
                             metricTitle, BREAKDOWN_TITLES };
})();
