/* The admin dashboard's charts, drawn with the vendored Chart.js from the data the page embeds
   (telemetry/dashboard.py). Each chart is stored on window.consoleCharts for tests to read. */
(function () {
  "use strict";
  const source = document.getElementById("console-charts");
  if (!source || typeof Chart === "undefined") return;
  const data = JSON.parse(source.textContent);
  const colours = {
    "Succeeded": "#23883b", "Failed": "#c0392b", "Cancelled": "#555b63", "Running": "#2f6fd6",
    "Waiting for approval": "#c77a00", "Queued": "#8a8f98",
  };
  Chart.defaults.animation = false;
  Chart.defaults.maintainAspectRatio = false;
  const charts = (window.consoleCharts = {});

  function runsDatasets(range) {
    return Object.entries(data[range].series).map(([status, values]) => ({
      label: status, data: values, backgroundColor: colours[status] || "#999", stack: "runs",
    }));
  }
  charts.runs = new Chart(document.getElementById("chart-runs"), {
    type: "bar",
    data: { labels: data.runs_24h.labels, datasets: runsDatasets("runs_24h") },
    options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } },
  });
  document.querySelectorAll(".switch button").forEach((button) => {
    button.addEventListener("click", () => {
      document.querySelectorAll(".switch button").forEach((b) => b.classList.toggle("on", b === button));
      const range = button.dataset.range;
      charts.runs.data.labels = data[range].labels;
      charts.runs.data.datasets = runsDatasets(range);
      charts.runs.update();
    });
  });

  const spend = data.spend_by_day;
  const spendSets = [{ type: "bar", label: "Spent", data: spend.spent, backgroundColor: "#2f6fd6" }];
  if (spend.budget !== null) {
    spendSets.push({
      type: "line", label: "Daily budget", data: spend.labels.map(() => spend.budget),
      borderColor: "#c0392b", borderDash: [6, 4], pointRadius: 0, fill: false,
    });
  }
  charts.spend = new Chart(document.getElementById("chart-spend"), {
    data: { labels: spend.labels, datasets: spendSets }, options: { scales: { y: { beginAtZero: true } } },
  });

  const durations = data.durations;
  charts.durations = new Chart(document.getElementById("chart-durations"), {
    type: "line",
    data: {
      labels: durations.labels,
      datasets: [
        { label: "p50", data: durations.p50, borderColor: "#2f6fd6", spanGaps: true },
        { label: "p95", data: durations.p95, borderColor: "#c77a00", spanGaps: true },
      ],
    },
    options: { scales: { y: { beginAtZero: true } } },
  });

  function top(id, entry, colour) {
    charts[id] = new Chart(document.getElementById("chart-" + id), {
      type: "bar",
      data: { labels: entry.labels, datasets: [{ label: "USD", data: entry.usd, backgroundColor: colour }] },
      options: { indexAxis: "y", plugins: { legend: { display: false } }, scales: { x: { beginAtZero: true } } },
    });
  }
  top("agents", data.top_agents, "#6c5ce7");
  top("models", data.top_models, "#00897b");
  top("workflows", data.top_workflows, "#d35400");
})();
