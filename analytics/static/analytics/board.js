/* A saved board in the admin: reads the board (/api/analytics/boards/{id}/) and its widgets' answers (/data)
   with the admin's session and draws each widget by its chart type (charts.js) on a 12-column grid. Whoever may
   change the board (the API's `editable`) reorders widgets (move buttons or drag) and resizes them; each change is
   saved at once with PATCH {widgets} (the widgets' list in display order, as the API takes it). */
(function () {
  "use strict";

  const root = document.getElementById("analytics-board");
  if (!root) return;
  const AC = window.AnalyticsCharts;
  const { element, format } = AC;
  const grid = document.getElementById("bd-grid");
  const PATHS = { rollups: "Answered from the daily rollups", "raw rows": "Answered from the raw mirrored runs (no rollup fits this breakdown and these filters)" };
  let entries = [];  // [{widget, data, card}] in display order
  let editable = false;

  // --- Messages ----------------------------------------------------------------------------------------------------
  function showMessage(text, isError) {
    const message = document.getElementById("bd-message");
    message.hidden = !text;
    message.textContent = text || "";
    message.classList.toggle("is-error", Boolean(isError));
  }

  function describe(board) {
    const shared = { private: "private", staff: "shared with all staff",
                     group: "shared with the group " + board.group }[board.visibility] || board.visibility;
    const owner = board.owner ? "by " + board.owner : "a default board";
    document.getElementById("bd-meta").textContent = [board.description, owner + ", " + shared,
      format.int(board.widgets.length) + " widgets"].filter(Boolean).join(" · ");
    const help = document.getElementById("bd-help");
    help.hidden = false;
    help.textContent = editable
      ? "Rearrange: move a widget with ◀ ▶ (or drag it by ⠿), make it narrower or wider with − +; every change is saved for all who see this board."
      : "Only its owner (or someone with analytics.change_board) rearranges this board.";
  }

  // --- A widget's card ---------------------------------------------------------------------------------------------
  // Short, for a narrow card: its days and filters (the dates in the title).
  function periodText(data) {
    const filters = Object.entries(data.filters || {}).map(([name, value]) => name + "=" + value);
    return [data.period.days + " days", ...filters].join(" · ");
  }

  function button(text, label, action) {
    const b = element("button", { className: "ad-button", text, attrs: { type: "button", "aria-label": label, title: label } });
    b.addEventListener("click", action);
    return b;
  }

  function editControls(entry) {
    return element("span", { className: "bd-edit" }, [
      button("◀", "Move earlier", () => move(entry, -1)), button("▶", "Move later", () => move(entry, 1)),
      button("−", "Narrower", () => resize(entry, -1)), button("+", "Wider", () => resize(entry, 1))]);
  }

  function card(entry) {
    const { widget, data } = entry;
    const title = widget.title || AC.metricTitle(data.metric);
    const head = element("header", { className: "bd-widget-head" }, [element("h2", { text: title, attrs: { title } })]);
    const body = element("div", { className: "bd-widget-body" });
    // What it covers and how it was read (rollups or raw rows), quietly, then what one can do with it.
    const meta = element("div", { className: "bd-meta" }, [
      element("span", { className: "bd-period", text: periodText(data),
                        attrs: { title: data.period.since + " → " + data.period.until + " (UTC)" } }),
      element("span", { className: "bd-path", text: data.path, attrs: { title: PATHS[data.path] || data.path } })]);
    const actions = element("div", { className: "bd-actions" }, [element("span", { className: "bd-exports" }, [
      element("a", { text: "CSV", attrs: { "data-format": "csv" } }), document.createTextNode(" · "),
      element("a", { text: "Parquet", attrs: { "data-format": "parquet" } })])]);
    const foot = element("footer", { className: "bd-widget-foot" }, [meta, actions]);
    const article = element("article", { className: "ad-card bd-widget", attrs: { "aria-label": title } }, [head, body, foot]);
    if (editable) {
      actions.appendChild(editControls(entry));
      head.prepend(dragHandle(entry, article));
    }
    entry.card = article;
    grid.appendChild(article);
    AC.drawWidget(body, entry);  // after it is in the page: a chart sizes itself to its box
    return article;
  }

  // Places, sizes and export links follow the list's order (a widget's export index is its place).
  function layout() {
    entries.forEach((entry, index) => {
      const { card: article, widget } = entry;
      grid.appendChild(article);  // moves it to its place
      article.dataset.index = String(index);
      article.dataset.width = String(widget.width);
      article.style.setProperty("--w", widget.width);
      article.style.setProperty("--w-narrow", widget.width <= 4 ? 6 : 12);
      article.style.setProperty("--h", widget.height);
      article.querySelectorAll(".bd-exports a").forEach((a) => {
        a.href = root.dataset.exportUrl + "?format=" + a.dataset.format + "&widget=" + index;
      });
      const [earlier, later, narrower, wider] = article.querySelectorAll(".bd-edit button");
      if (earlier) {
        earlier.disabled = index === 0;
        later.disabled = index === entries.length - 1;
        narrower.disabled = widget.width <= 1;
        wider.disabled = widget.width >= 12;
      }
    });
  }

  // --- Rearranging, saved at once ----------------------------------------------------------------------------------
  let saving = Promise.resolve();
  let saves = 0;
  let pending = 0;
  let changes = 0;      // changes made on the page, numbered
  let discarded = 0;    // changes up to this one were refused (or came after a refused one): not sent
  let confirmed = [];   // the board as the server last saved it: [entry, widget] in order

  function snapshot() {
    return entries.map((entry) => [entry, entry.widget]);
  }

  function move(entry, by) {
    const from = entries.indexOf(entry);
    moveTo(entry, Math.max(0, Math.min(entries.length - 1, from + by)));
  }

  function moveTo(entry, to) {
    const from = entries.indexOf(entry);
    if (from === to || from < 0) return;
    entries.splice(from, 1);
    entries.splice(to, 0, entry);
    save();
  }

  function resize(entry, by) {
    const width = Math.max(1, Math.min(12, entry.widget.width + by));
    if (width === entry.widget.width) return;
    entry.widget = { ...entry.widget, width };
    save();
  }

  // Shown at once, saved in order (one PATCH after the other, each the whole list as it then was). A refused save
  // puts the board back as the server last saved it, and the changes queued behind it (each list holds the
  // refused change) are not sent.
  function save() {
    layout();
    const change = ++changes;
    const state = snapshot();
    const widgets = state.map(([, widget]) => widget);
    pending += 1;
    root.dataset.saving = "true";
    saving = saving.then(async () => {
      if (change > discarded) {
        try {
          const board = await AC.request(root.dataset.boardUrl, { method: "PATCH", body: { widgets } });
          confirmed = state;
          root.dataset.saved = String(++saves);
          root.dataset.updatedAt = board.updated_at;
          showMessage("");
        } catch (error) {
          discarded = changes;
          entries = confirmed.map(([entry, widget]) => { entry.widget = widget; return entry; });
          layout();
          showMessage("Not saved: " + error.message, true);
        }
      }
      pending -= 1;
      root.dataset.saving = String(pending > 0);
    });
  }

  // Drag by the handle only: the rest of the card keeps its text selectable and its charts' tooltips.
  let dragged = null;

  function dragHandle(entry, article) {
    const handle = element("span", { className: "bd-handle", text: "⠿", attrs: { title: "Drag to move", "aria-hidden": "true" } });
    handle.addEventListener("mousedown", () => { article.draggable = true; });
    article.addEventListener("dragstart", (event) => {
      dragged = entry;
      article.classList.add("is-dragging");
      event.dataTransfer.effectAllowed = "move";
      event.dataTransfer.setData("text/plain", String(entries.indexOf(entry)));
    });
    article.addEventListener("dragend", () => {
      article.draggable = false;
      article.classList.remove("is-dragging");
      grid.querySelectorAll(".is-drop-target").forEach((el) => el.classList.remove("is-drop-target"));
    });
    article.addEventListener("dragover", (event) => {
      if (!dragged || dragged === entry) return;
      event.preventDefault();
      article.classList.add("is-drop-target");
    });
    article.addEventListener("dragleave", () => article.classList.remove("is-drop-target"));
    article.addEventListener("drop", (event) => {
      event.preventDefault();
      article.classList.remove("is-drop-target");
      if (dragged) moveTo(dragged, entries.indexOf(entry));
      dragged = null;
    });
    return handle;
  }

  // --- Loading -----------------------------------------------------------------------------------------------------
  async function load() {
    try {
      const [board, answers] = await Promise.all([AC.request(root.dataset.boardUrl), AC.request(root.dataset.dataUrl)]);
      editable = Boolean(board.editable);
      describe(board);
      entries = answers.map((answer) => ({ widget: board.widgets[answer.index], data: answer.data, card: null }));
      confirmed = snapshot();
      entries.forEach(card);
      layout();
      if (!entries.length) {
        showMessage("This board has no widgets yet: add some with PATCH " + root.dataset.boardUrl + " " +
                    "(each one metric × one breakdown × filters × period × chart)" + (editable ? " or in the admin." : "."));
      }
      root.dataset.editable = String(editable);
      root.dataset.state = "ready";
    } catch (error) {
      showMessage("The board could not be loaded: " + error.message, true);
      root.dataset.state = "error";
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", load);
  else load();
})();
