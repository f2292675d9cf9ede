// Screenline console: live updates over server-sent events, and the X-ray zoom.
// Pages work without it; this only keeps them current.
"use strict";
(function () {
  const wordsEl = document.getElementById("words");
  const W = wordsEl ? JSON.parse(wordsEl.textContent) : {};
  const zh = W.lang === "zh-CN";

  function esc(s) {
    return String(s ?? "").replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }
  function decision(d) {
    const k = ["flag", "manual", "clear"].includes(d) ? d : "manual";
    return `<span class="${k}">${esc(W["decision." + k])}</span>`;
  }
  function reasons(rs) {
    if (!rs || !rs.length) return "—";
    return rs.map(r => `<div data-code="${esc(r.code)}">${esc(zh ? r.zh : r.en)}</div>`).join("");
  }
  function category(k) {
    return k ? esc((W.categories || {})[k] || k) : "—";
  }
  function outcome(o) {
    const k = ["passed", "diverted", "fail-safe"].includes(o) ? o : "pending";
    return `<span data-outcome="${k}">${esc(W["outcome." + k])}</span>`;
  }
  function time(iso) { return esc(String(iso || "").slice(11, 19)); }

  function lineRow(p) {
    return `<td>${time(p.decided_at)}</td><td>${esc(p.line_id)} #${p.seq}</td>` +
      `<td><a href="/parcel/${encodeURIComponent(p.record_id)}">${esc(p.waybill || "—")}</a></td>` +
      `<td>${esc(p.sender || "—")}</td><td>${decision(p.decision)}</td><td>${reasons(p.reasons)}</td>` +
      `<td>${category(p.category)}</td><td>${p.counterfeit == null ? "—" : p.counterfeit.toFixed(2)}</td>` +
      `<td>${outcome(p.outcome)}</td>`;
  }
  function suspectRow(p) {
    const href = `/parcel/${encodeURIComponent(p.record_id)}`;
    return `<td><a href="${href}"><img class="thumb" src="${href}/image" alt=""></a></td><td>${time(p.decided_at)}</td>` +
      `<td><a href="${href}">${esc(p.waybill || "—")}</a></td><td>${decision(p.decision)}</td>` +
      `<td>${reasons(p.reasons)}</td><td>${esc(p.sender || "—")}</td><td>${esc(p.line_id)}</td>`;
  }

  const rows = document.getElementById("rows");
  const live = document.getElementById("live");
  if (rows && window.EventSource) {
    const mode = rows.dataset.live;
    const src = new EventSource("/events");
    src.addEventListener("open", () => { live.textContent = "● " + W.live; live.className = ""; });
    src.addEventListener("error", () => { live.textContent = W.disconnected; live.className = "off"; });
    src.addEventListener("parcel", ev => {
      const p = JSON.parse(ev.data);
      if (mode === "suspects" && p.decision === "clear") return;
      const tr = document.createElement("tr");
      tr.dataset.record = p.record_id;
      tr.innerHTML = mode === "suspects" ? suspectRow(p) : lineRow(p);
      rows.prepend(tr);
      const empty = document.getElementById("empty");
      if (empty) empty.remove();
      while (rows.children.length > 200) rows.lastElementChild.remove();
    });
    src.addEventListener("outcome", ev => {
      const o = JSON.parse(ev.data);
      const tr = rows.querySelector(`tr[data-record="${CSS.escape(o.record_id)}"]`);
      const cell = tr && tr.querySelector("[data-outcome]");
      if (cell) cell.outerHTML = outcome(o.outcome);
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
