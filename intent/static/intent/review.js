// The labelling page: one unlabelled detection at a time from the review queue API; a label goes through the
// feedback API (the session's CSRF token), then the next item comes.
(function () {
  "use strict";
  const root = document.getElementById("review");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const csrf = document.querySelector("[name=csrfmiddlewaretoken]").value;
  let item = null;
  let labelled = 0;
  const skipped = new Set();

  function show(next) {
    item = next;
    $("review-item").hidden = !item;
    $("review-empty").hidden = !!item;
    if (!item) { root.dataset.state = "empty"; return; }
    $("review-message").textContent = item.message === null ? "(no text)" : item.message;
    $("review-detected").textContent = item.detected_intent;
    $("review-confidence").textContent = item.confidence.toFixed(2);
    const c = item.context;
    $("review-context").textContent = [c.user_role, c.current_module, c.current_tab].filter(Boolean).join(" / ") || "no context";
    $("review-story").href = root.dataset.storyUrl + "?request_id=" + encodeURIComponent(item.request_id);
    const list = $("review-alternatives");
    list.replaceChildren(...item.alternatives.map((a, i) => {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.intent = a.intent;
      button.textContent = (i + 1) + ". " + a.intent + " (" + a.probability.toFixed(2) + ")";
      button.addEventListener("click", () => pick(a.intent));
      li.appendChild(button);
      return li;
    }));
    $("review-intent").value = "";
    root.dataset.requestId = item.request_id;
    root.dataset.state = "ready";
  }

  function pick(intent) {
    $("review-intent").value = intent;
    document.querySelectorAll("#review-alternatives button").forEach(
      (b) => b.classList.toggle("is-picked", b.dataset.intent === intent));
  }

  async function next() {
    root.dataset.state = "loading";
    const params = new URLSearchParams({strategy: root.dataset.strategy, limit: String(1 + skipped.size)});
    const response = await fetch(root.dataset.queueUrl + "?" + params, {credentials: "same-origin",
                                                                          headers: {Accept: "application/json"}});
    if (!response.ok) { $("review-status").textContent = "The queue answered " + response.status; root.dataset.state = "error"; return; }
    const body = await response.json();
    show(body.items.find((i) => !skipped.has(i.request_id)) || null);
  }

  async function save() {
    if (!item || root.dataset.state !== "ready") return;
    const intent = $("review-intent").value.trim() || item.detected_intent;
    root.dataset.state = "saving";
    const response = await fetch(root.dataset.feedbackUrl, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrf},
      body: JSON.stringify({request_id: item.request_id, correct_intent: intent}),
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      $("review-status").textContent = "Not saved: " + JSON.stringify(body);
      root.dataset.state = "ready";
      return;
    }
    labelled += 1;
    root.dataset.labelled = String(labelled);
    $("review-status").textContent = "Labelled " + labelled + " this session (last: " + intent + ").";
    await next();
  }

  document.addEventListener("keydown", (event) => {
    if (event.target === $("review-intent")) {
      if (event.key === "Enter") { event.preventDefault(); save(); }
      return;
    }
    if (event.target.tagName === "SELECT" || !item) return;
    if (/^[1-5]$/.test(event.key) && item.alternatives[Number(event.key) - 1]) {
      pick(item.alternatives[Number(event.key) - 1].intent);
    } else if (event.key === "0") {
      pick("out_of_scope");
    } else if (event.key === "Enter") {
      event.preventDefault(); save();
    } else if (event.key === "s") {
      skipped.add(item.request_id); next();
    } else if (event.key === "/") {
      event.preventDefault(); $("review-intent").focus();
    }
  });
  $("review-save").addEventListener("click", save);
  next();
}());
