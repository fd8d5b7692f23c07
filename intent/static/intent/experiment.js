// An experiment's results page: per arm, its primary metric and its runs per day (Chart.js, from the page's JSON).
(function () {
  "use strict";
  const PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00"]; // Okabe-Ito: colour-blind safe

  function draw() {
    const root = document.getElementById("experiment");
    const daily = JSON.parse(document.getElementById("experiment-daily").textContent);
    const metric = JSON.parse(document.getElementById("experiment-metric-name").textContent);
    const days = [...new Set(daily.map((row) => row.day))].sort();
    const arms = [...new Set(daily.map((row) => row.arm))];
    const series = (field) => arms.map((arm, index) => ({
      label: arm,
      data: days.map((day) => {
        const row = daily.find((r) => r.day === day && r.arm === arm);
        return row ? row[field] : null;
      }),
      borderColor: PALETTE[index % PALETTE.length],
      backgroundColor: PALETTE[index % PALETTE.length],
      spanGaps: true,
    }));
    const charts = {
      metric: new Chart(document.getElementById("experiment-metric"), {
        type: "line", data: { labels: days, datasets: series("value") },
        options: { plugins: { title: { display: true, text: metric + " per day" } }, animation: false },
      }),
      runs: new Chart(document.getElementById("experiment-runs"), {
        type: "bar", data: { labels: days, datasets: series("runs") },
        options: { plugins: { title: { display: true, text: "runs per day" } }, animation: false },
      }),
    };
    window.experimentCharts = charts;
    root.dataset.state = "ready";
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
