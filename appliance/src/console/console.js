// Screenline console: live updates over server-sent events, and the X-ray zoom.
// Pages work without it; this only keeps them current.
"use strict";
(function () {
  const wordsEl = document.getElementById("words");
  const W = wordsEl ? JSON.parse(wordsEl.textContent) : {};

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

  const xray = document.getElementById("xray");
  if (xray) xray.addEventListener("click", () => xray.classList.toggle("zoomed"));
})();
