// Screenline's X-ray viewer: a kept scan drawn on a Canvas 2D from the appliance's pixels
// (/parcel/{id}/pixels; for a dual-energy pair the 16-bit values, so that window and level
// are exact), with the screening tools, the model's boxes, wheel zoom and drag pan.
// Every tool's formula is in the README ("The X-ray viewer"); tests/e2e_viewer.rs checks
// them pixel for pixel against values computed in Rust from the same 16-bit data.
"use strict";
(function () {
  // The pseudo-colour convention of xraygen's `pseudo_colour` (models/xraygen/src/physics.rs).
  const ORANGE = [1.0, 0.58, 0.12];
  const GREEN = [0.25, 0.78, 0.22];
  const BLUE = [0.12, 0.32, 0.95];
  // Material classes, by the low/high attenuation ratio where xraygen's hues are half-way
  // from one to the next (1.95: orange → green, 2.7: green → blue); below 0.015 of
  // high-energy attenuation a pixel is air.
  const AIR = 0, ORGANIC = 1, MIXED = 2, METAL = 3;
  const RATIO_MIXED = 1.95, RATIO_METAL = 2.7, AIR_ATTENUATION = 0.015;
  // Penetration windows on the 16-bit transmission: high penetration stretches the dense
  // quarter-and-a-bit of the high-energy channel (0..24576) over the grey range; low
  // penetration the thin upper half of the low-energy channel (32768..65535).
  const HIGH_WINDOW = [0, 24576];
  const LOW_WINDOW = [32768, 65535];
  // A pseudo-colour image's pixel with less chroma than this has no hue: air, or too dense.
  const MIN_CHROMA = 24;
  const ZOOM_STEP = 1.25;
  const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

  const clamp = (x, lo, hi) => (x < lo ? lo : x > hi ? hi : x);
  const win = (v, lo, hi) => (v <= lo ? 0 : v >= hi ? 255 : Math.floor(((v - lo) * 255) / (hi - lo)));

  // -ln(t) and t^0.6 for every 16-bit transmission (t = max(v, 1) / 65535), made once.
  let LN = null, POW = null;
  function tables() {
    if (LN) return;
    LN = new Float64Array(65536);
    POW = new Float64Array(65536);
    for (let v = 0; v < 65536; v++) {
      const t = Math.max(v, 1) / 65535;
      LN[v] = -Math.log(t);
      POW[v] = Math.pow(t, 0.6);
    }
  }

  function mix(a, b, k) {
    return [a[0] + (b[0] - a[0]) * k, a[1] + (b[1] - a[1]) * k, a[2] + (b[2] - a[2]) * k];
  }

  // xraygen's colour of one pixel of a pair, into rgb[o..o+3].
  function colour(high, low, rgb, o) {
    const ah = LN[high], al = LN[low];
    const s = clamp((ah - 0.015) / 0.12, 0, 1);
    const ratio = al / Math.max(ah, 1e-3);
    let hue;
    if (ratio <= 1.75) hue = ORANGE;
    else if (ratio <= 2.15) hue = mix(ORANGE, GREEN, (ratio - 1.75) / 0.4);
    else if (ratio <= 2.55) hue = GREEN;
    else if (ratio <= 2.85) hue = mix(GREEN, BLUE, (ratio - 2.55) / 0.3);
    else hue = BLUE;
    const value = 0.06 + 0.94 * POW[high];
    for (let c = 0; c < 3; c++) rgb[o + c] = clamp(Math.round((1 - s + s * hue[c]) * value * 255), 0, 255);
  }

  function pairMaterial(high, low) {
    const ah = LN[high];
    if (ah <= AIR_ATTENUATION) return AIR;
    const ratio = LN[low] / Math.max(ah, 1e-3);
    return ratio < RATIO_MIXED ? ORGANIC : ratio < RATIO_METAL ? MIXED : METAL;
  }

  // A pseudo-colour pixel's material, from its hue: orange organic, green mixed, blue metal.
  function hueMaterial(r, g, b) {
    const max = Math.max(r, g, b), min = Math.min(r, g, b), d = max - min;
    if (d < MIN_CHROMA) return AIR;
    let h;
    if (max === r) h = 60 * (((g - b) / d) % 6);
    else if (max === g) h = 60 * ((b - r) / d + 2);
    else h = 60 * ((r - g) / d + 4);
    if (h < 0) h += 360;
    return h < 60 || h >= 330 ? ORGANIC : h < 170 ? MIXED : METAL;
  }

  // The planes every tool is made of, computed once per scan: colour (RGB), grey, material.
  function planes(px) {
    const n = px.width * px.height;
    const rgb = new Uint8ClampedArray(n * 3), grey = new Uint8Array(n), material = new Uint8Array(n);
    if (px.kind === "pair") {
      tables();
      for (let i = 0; i < n; i++) {
        const h = px.high[i], l = px.low[i];
        colour(h, l, rgb, i * 3);
        grey[i] = Math.floor((h * 255 + 32767) / 65535);
        material[i] = pairMaterial(h, l);
      }
    } else {
      rgb.set(px.rgb);
      for (let i = 0; i < n; i++) {
        const r = px.rgb[i * 3], g = px.rgb[i * 3 + 1], b = px.rgb[i * 3 + 2];
        grey[i] = (77 * r + 150 * g + 29 * b + 128) >> 8;
        material[i] = hueMaterial(r, g, b);
      }
    }
    return { rgb, grey, material };
  }

  // The image a tool shows, as RGBA.
  function render(tool, px, p) {
    const w = px.width, h = px.height, n = w * h;
    const out = new ImageData(w, h), d = out.data;
    const put = (i, r, g, b) => { d[i * 4] = r; d[i * 4 + 1] = g; d[i * 4 + 2] = b; d[i * 4 + 3] = 255; };
    for (let i = 0; i < n; i++) {
      let r, g, b;
      switch (tool) {
        case "grey": r = g = b = p.grey[i]; break;
        case "negative": r = g = b = 255 - p.grey[i]; break;
        case "high": r = g = b = win(px.high[i], HIGH_WINDOW[0], HIGH_WINDOW[1]); break;
        case "low": r = g = b = win(px.low[i], LOW_WINDOW[0], LOW_WINDOW[1]); break;
        case "organic":
        case "inorganic": {
          const m = p.material[i];
          const keep = m === AIR || (tool === "organic" ? m === ORGANIC : m !== ORGANIC);
          if (keep) { r = p.rgb[i * 3]; g = p.rgb[i * 3 + 1]; b = p.rgb[i * 3 + 2]; } else r = g = b = 255;
          break;
        }
        case "edges": {
          // Sharpened grey: 5·centre − the four neighbours (edge pixels repeat).
          const x = i % w, y = (i - x) / w;
          const at = (xx, yy) => p.grey[clamp(yy, 0, h - 1) * w + clamp(xx, 0, w - 1)];
          r = g = b = clamp(5 * p.grey[i] - at(x - 1, y) - at(x + 1, y) - at(x, y - 1) - at(x, y + 1), 0, 255);
          break;
        }
        default: r = p.rgb[i * 3]; g = p.rgb[i * 3 + 1]; b = p.rgb[i * 3 + 2];
      }
      put(i, r, g, b);
    }
    return out;
  }

  // The payload of /parcel/{id}/pixels (console/viewer.rs).
  function parse(buf) {
    const dv = new DataView(buf);
    const magic = String.fromCharCode(dv.getUint8(0), dv.getUint8(1), dv.getUint8(2), dv.getUint8(3));
    if (buf.byteLength < 16 || magic !== "SLPX" || dv.getUint8(4) !== 1) throw new Error("not a pixel payload");
    const kind = dv.getUint8(5), width = dv.getUint32(8, true), height = dv.getUint32(12, true), n = width * height;
    if (kind === 1) {
      if (buf.byteLength < 16 + n * 4) throw new Error("short pixel payload");
      let high, low;
      if (LITTLE_ENDIAN) {
        high = new Uint16Array(buf, 16, n);
        low = new Uint16Array(buf, 16 + n * 2, n);
      } else {
        high = new Uint16Array(n);
        low = new Uint16Array(n);
        for (let i = 0; i < n; i++) {
          high[i] = dv.getUint16(16 + i * 2, true);
          low[i] = dv.getUint16(16 + (n + i) * 2, true);
        }
      }
      return { kind: "pair", width, height, high, low };
    }
    if (kind === 2) {
      if (buf.byteLength < 16 + n * 3) throw new Error("short pixel payload");
      return { kind: "rgb", width, height, rgb: new Uint8Array(buf, 16, n * 3) };
    }
    throw new Error("unknown pixel kind " + kind);
  }

  class Viewer {
    constructor(section) {
      this.section = section;
      this.data = JSON.parse(section.querySelector("#viewer-data").textContent);
      this.canvas = section.querySelector("canvas");
      this.stage = section.querySelector(".stage");
      this.status = section.querySelector(".viewer-status");
      this.layer = document.createElement("canvas");
      this.tool = "colour";
      this.boxes = true;
      this.view = { scale: 1, ox: 0, oy: 0 };
      this.px = null;
      this.paintedAt = null;
      section.querySelectorAll("[data-tool]").forEach(b =>
        b.addEventListener("click", () => { this.use(b.dataset.tool); this.stage.focus(); }));
      this.listen();
      this.resize = () => { if (this.px) this.draw(); };
      window.addEventListener("resize", this.resize);
      this.load();
    }

    async load() {
      try {
        const res = await fetch(this.data.pixels, { cache: "no-store", credentials: "same-origin" });
        if (!res.ok) throw new Error(res.status === 410 ? "gone" : "HTTP " + res.status);
        this.px = parse(await res.arrayBuffer());
      } catch (e) {
        this.say(e.message === "gone" ? this.data.words.gone : this.data.words.failed + " (" + e.message + ")", true);
        return;
      }
      this.planes = planes(this.px);
      this.layer.width = this.px.width;
      this.layer.height = this.px.height;
      this.fit();
      this.paint();
      // The first frame with the scan on screen: after the browser has painted it.
      requestAnimationFrame(() => setTimeout(() => {
        this.paintedAt = performance.timeOrigin + performance.now();
        this.canvas.dataset.painted = this.data.record;
        this.section.dispatchEvent(new CustomEvent("viewer-painted", { bubbles: true }));
      }, 0));
    }

    // Renders the current tool into the layer (the scan at its own size) and draws it.
    paint() {
      const ctx = this.layer.getContext("2d", { willReadFrequently: true });
      ctx.putImageData(render(this.tool, this.px, this.planes), 0, 0);
      this.draw();
    }

    // The layer through the view's zoom and pan, and the boxes over it.
    draw() {
      const c = this.canvas, dpr = window.devicePixelRatio || 1;
      const cw = c.clientWidth, ch = c.clientHeight;
      if (c.width !== Math.round(cw * dpr) || c.height !== Math.round(ch * dpr)) {
        c.width = Math.round(cw * dpr);
        c.height = Math.round(ch * dpr);
      }
      const ctx = c.getContext("2d", { willReadFrequently: true });
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.fillStyle = "#111";
      ctx.fillRect(0, 0, cw, ch);
      if (!this.px) return;
      const { scale: s, ox, oy } = this.view;
      ctx.imageSmoothingEnabled = s < 1;
      ctx.drawImage(this.layer, ox, oy, this.px.width * s, this.px.height * s);
      if (this.boxes) {
        ctx.font = "12px system-ui, sans-serif";
        ctx.textBaseline = "top";
        for (const b of this.data.boxes) {
          const [x0, y0, x1, y1] = b.box;
          const x = ox + x0 * s, y = oy + y0 * s, w = (x1 - x0) * s, h = (y1 - y0) * s;
          const colour = b.suspect ? "#ff2d55" : "#ffd400";
          ctx.lineWidth = 3;
          ctx.strokeStyle = colour;
          ctx.strokeRect(x, y, w, h);
          const tw = ctx.measureText(b.label).width + 8;
          const ly = y >= 20 ? y - 19 : y + 3;
          ctx.fillStyle = "rgba(0,0,0,0.75)";
          ctx.fillRect(x, ly, tw, 16);
          ctx.fillStyle = colour;
          ctx.fillText(b.label, x + 4, ly + 2);
        }
      }
      const words = this.data.words;
      this.say(words.tools[this.tool] + " · " + words.zoom + " " + Math.round(s * 100) + "%");
      this.section.querySelectorAll("[data-tool]").forEach(b => {
        const t = b.dataset.tool;
        b.classList.toggle("on", t === this.tool || (t === "boxes" && this.boxes));
      });
    }

    say(text, warn) {
      this.status.textContent = text;
      this.status.classList.toggle("warn", !!warn);
    }

    fit() {
      const cw = this.canvas.clientWidth, ch = this.canvas.clientHeight;
      const s = Math.min(cw / this.px.width, ch / this.px.height);
      this.fitScale = s;
      this.view = { scale: s, ox: (cw - this.px.width * s) / 2, oy: (ch - this.px.height * s) / 2 };
    }

    // Zooms by `factor` keeping the canvas point (cx, cy) where it is.
    zoom(factor, cx, cy) {
      if (!this.px) return;
      const v = this.view;
      if (cx === undefined) { cx = this.canvas.clientWidth / 2; cy = this.canvas.clientHeight / 2; }
      const s = clamp(v.scale * factor, this.fitScale / 4, 32);
      const k = s / v.scale;
      this.view = { scale: s, ox: cx - (cx - v.ox) * k, oy: cy - (cy - v.oy) * k };
      this.draw();
    }

    // What a tool's key or button does; `false` if it is not available here.
    use(tool) {
      if (!this.px) return true;
      if (this.data.kind === "rgb" && (tool === "high" || tool === "low")) {
        this.say(this.data.words.unavailable, true);
        return false;
      }
      switch (tool) {
        case "zoom-in": this.zoom(ZOOM_STEP); break;
        case "zoom-out": this.zoom(1 / ZOOM_STEP); break;
        case "boxes": this.boxes = !this.boxes; this.draw(); break;
        case "reset": this.tool = "colour"; this.boxes = true; this.fit(); this.paint(); break;
        default: this.tool = tool; this.paint();
      }
      return true;
    }

    listen() {
      const c = this.canvas;
      c.addEventListener("wheel", ev => {
        ev.preventDefault();
        const r = c.getBoundingClientRect();
        this.zoom(Math.exp(-ev.deltaY * 0.0015), ev.clientX - r.left, ev.clientY - r.top);
      }, { passive: false });
      let drag = null;
      c.addEventListener("pointerdown", ev => {
        drag = { x: ev.clientX, y: ev.clientY };
        c.setPointerCapture(ev.pointerId);
        c.classList.add("dragging");
      });
      c.addEventListener("pointermove", ev => {
        if (!drag || !this.px) return;
        this.view.ox += ev.clientX - drag.x;
        this.view.oy += ev.clientY - drag.y;
        drag = { x: ev.clientX, y: ev.clientY };
        this.draw();
      });
      const end = () => { drag = null; c.classList.remove("dragging"); };
      c.addEventListener("pointerup", end);
      c.addEventListener("pointercancel", end);
    }

    unmount() {
      window.removeEventListener("resize", this.resize);
    }
  }

  window.ScreenlineViewer = {
    // Starts the viewer of a `viewer.html` section; the page's latest is `window.screenlineViewer`.
    mount(section) {
      if (window.screenlineViewer) window.screenlineViewer.unmount();
      const v = new Viewer(section);
      window.screenlineViewer = v;
      return v;
    },
  };
})();
