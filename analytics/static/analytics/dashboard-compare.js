/* The dashboard's Compare section: two or more prompt versions, models or periods side by side, under the page's
   filters. Each value is one full report (/api/analytics/mlflow/report with that value as a filter, or that
   period): key figures with the difference to the first, and the chosen daily series overlaid in one chart.
   State in the URL: ?compare=prompt_version&compare_value=a&compare_value=b&compare_series=runs; a period is
   written since..until. */
(function () {
  "use strict";

  const AD = window.AnalyticsDashboard;
  if (!AD) return;
  const AC = window.AnalyticsCharts;
  const { format, element } = AC;
  const root = AD.root;
  const MAX_VALUES = 6;  // beyond, neither the table nor the chart's colours stay readable
  const section = document.getElementById("ad-compare");
  const fieldset = document.getElementById("ad-compare-values");
  const hint = document.getElementById("ad-compare-hint");
  const HINT = hint.textContent;
  const KPIS = [
    ["Runs", "int", (o) => o.total_runs],
    ["Success rate", "pct", (o) => o.success_rate],
    ["Accuracy (labelled)", "pct", (o) => o.accuracy],
    ["Avg confidence", "dec", (o) => o.avg_confidence],
    ["Latency p50", "ms", (o) => o.response_time_ms.p50],
    ["Latency p95", "ms", (o) => o.response_time_ms.p95],
    ["Out of scope", "pct", (o) => o.out_of_scope_rate],
    ["Fallback rate", "pct", (o) => o.fallback_rate],
  ];

  // --- The values to compare --------------------------------------------------------------------------------------
  const parseRange = (value) => {
    const [since, until] = String(value).split("..");
    return AD.isDay(since) && AD.isDay(until) ? { since, until } : null;
  };

  // When a dimension is picked without values: the two first (newest prompt versions, busiest models), or for
  // periods the page's period and the one as long just before it. Written into the URL without a history step.
  function defaults(current) {
    const { dimension } = current.compare;
    if (dimension === "period") {
      const p = current.period;
      const before = AD.addDays(p.since, -1);
      return [p.since + ".." + p.until, AD.addDays(before, 1 - p.days) + ".." + before];
    }
    return AD.choiceValues(dimension).slice(0, 2);
  }

  function checkbox(value, checked) {
    const input = element("input", { attrs: { type: "checkbox", value } });
    input.checked = checked;
    input.addEventListener("change", () => {
      const picked = Array.from(fieldset.querySelectorAll("input:checked")).map((box) => box.value);
      AD.navigate({ compare_value: picked });
    });
    return element("label", {}, [input, document.createTextNode(" " + value)]);
  }

  function periodRow(value, index, values) {
    const range = parseRange(value) || { since: "", until: "" };
    const date = (name) => element("input", { attrs: { type: "date", name, value: range[name], "aria-label":
      "Period " + (index + 1) + (name === "since" ? " from" : " to") } });
    const since = date("since");
    const until = date("until");
    const write = () => AD.navigate({ compare_value: values.map((v, i) => (i === index ? since.value + ".." + until.value : v)) });
    since.addEventListener("change", write);
    until.addEventListener("change", write);
    const remove = element("button", { className: "ad-button", text: "×", attrs: { type: "button",
      "aria-label": "Remove period " + (index + 1) } });
    remove.disabled = values.length <= 2;
    remove.addEventListener("click", () => AD.navigate({ compare_value: values.filter((_, i) => i !== index) }));
    return element("span", { className: "ad-compare-period" }, [since, document.createTextNode("→"), until, remove]);
  }

  function showControls(current) {
    const { dimension, values, series } = current.compare;
    section.querySelector("select[name=compare]").value = dimension;
    section.querySelector("select[name=compare_series]").value = series;
    fieldset.hidden = !dimension;
    const legend = fieldset.querySelector("legend");
    fieldset.replaceChildren(legend);
    if (dimension === "period") {
      values.forEach((value, index) => fieldset.appendChild(periodRow(value, index, values)));
      const add = element("button", { className: "ad-button", text: "+ period", attrs: { type: "button" } });
      add.disabled = values.length >= MAX_VALUES;
      add.addEventListener("click", () => AD.navigate({ compare_value: [...values, values[values.length - 1]] }));
      fieldset.appendChild(add);
    } else if (dimension) {
      const offered = Array.from(new Set([...AD.choiceValues(dimension), ...values]));
      if (!offered.length) fieldset.appendChild(element("span", { className: "ad-muted", text: "No value ran in this period." }));
      offered.forEach((value) => fieldset.appendChild(checkbox(value, values.includes(value))));
    }
  }

  // --- Reports and rendering ----------------------------------------------------------------------------------------
  function queryFor(current, value) {
    const { dimension } = current.compare;
    if (dimension === "period") {
      const range = parseRange(value);
      return range && AD.query(current, { period: AD.range(range.since, range.until) });
    }
    return AD.query(current, { filters: { ...current.filters, [dimension]: value } });
  }

  const label = (dimension, value) => (dimension === "period" ? value.replace("..", " → ") : value);

  function renderTable(current, reports) {
    const { dimension, values } = current.compare;
    const table = document.getElementById("table-compare");
    table.tHead.replaceChildren(element("tr", {}, [element("th", { text: "" }), ...values.map((value, i) => {
      const head = element("th", { className: "num ad-swatch", text: label(dimension, value), attrs: { scope: "col" } });
      head.style.setProperty("--swatch", AC.PALETTE[i % AC.PALETTE.length]);
      return head;
    })]));
    const base = reports[0].overview;
    table.tBodies[0].replaceChildren(...KPIS.map(([name, kind, read]) => element("tr", { attrs: { "data-kpi": name } }, [
      element("th", { text: name, attrs: { scope: "row" } }),
      ...reports.map((report, i) => {
        const value = read(report.overview);
        const cell = element("td", { className: "num", text: format[kind](value),
                                     attrs: { "data-value": JSON.stringify(value === undefined ? null : value) } });
        const change = i ? AC.delta(kind, value, read(base)) : "";
        if (change) cell.appendChild(element("small", { text: change + " vs " + label(dimension, values[0]) }));
        return cell;
      })])));
  }

  // Periods of different dates share their axis as day 1, 2, ...; other values share the page's days.
  function renderChart(current, reports) {
    const { dimension, values, series } = current.compare;
    const byPeriod = dimension === "period";
    const length = Math.max(...reports.map((r) => r.trends.days.length));
    const labels = byPeriod ? Array.from({ length }, (_, i) => "day " + (i + 1)) : reports[0].trends.days.map((d) => d.day);
    const title = section.querySelector("select[name=compare_series] option:checked").textContent;
    AC.line(document.getElementById("chart-compare"), {
      labels, labelKind: byPeriod ? "category" : "day", kind: AC.kindOf(series), legend: true,
      xTitle: byPeriod ? "day of the period" : "day (UTC)", yTitle: title,
      series: reports.map((report, i) => ({ label: label(dimension, values[i]),
                                            data: report.trends.days.map((d) => d[series]) })),
    });
  }

  // --- Loading ---------------------------------------------------------------------------------------------------------
  let latest = 0;

  async function load(current) {
    showControls(current);
    const { dimension, values } = current.compare;
    if (dimension && !values.length) {
      const picked = defaults(current);
      if (picked.length) AD.navigate({ compare_value: picked }, { replace: true });
      return;  // the navigation calls back with the values, or the choices arrive later
    }
    const queries = values.slice(0, MAX_VALUES).map((value) => queryFor(current, value));
    const ready = dimension && queries.length >= 2 && queries.every(Boolean) && !current.period.error;
    hint.hidden = Boolean(ready);
    hint.textContent = HINT;
    document.getElementById("ad-compare-result").hidden = !ready;
    if (!ready) {
      latest++;
      delete root.dataset.compareQuery;
      root.dataset.compare = dimension ? "incomplete" : "off";
      return;
    }
    const key = dimension + "|" + current.compare.series + "|" + queries.join("|");
    if (root.dataset.compareQuery === key) return;
    const asked = ++latest;
    root.dataset.compare = "loading";
    try {
      const reports = await Promise.all(queries.map((query) => AC.request(root.dataset.reportUrl + query)));
      if (asked !== latest) return;
      renderTable(current, reports);
      renderChart(current, reports);
      root.dataset.compareQuery = key;
      root.dataset.compare = "ready";
    } catch (error) {
      if (asked !== latest) return;
      hint.hidden = false;
      hint.textContent = "The comparison could not be loaded: " + error.message;
      root.dataset.compare = "error";
    }
  }

  section.querySelector("select[name=compare]").addEventListener("change", (event) => {
    AD.navigate({ compare: event.target.value, compare_value: [] });
  });
  section.querySelector("select[name=compare_series]").addEventListener("change", (event) => {
    AD.navigate({ compare_series: event.target.value === "runs" ? "" : event.target.value });
  });
  AD.subscribe(load);
  AD.onChoices(() => load(AD.state()));  // the values offered (and defaults) come with the unfiltered report
})();
