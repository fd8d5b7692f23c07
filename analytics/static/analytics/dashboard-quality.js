/* The dashboard's quality sections, from the labelled runs of the period and filters in the URL: the confusion
   matrix of the most frequent intents with per-intent precision, recall and F1 (/api/analytics/mlflow/confusion),
   and the reliability diagram with calibration per model and prompt version (/calibration). */
(function () {
  "use strict";

  const AD = window.AnalyticsDashboard;
  if (!AD) return;
  const AC = window.AnalyticsCharts;
  const { format, td, fillRows, element } = AC;
  const root = AD.root;
  const TOP_INTENTS = 10;  // the matrix's rows and columns; the rest are summed as "(others)"
  const OTHERS = "(others)";
  const NO_LABELS = "No labelled runs in this period — label detections (Intent → Detection details → Label " +
    "detections) or send feedback with POST /api/intent/feedback, or widen the period.";

  // --- Confusion -----------------------------------------------------------------------------------------------
  // The intents seen most in the labels, as expected or as detected.
  function topIntents(matrix) {
    const counts = new Map();
    matrix.forEach((cell) => {
      counts.set(cell.expected, (counts.get(cell.expected) || 0) + cell.count);
      if (cell.detected !== cell.expected) counts.set(cell.detected, (counts.get(cell.detected) || 0) + cell.count);
    });
    return Array.from(counts.entries()).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).map(([intent]) => intent);
  }

  // expected -> detected -> count, over the shown intents (the others folded into one row and column)
  function grid(matrix, shown) {
    const keep = new Set(shown);
    const fold = (intent) => (keep.has(intent) ? intent : OTHERS);
    const counts = {};
    matrix.forEach((cell) => {
      const row = (counts[fold(cell.expected)] = counts[fold(cell.expected)] || {});
      row[fold(cell.detected)] = (row[fold(cell.detected)] || 0) + cell.count;
    });
    return counts;
  }

  const intentName = (intent) => intent || "(none)";

  function matrixCell(count, rowTotal, diagonal) {
    const share = rowTotal ? count / rowTotal : 0;
    const cell = element("td", { text: count ? format.int(count) : "", attrs: { "data-count": String(count),
      title: count ? format.int(count) + " (" + format.pct(share) + " of the row)" : "none" } });
    cell.style.setProperty("--share", share.toFixed(3));
    cell.classList.toggle("is-strong", share > 0.55);  // white text on the darker shades
    cell.classList.toggle("is-diagonal", diagonal);
    return cell;
  }

  function renderMatrix(body) {
    const table = document.getElementById("table-confusion");
    const ordered = topIntents(body.matrix);
    const shown = ordered.slice(0, TOP_INTENTS);
    const axis = ordered.length > TOP_INTENTS ? [...shown, OTHERS] : shown;
    const counts = grid(body.matrix, shown);
    const corner = element("th", { text: "expected ↓ detected →", attrs: { scope: "col" } });
    table.tHead.replaceChildren(element("tr", {}, [corner, ...axis.map((intent) => element("th",
      { text: intentName(intent), attrs: { scope: "col", title: intentName(intent) } }))]));
    const rows = axis.filter((expected) => counts[expected]).map((expected) => {
      const row = counts[expected];
      const total = Object.values(row).reduce((a, b) => a + b, 0);
      return element("tr", { attrs: { "data-expected": expected } }, [
        element("th", { text: intentName(expected), attrs: { scope: "row", title: intentName(expected) } }),
        ...axis.map((detected) => matrixCell(row[detected] || 0, total, detected === expected && expected !== OTHERS))]);
    });
    fillRows(table.tBodies[0], rows, axis.length + 1, NO_LABELS);
    document.getElementById("ad-confusion-note").textContent = body.labelled_runs
      ? "(" + format.int(body.labelled_runs) + " labelled, accuracy " + format.pct(body.accuracy) +
        (ordered.length > TOP_INTENTS ? "; the " + TOP_INTENTS + " most frequent of " + ordered.length + " intents" : "") + ")"
      : "";
  }

  function renderPerIntent(body) {
    const rows = body.per_intent.slice().sort((a, b) => b.support - a.support || a.intent.localeCompare(b.intent))
      .map((item) => element("tr", { attrs: { "data-intent": item.intent, "data-values": JSON.stringify(
        [item.precision, item.recall, item.f1, item.support]) } }, [
        td(intentName(item.intent)), td(format.pct(item.precision), "num"), td(format.pct(item.recall), "num"),
        td(format.dec(item.f1), "num"), td(format.int(item.support), "num")]));
    fillRows(document.querySelector("#table-per-intent tbody"), rows, 5, NO_LABELS);
  }

  // --- Calibration -----------------------------------------------------------------------------------------------
  let reliability = null;

  function reliabilityChart() {
    return AC.make(document.getElementById("chart-calibration"), {
      type: "scatter",
      data: { datasets: [
        { label: "Observed", data: [], backgroundColor: AC.PALETTE[0], borderColor: AC.PALETTE[0], showLine: true,
          pointRadius: 4, borderWidth: 2 },
        { label: "Perfect", data: [{ x: 0, y: 0 }, { x: 1, y: 1 }], borderColor: AC.PALETTE[7], borderDash: [4, 4],
          showLine: true, pointRadius: 0, borderWidth: 1 }] },
      options: AC.options({ legend: true, kind: "pct", interaction: { mode: "nearest", intersect: true }, scales: {
        x: AC.axis("dec", "mean confidence", { min: 0, max: 1 }),
        y: AC.axis("pct", "accuracy", { min: 0, max: 1 }) } }),
    });
  }

  function renderCalibration(body) {
    const top = body.groups[0];
    reliability.data.datasets[0].data = top
      ? top.bins.filter((b) => b.runs > 0).map((b) => ({ x: b.mean_confidence, y: b.accuracy })) : [];
    reliability.update();
    AC.showEmpty(reliability.canvas.parentElement, top ? "" : NO_LABELS);
    document.getElementById("ad-calibration-note").textContent = top ? "(" + top.model_name + " · " +
      top.prompt_version + ": " + format.int(top.labelled_runs) + " labelled, ECE " + format.dec(top.ece) + ")" : "";
    fillRows(document.querySelector("#table-calibration tbody"), body.groups.map((g) => [
      td(element("code", { text: g.model_name })), td(element("code", { text: g.prompt_version })),
      td(format.int(g.labelled_runs), "num"), td(format.pct(g.accuracy), "num"), td(format.dec(g.mean_confidence), "num"),
      td(format.dec(g.ece), "num"), td(format.dec(g.brier), "num"),
      td(g.threshold.threshold === null ? "not reached"
        : format.dec(g.threshold.threshold) + " (keeps " + format.pct(g.threshold.coverage) + ")"),
    ]), 8, NO_LABELS);
  }

  // --- Loading ---------------------------------------------------------------------------------------------------
  // Each section loads once the main report is drawn, and says when it is ready for this query (data-confusion,
  // data-calibration).
  function section(name, url, render) {
    let latest = 0;
    return async function (current) {
      if (current.period.error) return;
      const query = AD.query(current);
      if (root.dataset[name + "Query"] === query) return;
      const asked = ++latest;
      root.dataset[name] = "loading";
      try {
        const body = await AC.request(url + query);
        if (asked !== latest) return;
        render(body);
        root.dataset[name + "Query"] = query;
        root.dataset[name] = "ready";
      } catch (error) {
        if (asked === latest) root.dataset[name] = "error";
      }
    };
  }

  reliability = reliabilityChart();
  AD.onReport(section("confusion", root.dataset.confusionUrl, (body) => { renderMatrix(body); renderPerIntent(body); }));
  AD.onReport(section("calibration", root.dataset.calibrationUrl, renderCalibration));
})();
