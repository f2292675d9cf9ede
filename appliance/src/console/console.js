// Screenline console: live updates over server-sent events, the page's one key map, and
// the X-ray viewer (viewer.js). Pages work without it; this only keeps them current and
// puts every action one key away.
"use strict";
(function () {
  const wordsEl = document.getElementById("words");
  const W = wordsEl ? JSON.parse(wordsEl.textContent) : {};

  // What each action does on this page; an action without a handler leaves its key alone.
  const actions = {};

  // ---- The viewer.
  const section = document.getElementById("viewer");
  if (section && window.ScreenlineViewer) mountViewer(section);

  function mountViewer(el) {
    const v = window.ScreenlineViewer.mount(el);
    const stage = el.querySelector(".stage");
    if (stage) stage.focus();
    return v;
  }
  window.screenlineMountViewer = mountViewer;

  for (const tool of ["colour", "grey", "negative", "high", "low", "organic", "inorganic", "edges", "zoom-in", "zoom-out", "reset", "boxes"]) {
    actions["tool:" + tool] = () => {
      const v = window.screenlineViewer;
      if (!v || !document.body.contains(v.section)) return false;
      v.use(tool);
      return true;
    };
  }

  // ---- A parcel page's review form: confirm, clear, note.
  const click = sel => () => {
    const el = document.querySelector(sel);
    if (!el) return false;
    el.click();
    return true;
  };
  if (document.getElementById("review")) {
    actions["judge:confirm"] = click("#review [data-judge=confirm]");
    actions["judge:clear"] = click("#review [data-judge=clear]");
    actions["judge:note"] = () => {
      const note = document.querySelector("#review [data-judge=note]");
      if (!note) return false;
      note.focus();
      return true;
    };
  }
  window.screenlineActions = actions;

  // ---- The key map (pages.rs, KEYMAP): one key, one action, on every page.
  const KEYS = W.keys || {};
  const typing = t => t && (t.tagName === "TEXTAREA" || t.tagName === "SELECT" ||
    (t.tagName === "INPUT" && !["button", "submit", "checkbox", "radio"].includes(t.type)));
  document.addEventListener("keydown", ev => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.isComposing) return;
    if (typing(ev.target)) {
      // Escape leaves a text field, so that the keys work again.
      if (ev.key === "Escape") {
        ev.target.blur();
        const stage = document.querySelector("#viewer .stage");
        if (stage) stage.focus();
        ev.preventDefault();
      }
      return;
    }
    const key = ev.key.length === 1 ? ev.key.toLowerCase() : ev.key;
    const action = actions[KEYS[key]];
    if (action && action() !== false) ev.preventDefault();
  });

  // ---- Live updates.
  // The outcomes the line controller reports; anything else is still on the belt.
  const OUTCOMES = ["passed", "diverted", "fail-safe"];

  const rows = document.getElementById("rows");
  const live = document.getElementById("live");
  if (rows && window.EventSource) {
    const mode = rows.dataset.live;
    const src = new EventSource("/events");
    src.addEventListener("open", () => { live.textContent = "● " + W.live; live.className = ""; });
    src.addEventListener("error", () => { live.textContent = W.disconnected; live.className = "off"; });
    src.addEventListener("parcel", ev => {
      const p = JSON.parse(ev.data);
      // The row, rendered (and escaped) by the appliance with the page's own template;
      // the flagged queue has none for a cleared parcel.
      const row = mode === "suspects" ? p.suspect_row : p.row;
      if (typeof row !== "string") return;
      rows.insertAdjacentHTML("afterbegin", row);
      const empty = document.getElementById("empty");
      if (empty) empty.remove();
      while (rows.children.length > 200) rows.lastElementChild.remove();
    });
    src.addEventListener("outcome", ev => {
      const o = JSON.parse(ev.data);
      const tr = rows.querySelector(`tr[data-record="${CSS.escape(o.record_id)}"]`);
      const cell = tr && tr.querySelector("[data-outcome]");
      if (cell) {
        const k = OUTCOMES.includes(o.outcome) ? o.outcome : "pending";
        cell.dataset.outcome = k;
        cell.textContent = W["outcome." + k];
      }
    });
    src.addEventListener("status", ev => {
      const s = JSON.parse(ev.data);
      // Link states and stack lights, rendered (and escaped) by the appliance.
      const badges = document.getElementById("links");
      if (badges && typeof s.badges === "string") badges.innerHTML = s.badges;
      document.querySelectorAll("[data-counter]").forEach(el => {
        const k = el.dataset.counter;
        el.textContent = k === "backlog" ? (s.backlog ?? 0) : (s.counters[k] ?? 0);
      });
    });
  }
})();
