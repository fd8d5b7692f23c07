/* The dashboard's state: its period, filters and comparison live in the page's URL, so a view can be shared and
   back / forward work. Sections subscribe (`AnalyticsDashboard.subscribe`) and are called on every change of the
   URL with the state read from it; they ask the report APIs with `query(state)`. Exposed as
   `window.AnalyticsDashboard`. */
(function () {
  "use strict";

  const root = document.getElementById("analytics-dashboard");
  if (!root) return;

  const FILTERS = ["module", "user_role", "tab", "model_name", "prompt_version", "intent", "experiment", "variant"];
  const MAX_DAYS = Number(root.dataset.maxDays) || 365;
  const DAY_MS = 86400000;
  const subscribers = [];
  const reportSubscribers = [];
  const choiceSubscribers = [];
  let choices = null;

  // --- Days (UTC, written YYYY-MM-DD as the reports take them) ---------------------------------------------------
  const isoDay = (time) => new Date(time).toISOString().slice(0, 10);
  const today = () => isoDay(Date.now());
  const addDays = (day, n) => isoDay(Date.parse(day + "T00:00:00Z") + n * DAY_MS);
  const daysBetween = (since, until) => Math.round((Date.parse(until) - Date.parse(since)) / DAY_MS) + 1;
  const isDay = (text) => /^\d{4}-\d{2}-\d{2}$/.test(text || "") && !isNaN(Date.parse(text));

  // A range since..until as the reports ask for it: `days` up to `until` (at most MAX_DAYS, the reports' longest).
  function range(since, until) {
    const asked = daysBetween(since, until);
    if (asked < 1) return { error: "The period's first day (" + since + ") is after its last (" + until + ")." };
    const days = Math.min(asked, MAX_DAYS);
    return { days, until, since: addDays(until, 1 - days), sendUntil: true, clipped: asked > MAX_DAYS };
  }

  // The URL's period: `since` (and `until`, default today) for any range; else the last `days` days up to `until`
  // or today. Without dates the reports' own "today" is used, so a preset's link keeps moving with the days.
  function period(params) {
    const until = isDay(params.get("until")) ? params.get("until") : "";
    const since = isDay(params.get("since")) ? params.get("since") : "";
    if (since) return { ...range(since, until || today()), custom: true };
    let days = parseInt(params.get("days"), 10);
    if (!(days >= 1 && days <= MAX_DAYS)) days = Number(root.dataset.defaultDays) || 30;
    const end = until || today();
    return { days, until: end, since: addDays(end, 1 - days), sendUntil: Boolean(until), custom: Boolean(until) };
  }

  function state() {
    const params = new URL(window.location.href).searchParams;
    const filters = {};
    FILTERS.forEach((name) => { if (params.get(name)) filters[name] = params.get(name); });
    return { filters, period: period(params), compare: { dimension: params.get("compare") || "",
      values: params.getAll("compare_value"), series: params.get("compare_series") || "runs" } };
  }

  // The reports' query string: the state's period and filters, or others given (a compared value's).
  function query(current, { period: asked = current.period, filters = current.filters } = {}) {
    const params = new URLSearchParams({ days: String(asked.days) });
    if (asked.sendUntil) params.set("until", asked.until);
    Object.entries(filters).forEach(([name, value]) => { if (value) params.set(name, value); });
    return "?" + params.toString();
  }

  // --- Changing the URL ------------------------------------------------------------------------------------------
  // `changes`: parameter -> value ('' or null removes it; a list repeats it). `replace`: no new history entry
  // (a default written into the URL is not a step the user took).
  function navigate(changes, { replace = false } = {}) {
    const url = new URL(window.location.href);
    Object.entries(changes).forEach(([name, value]) => {
      url.searchParams.delete(name);
      [].concat(value).forEach((one) => {
        if (one !== "" && one !== null && one !== undefined) url.searchParams.append(name, one);
      });
    });
    if (url.href === window.location.href) return;
    window.history[replace ? "replaceState" : "pushState"](null, "", url);
    publish();
  }

  function publish() {
    const current = state();
    showState(current);
    subscribers.forEach((section) => section(current));
  }

  // --- The controls show the state -------------------------------------------------------------------------------
  function showState(current) {
    const p = current.period;
    root.querySelectorAll(".ad-period").forEach((button) => {
      const active = !p.custom && Number(button.dataset.days) === p.days;
      button.classList.toggle("is-active", active);
      button.setAttribute("aria-pressed", String(active));
    });
    document.getElementById("ad-since").value = p.error ? "" : p.since;
    document.getElementById("ad-until").value = p.error ? "" : p.until;
    fillSelects(current.filters);
  }

  const SERVER_VALUES = JSON.parse(document.getElementById("ad-filter-values").textContent);

  // The values a filter offers: those the unfiltered period's report lists (newest prompt versions, busiest models
  // first); for the free text the report does not list (tabs, experiments, the chosen experiment's variants), the
  // most frequent of the last days' rollups, as the page was served.
  function choiceValues(name, filters = {}) {
    const byExperiment = SERVER_VALUES.variant || {};
    if (name === "tab" || name === "experiment") return SERVER_VALUES[name] || [];
    if (name === "variant") {
      return filters.experiment ? byExperiment[filters.experiment] || [] : [].concat(...Object.values(byExperiment));
    }
    if (!choices) return [];
    const o = choices.overview;
    const lists = {
      module: (o.modules || []).map((m) => m.module),
      user_role: (o.user_roles || []).map((r) => r.user_role),
      intent: (o.intent_distribution || []).map((i) => i.intent),
      model_name: (choices.model_comparison.models || []).map((m) => m.model_name),
      prompt_version: (choices.prompt_analysis.versions || []).map((v) => v.prompt_version),
    };
    return lists[name] || [];
  }

  // A select offers the unfiltered period's values; the chosen one stays offered even when it is not among them.
  function fillSelects(filters) {
    root.querySelectorAll("#ad-filters select").forEach((select) => {
      const current = filters[select.name];
      const values = new Set([current, ...choiceValues(select.name, filters)].filter((v) => v !== "" && v !== undefined));
      select.replaceChildren(new Option("all", ""), ...Array.from(values).sort().map((v) => new Option(v, v)));
      select.value = current || "";
    });
  }

  // The values filters offer: those of the period without filters (a filtered report knows only its own).
  function setChoices(report) {
    choices = report;
    fillSelects(state().filters);
    choiceSubscribers.forEach((section) => section(report));
  }

  // --- Wiring ---------------------------------------------------------------------------------------------------
  function wire() {
    // Experiments' filters only where there are experiments (or a link asks for one).
    const current = state().filters;
    const experiments = (SERVER_VALUES.experiment || []).length || current.experiment || current.variant;
    ["experiment", "variant"].forEach((name) => {
      root.querySelector('#ad-filters select[name="' + name + '"]').parentElement.hidden = !experiments;
    });
    root.querySelectorAll(".ad-period").forEach((button) => {
      button.addEventListener("click", () => navigate({ days: button.dataset.days, since: "", until: "" }));
    });
    document.getElementById("ad-since").addEventListener("change", (event) => {
      navigate({ since: event.target.value, days: "" });
    });
    document.getElementById("ad-until").addEventListener("change", (event) => {
      navigate({ until: event.target.value });
    });
    root.querySelectorAll("#ad-filters select").forEach((field) => {
      field.addEventListener("change", () => navigate({ [field.name]: field.value.trim() }));
    });
    document.getElementById("ad-filters-clear").addEventListener("click", () => {
      navigate(Object.fromEntries(FILTERS.map((name) => [name, ""])));
    });
    window.addEventListener("popstate", publish);
  }

  function start() {
    wire();
    publish();
  }

  window.AnalyticsDashboard = {
    root, FILTERS, state, query, range, navigate, setChoices, choiceValues, addDays, isDay,
    subscribe: (section) => subscribers.push(section),
    // Sections that follow the main report (drawn first: the page's figures before its details).
    onReport: (section) => reportSubscribers.push(section),
    reported: (current) => reportSubscribers.forEach((section) => section(current)),
    onChoices: (section) => { choiceSubscribers.push(section); if (choices) section(choices); },
  };
  // Deferred scripts run in order before DOMContentLoaded: every section has subscribed by then.
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else setTimeout(start);
})();
