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
  // `act` on the element `sel` finds, if there is one.
  const on = (sel, act) => () => {
    const el = document.querySelector(sel);
    if (!el) return false;
    el[act]();
    return true;
  };
  if (document.getElementById("review")) {
    actions["judge:confirm"] = on("#review [data-judge=confirm]", "click");
    actions["judge:clear"] = on("#review [data-judge=clear]", "click");
    actions["judge:note"] = on("#review [data-judge=note]", "focus");
  }
  // ---- The judging queue: Enter opens the next parcel into the pane, S confirms, P clears
  // (undone by U within the undo time), N writes a note. The appliance renders the pane and
  // the rows (escaped); this only puts them in place.
  const queueEl = document.getElementById("queue");
  if (queueEl) {
    const csrf = queueEl.dataset.csrf;
    const pane = document.getElementById("pane");
    const rowsEl = document.getElementById("queue-rows");
    const noteEl = document.getElementById("queue-note");
    const emptyPane = pane.innerHTML;
    const q = window.screenlineQueue = { open: null, waybill: null, decided: 0, lastClear: null, busy: false };
    let countdown = null;

    const post = (url, fields) => fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams(Object.assign({ csrf }, fields || {})),
    });
    const say = (text, warn) => {
      noteEl.textContent = text;
      noteEl.className = text ? (warn ? "err" : "ok") : "";
    };
    const refusal = async (r) => {
      try { return (await r.json()).error || W["queue.failed"]; } catch (e) { return W["queue.failed"] + " (" + r.status + ")"; }
    };
    let refreshing = null;
    const refresh = () => {
      if (refreshing) return refreshing;
      refreshing = fetch("/api/queue/rows", { credentials: "same-origin", cache: "no-store" })
        .then(r => (r.ok ? r.text() : null))
        .then(html => {
          if (html === null) return;
          rowsEl.innerHTML = html;
          document.getElementById("queue-count").textContent = rowsEl.querySelectorAll("tr[data-record]").length;
        }, () => {})
        .finally(() => { refreshing = null; });
      return refreshing;
    };
    q.refresh = refresh;
    setInterval(refresh, 4000);

    const show = (j) => {
      pane.innerHTML = j.pane;
      q.open = j.record_id;
      q.waybill = j.waybill;
      const section = pane.querySelector("#viewer");
      if (section && window.screenlineMountViewer) window.screenlineMountViewer(section);
      else if (document.activeElement) document.activeElement.blur();
      refresh();
    };
    const close = () => {
      pane.innerHTML = emptyPane;
      q.open = null;
      q.waybill = null;
    };
    // One request at a time: a key pressed twice does not judge twice.
    const once = (work) => {
      if (q.busy) return true;
      q.busy = true;
      work().finally(() => { q.busy = false; });
      return true;
    };

    actions["queue:next"] = () => once(async () => {
      const r = await post("/api/queue/next");
      if (r.status === 204) { close(); say(W["queue.none"]); return; }
      if (!r.ok) { say(await refusal(r), true); return; }
      say("");
      show(await r.json());
    });
    const decide = (finding) => () => {
      if (!q.open) return false;
      return once(async () => {
        const id = q.open, waybill = q.waybill || id;
        const noteField = pane.querySelector("[data-judge=note]");
        const r = await post("/api/queue/" + encodeURIComponent(id) + "/decide", { finding, note: noteField ? noteField.value : "" });
        if (!r.ok) { say(await refusal(r), true); refresh(); return; }
        const j = await r.json();
        q.decided++;
        close();
        if (countdown) { clearInterval(countdown); countdown = null; }
        if (finding === "cleared") {
          const until = Date.now() + (j.undo_ms || 0);
          q.lastClear = { id, waybill, until };
          const tick = () => {
            const left = Math.ceil((until - Date.now()) / 1000);
            if (left <= 0) {
              clearInterval(countdown);
              countdown = null;
              q.lastClear = null;
              say(W["queue.recorded"].replace("{w}", waybill));
              refresh();
              return;
            }
            say(W["queue.cleared"].replace("{w}", waybill).replace("{s}", left));
          };
          tick();
          countdown = setInterval(tick, 250);
        } else {
          say(W["queue.confirmed"].replace("{w}", waybill));
        }
        refresh();
      });
    };
    actions["judge:confirm"] = decide("confirmed");
    actions["judge:clear"] = decide("cleared");
    actions["judge:note"] = on("#pane [data-judge=note]", "focus");
    actions["judge:undo"] = () => {
      if (!q.lastClear) { say(W["queue.nothing_to_undo"], true); return true; }
      return once(async () => {
        const r = await post("/api/queue/undo");
        if (!r.ok) { say(await refusal(r), true); return; }
        if (countdown) { clearInterval(countdown); countdown = null; }
        const waybill = q.lastClear ? q.lastClear.waybill : "";
        q.lastClear = null;
        q.decided--;
        say(W["queue.undone"].replace("{w}", waybill));
        show(await r.json());
      });
    };
    // The pane's buttons do what their keys do.
    pane.addEventListener("click", ev => {
      const b = ev.target.closest("button[data-judge]");
      if (b && actions["judge:" + b.dataset.judge]) actions["judge:" + b.dataset.judge]();
    });
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

  // ---- The alarm: a tone and a flash when a flagged or manual parcel arrives on a line the
  // operator watches, until acknowledged (A, or a click on it). Browsers allow sound only
  // after a gesture: the alarm is armed by the first click or key (a login's click before
  // this page counts in Chromium), and says so until it is.
  const alarmEl = document.getElementById("alarm");
  const alarm = window.screenlineAlarm = { armed: false, muted: false, sound: true, ringing: false, arrivals: 0, tones: 0, pending: [] };
  if (alarmEl) {
    let watched = null;
    let audio = null;
    try {
      const AC = window.AudioContext || window.webkitAudioContext;
      audio = AC ? new AC() : null;
    } catch (e) {
      audio = null;
    }
    alarm.sound = !!audio;
    // Arrivals not acknowledged yet, and those already rung for, kept across this tab's pages.
    const SAVED = "sl_alarm";
    let saved = {};
    try { saved = JSON.parse(sessionStorage.getItem(SAVED) || "{}"); } catch (e) { saved = {}; }
    alarm.pending = Array.isArray(saved.pending) ? saved.pending : [];
    const seen = new Set(Array.isArray(saved.seen) ? saved.seen : []);
    const save = () => sessionStorage.setItem(SAVED, JSON.stringify({ pending: alarm.pending, seen: [...seen].slice(-500) }));
    let timer = null;

    const beep = () => {
      if (!alarm.armed || alarm.muted || !audio) return;
      alarm.tones++;
      const t = audio.currentTime;
      for (const [hz, at] of [[880, 0], [660, 0.25]]) {
        const osc = audio.createOscillator(), gain = audio.createGain();
        osc.frequency.value = hz;
        gain.gain.value = 0.25;
        osc.connect(gain).connect(audio.destination);
        osc.start(t + at);
        osc.stop(t + at + 0.2);
      }
    };
    const show = () => {
      const n = alarm.pending.length;
      alarm.ringing = n > 0;
      const state = n > 0 ? "ringing" : !alarm.sound || !alarm.armed ? "unarmed" : alarm.muted ? "muted" : "armed";
      alarmEl.dataset.state = state;
      const parts = [];
      if (n > 0) parts.push(W["alarm.ringing"].replace("{n}", n));
      if (alarm.muted) parts.push(W["alarm.muted"]);
      else if (!alarm.sound) parts.push(W["alarm.no_sound"]);
      else if (!alarm.armed) parts.push(W["alarm.unarmed"]);
      else if (n === 0) parts.push(W["alarm.armed"]);
      alarmEl.textContent = parts.join(" · ");
      document.body.classList.toggle("alarm-flash", n > 0);
      // The tone repeats while something waits to be acknowledged.
      const sounding = n > 0 && alarm.armed && !alarm.muted;
      if (sounding && !timer) {
        beep();
        timer = setInterval(beep, 1500);
      } else if (!sounding && timer) {
        clearInterval(timer);
        timer = null;
      }
    };
    const arm = () => {
      alarm.armed = !!audio && audio.state === "running";
      show();
    };
    if (audio) {
      audio.addEventListener("statechange", arm);
      const gesture = () => {
        if (audio.state !== "running") audio.resume().then(arm, arm);
      };
      document.addEventListener("pointerdown", gesture, true);
      document.addEventListener("keydown", gesture, true);
    }
    const ack = () => {
      if (!alarm.pending.length) return false;
      alarm.pending = [];
      save();
      show();
      return true;
    };
    actions["alarm:ack"] = ack;
    alarmEl.addEventListener("click", ack);
    alarm.arrive = p => {
      if (p.decision !== "flag" && p.decision !== "manual") return;
      if (watched && !watched.includes(p.line_id)) return;
      if (seen.has(p.record_id)) return;
      seen.add(p.record_id);
      alarm.arrivals++;
      alarm.pending.push(p.record_id);
      save();
      show();
    };
    fetch("/api/alarm", { credentials: "same-origin", cache: "no-store" })
      .then(r => (r.ok ? r.json() : {}))
      .then(cfg => {
        alarm.muted = !!cfg.muted;
        watched = Array.isArray(cfg.lines) ? cfg.lines : null;
        show();
      }, () => {});
    arm();
  }

  // ---- Live updates: one stream per page, for the alarm and the live rows.
  // The outcomes the line controller reports; anything else is still on the belt.
  const OUTCOMES = ["passed", "diverted", "fail-safe"];

  const rows = document.getElementById("rows");
  const live = document.getElementById("live");
  if ((rows || alarmEl) && window.EventSource) {
    const mode = rows ? rows.dataset.live : null;
    const src = new EventSource("/events");
    window.screenlineEvents = src;
    src.addEventListener("open", () => { live.textContent = "● " + W.live; live.className = ""; });
    src.addEventListener("error", () => { live.textContent = W.disconnected; live.className = "off"; });
    src.addEventListener("parcel", ev => {
      const p = JSON.parse(ev.data);
      if (alarm.arrive) alarm.arrive(p);
      if (window.screenlineQueue && p.decision !== "clear") window.screenlineQueue.refresh();
      if (!rows) return;
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
      if (!rows) return;
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
