/*
 * The Example tab in the page: its attention views drawn from one example's data, sent once by the server
 * (dashboard/example/payload.py), so that changing the layer, head, query position or pinned token asks the
 * server nothing.
 *
 * The figures are the server's templates (built by dashboard/example/figures.py with the numbers left out)
 * filled with the selection's slice; the head view's lines are grouped by weight as figures.head_view_figure
 * groups them (the browser tests compare both). Each function below is a Dash client-side callback
 * (namespace "attnviz_example"); see dashboard/example/callbacks.py and sync.py for the wiring.
 */
(function () {
  "use strict";

  const ns = {};
  const noUpdate = () => window.dash_clientside.no_update;
  const triggered = () => ((window.dash_clientside.callback_context || {}).triggered || [])
    .map((t) => t.prop_id);

  // ---------------------------------------------------------------------------------------------------
  // Decoding: float16 (the store's values, exact) and float32 arrays from base64
  // ---------------------------------------------------------------------------------------------------
  let halfTable = null;

  function half() {
    if (halfTable === null) {
      halfTable = new Float32Array(65536);
      for (let h = 0; h < 65536; h++) {
        const sign = h & 0x8000 ? -1 : 1;
        const exp = (h >> 10) & 0x1f;
        const frac = h & 0x3ff;
        halfTable[h] = exp === 0 ? sign * frac * Math.pow(2, -24)
          : exp === 31 ? (frac ? NaN : sign * Infinity)
            : sign * (1 + frac / 1024) * Math.pow(2, exp - 15);
      }
    }
    return halfTable;
  }

  function bytesOf(text) {
    if (Uint8Array.fromBase64) { return Uint8Array.fromBase64(text); }  // native (Chromium 140+)
    const raw = atob(text);
    const bytes = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) { bytes[i] = raw.charCodeAt(i); }
    return bytes;
  }

  /** A base64 float16 / float32 array as numbers: float32 as is, float16 read in place where the browser has
   * Float16Array (its values are the stored halves, exactly), else converted once. */
  function decodeSpec(spec) {
    if (!spec) { return null; }
    if (ArrayBuffer.isView(spec)) { return spec; }  // fetched as bytes (see unpack): already typed
    const bytes = bytesOf(spec.bdata);
    if (spec.dtype === "f4") { return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4); }
    if (typeof Float16Array === "function") {
      return new Float16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
    }
    const raw = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
    const table = half();
    const out = new Float32Array(raw.length);
    for (let i = 0; i < raw.length; i++) { out[i] = table[raw[i]]; }
    return out;
  }

  let decoded = 0;

  /** The payload's arrays, decoded once per payload (kept on it; ``id`` names the payload in the signatures). */
  function arrays(payload) {
    if (!payload.__arrays) {
      decoded += 1;
      Object.defineProperty(payload, "__arrays", { enumerable: false, value: {
        id: decoded, attention: decodeSpec(payload.attention), stepRows: decodeSpec(payload.step_rows),
        rollout: decodeSpec(payload.rollout), norms: decodeSpec(payload.norms),
      } });
    }
    return payload.__arrays;
  }

  /** A fetched body (dashboard/example/transport.py ``pack``): uint32 header length, JSON header, arrays at
   * ``data_offset`` + their ``offset``, each read in place (float16 as Float16Array where the browser has it). */
  function unpack(buf) {
    const n = new DataView(buf).getUint32(0, true);
    const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 4, n)));
    for (const name of Object.keys(header)) {
      const s = header[name];
      if (s && typeof s === "object" && s.dtype && s.nbytes !== undefined && s.offset !== undefined) {
        header[name] = typedView(buf, header.data_offset + s.offset, s);
      }
    }
    return header;
  }

  function typedView(buf, at, spec) {
    if (spec.dtype === "f4") { return new Float32Array(buf, at, spec.nbytes / 4); }
    if (typeof Float16Array === "function") { return new Float16Array(buf, at, spec.nbytes / 2); }
    const raw = new Uint16Array(buf, at, spec.nbytes / 2);
    const table = half();
    const out = new Float32Array(raw.length);
    for (let i = 0; i < raw.length; i++) { out[i] = table[raw[i]]; }
    return out;
  }

  // ---------------------------------------------------------------------------------------------------
  // Selection helpers (the Python side: dashboard/example/payload.py and urlstate.py)
  // ---------------------------------------------------------------------------------------------------
  const KEY_FIELDS = ["run", "example", "kind", "attn"];
  const ATTN_MODES = ["raw", "rollout", "value-weighted"];  // urlstate.ATTN_MODES
  const URL_FIELDS = ["tab", "run", "example", "layer", "head", "step", "kind", "attn"];

  /** What data a view state needs (payload.payload_key). */
  function keyOf(state) {
    const key = {};
    for (const f of KEY_FIELDS) { key[f] = state[f]; }
    key.detail = state.detail || "all";
    if (key.detail === "layer") { key.layer = state.layer; }
    return key;
  }

  /** A key as text (a ``step`` in it does not count: a one-layer payload's rows of a step come on their own). */
  function keyText(key) {
    const detail = key.detail || "all";
    return JSON.stringify([key.run, key.example, key.kind, key.attn, detail, detail === "layer" ? key.layer : null]);
  }

  function sameKey(a, b) { return !!a && !!b && keyText(a) === keyText(b); }

  function sameState(a, b) {
    if (!a || !b) { return a === b; }
    const keys = new Set(Object.keys(a).concat(Object.keys(b)));
    for (const k of keys) { if (a[k] !== b[k]) { return false; } }
    return true;
  }

  function urlValue(field, state, tab) {
    if (field === "tab") { return tab; }
    if (field === "head") { return state.head === null || state.head === undefined ? "mean" : String(state.head); }
    const v = state[field];
    return v === null || v === undefined ? null : String(v);
  }

  function formatUrl(state, tab) {
    const params = new URLSearchParams();
    for (const f of URL_FIELDS) {
      const v = urlValue(f, state, tab);
      if (v !== null) { params.append(f, v); }
    }
    if (pageStore()) { params.append("store", pageStore()); }  // the page's store (app.py)
    return "?" + params.toString();
  }

  function urlShows(search, state, tab) {
    const params = new URLSearchParams(search || "");
    return URL_FIELDS.every((f) => urlValue(f, state, tab) === params.get(f));
  }

  function headLabel(head) { return head === null ? "mean of all heads" : "head " + head; }

  /** ``<run>_ex<i>[_<kind>]_<view>``: the modebar's file name of a view. */
  function exampleStem(state, view) {
    return state.run + "_ex" + state.example + (state.kind !== "self" ? "_" + state.kind : "") + "_" + view;
  }

  /** ``<run>_ex<i>_L<l>_H<h>[_<kind>][_<suffix>]`` (views.file_stem): Save PNG / Save SVG's file name. */
  function fileStem(state, suffix) {
    let stem = state.run + "_ex" + state.example + "_L" + state.layer + "_H" + (state.head === null ? "mean" : state.head);
    if (state.kind !== "self") { stem += "_" + state.kind; }
    return stem + (suffix ? "_" + suffix : "");
  }

  // ---------------------------------------------------------------------------------------------------
  // Slices of the example's attention
  // ---------------------------------------------------------------------------------------------------

  /** Mean over heads, in float32 as numpy's ``mean(axis=0, dtype=float32)``: sequential sums, then ÷ H. */
  function meanOf(a, base, nHeads, block, stride) {
    const out = new Float32Array(block);
    for (let j = 0; j < block; j++) {
      let s = a[base + j];
      for (let h = 1; h < nHeads; h++) { s = Math.fround(s + a[base + h * stride + j]); }
      out[j] = Math.fround(s / nHeads);
    }
    return out;
  }

  /** [Tq*Tk] weights of one head (or the mean of the layer's heads); null when the layer was not sent. The last
   * two asked for are kept on ``d`` (the head view and the matrix of one selection share them). */
  function headWeights(p, d, layer, head) {
    const li = p.layers.indexOf(layer);
    if (li < 0) { return null; }
    const memo = layer + "|" + head;
    d.weightsMemo = d.weightsMemo || [];
    const hit = d.weightsMemo.find((m) => m.memo === memo);
    if (hit) { return hit.w; }
    const block = p.tq * p.tk;
    const base = li * p.n_heads * block;
    const w = head === null ? meanOf(d.attention, base, p.n_heads, block, block)
      : f32(d.attention.subarray(base + head * block, base + (head + 1) * block));
    d.weightsMemo = [{ memo: memo, w: w }].concat(d.weightsMemo.slice(0, 1));
    return w;
  }

  /** Every head of a layer: [H] arrays of [Tq*Tk]. */
  function layerHeads(p, d, layer) {
    const li = p.layers.indexOf(layer);
    const block = p.tq * p.tk;
    const base = li * p.n_heads * block;
    const out = [];
    for (let h = 0; h < p.n_heads; h++) { out.push(f32(d.attention.subarray(base + h * block, base + (h + 1) * block))); }
    return out;
  }

  /** [L] rows over the keys of one query position (one head, or the mean of heads); the same arrays for the
   * same payload, step and head (a layer change then only moves the outline in the page). */
  function stepRows(p, d, step, head) {
    const memo = step + "|" + head;
    d.stepMemo = d.stepMemo || {};
    if (!d.stepMemo[memo]) {
      const source = p.detail === "layer" ? rowsOfStep(p, d, step) : null;
      if (p.detail === "layer" && !source) { return null; }  // asked for; drawn when they come
      d.stepMemo = { [memo]: computeStepRows(p, d, step, head, source) };
    }
    return d.stepMemo[memo];
  }

  /** A one-layer payload's rows ([L, H, Tk]) of query position ``step``: its own, or fetched on their own (null
   * until they come; the time-step view is drawn then). */
  function rowsOfStep(p, d, step) {
    if (p.step === step) { return d.stepRows; }
    const entry = request(Object.assign({}, p.key, { part: "rows", step: step }), rowsText(p.key, step));
    return entry.payload && !entry.payload.error ? decodeSpec(entry.payload.step_rows) : null;
  }

  function computeStepRows(p, d, step, head, source) {
    const rows = [];
    const tk = p.tk;
    for (let l = 0; l < p.n_layers; l++) {
      let a, base, stride;
      if (source) { a = source; base = l * p.n_heads * tk; stride = tk; }
      else { a = d.attention; base = l * p.n_heads * p.tq * tk + step * tk; stride = p.tq * tk; }
      rows.push(head === null ? meanOf(a, base, p.n_heads, tk, stride)
        : f32(a.subarray(base + head * stride, base + head * stride + tk)));
    }
    return rows;
  }

  /** Float32 numbers for Plotly (a float16 slice converted: the same values). */
  function f32(a) { return a instanceof Float32Array ? a : new Float32Array(a); }  // native conversion

  function rowsOf(flat, n, width) {
    const rows = [];
    for (let i = 0; i < n; i++) { rows.push(flat.subarray(i * width, (i + 1) * width)); }
    return rows;
  }

  // ---------------------------------------------------------------------------------------------------
  // Figures (templates from dashboard/example/payload.templates)
  // ---------------------------------------------------------------------------------------------------
  const clone = (x) => JSON.parse(JSON.stringify(x));

  function rect(colour, x0, x1, y0, y1, width) {
    return { type: "rect", xref: "x", yref: "y", x0: x0, x1: x1, y0: y0, y1: y1,
      line: { color: colour, width: width === undefined ? 1.5 : width } };
  }

  function messageFigure(p, text) {
    const fig = clone(p.message_template);
    fig.layout.meta = { message: text };
    fig.layout.annotations[0].text = text;
    return fig;
  }

  /** The matrix template (colour-bar title) of the attention mode. */
  function barOf(st) {
    return st.attn === "value-weighted" ? "‖α·f(x)‖" : st.attn === "rollout" ? "rollout" : "weight";
  }

  function matrixFigure(p, d, st) {
    const t = p.templates;
    let weights, title;
    if (st.attn === "rollout") {
      if (p.rollout_error) { return messageFigure(p, p.rollout_error); }
      if (!(st.layer >= 0 && st.layer < p.n_layers)) {
        return messageFigure(p, "layer " + st.layer + " is out of range (0.." + (p.n_layers - 1) + ")");
      }
      const block = p.tq * p.tk;
      weights = () => d.rollout.subarray(st.layer * block, (st.layer + 1) * block);
      title = "Attention rollout through layer " + st.layer + " (mean of heads, with residual)";
    } else if (st.attn === "value-weighted") {
      if (p.norms_error) { return messageFigure(p, p.norms_error); }
      weights = () => headWeights(p, { attention: d.norms }, st.layer, st.head);
      title = "Layer " + st.layer + ", " + headLabel(st.head) + " — value-weighted ‖α·f(x)‖, " + p.kind_label;
    } else {
      weights = () => headWeights(p, d, st.layer, st.head);
      title = "Layer " + st.layer + ", " + headLabel(st.head) + " — " + p.kind_label;
    }
    const fig = clone(t.matrix[barOf(st)]);
    // the same rows while the weights are the same: Plotly.react then only moves the outline (a new query
    // position) instead of drawing the heatmap again
    const memo = [st.attn, st.layer, st.head].join("|");
    if (!d.matrixRows || d.matrixRows.memo !== memo) {
      d.matrixRows = { memo: memo, z: rowsOf(weights(), p.tq, p.tk) };
    }
    fig.data[0].z = d.matrixRows.z;
    if (p.q_raw && p.k_raw) { Object.assign(fig.data[0], rawCells(p, d)); }
    fig.layout.title.text = title;
    fig.layout.shapes = st.step >= 0 && st.step < p.tq
      ? [rect(t.select_colour, -0.5, p.tk - 0.5, st.step - 0.5, st.step + 0.5)] : [];
    return fig;
  }

  /** Per matrix cell, the raw tokens its hover shows (figures.raw_cells): the query's in ``text``, the key's in
   * ``customdata``; rows shared, built once per payload. */
  function rawCells(p, d) {
    if (!d.rawCells) {
      d.rawCells = { text: p.q_raw.map((r) => new Array(p.tk).fill(r)), customdata: p.q_raw.map(() => p.k_raw) };
    }
    return d.rawCells;
  }

  /** Per token, its three strongest connections (figures._top_hover). */
  function topHover(w, tq, tk, qTokens, kTokens, byQuery) {
    const n = byQuery ? tq : tk;
    const width = byQuery ? tk : tq;
    const own = byQuery ? qTokens : kTokens;
    const other = byQuery ? kTokens : qTokens;
    const arrow = byQuery ? "→" : "←";
    const k = Math.min(3, width);
    const out = [];
    for (let i = 0; i < n; i++) {
      const taken = [];
      const parts = [];
      for (let c = 0; c < k; c++) {
        let best = -1, bestV = -Infinity;
        for (let j = 0; j < width; j++) {
          if (taken.indexOf(j) >= 0) { continue; }
          const v = byQuery ? w[i * tk + j] : w[j * tk + i];
          if (best < 0 || v > bestV) { best = j; bestV = v; }
        }
        taken.push(best);
        parts.push(other[best] + " " + bestV.toFixed(2));
      }
      out.push(i + " " + own[i] + (k ? " " + arrow + " " + parts.join(", ") : ""));
    }
    return out;
  }

  /** Lines of one head grouped by weight bin (analysis.head_view_bins): the same pairs, in the same order. */
  function headViewBins(w, tq, tk, edges, qSel, kSel, maxSegments) {
    const lowest = Math.fround(edges[0]);
    const pairs = [];
    const i0 = qSel === null ? 0 : qSel, i1 = qSel === null ? tq : qSel + 1;
    const j0 = kSel === null ? 0 : kSel, j1 = kSel === null ? tk : kSel + 1;
    for (let i = i0; i < i1; i++) {
      for (let j = j0; j < j1; j++) {
        const v = w[i * tk + j];
        if (v >= lowest) { pairs.push([i, j, v, pairs.length]); }
      }
    }
    let kept = pairs;
    let dropped = 0;
    if (pairs.length > maxSegments) {
      kept = pairs.slice().sort((a, b) => (b[2] - a[2]) || (a[3] - b[3])).slice(0, maxSegments)
        .sort((a, b) => a[3] - b[3]);
      dropped = pairs.length - maxSegments;
    }
    const nb = edges.length - 1;
    const groups = [];
    for (let b = 0; b < nb; b++) { groups.push([]); }
    for (const pr of kept) {
      let b = 0;
      while (b + 1 < edges.length && edges[b + 1] <= pr[2]) { b++; }
      groups[Math.min(Math.max(b, 0), nb - 1)].push(pr);
    }
    const bins = [];
    for (let b = 0; b < nb; b++) {
      const g = groups[b];
      if (!g.length) { continue; }
      const x = new Float32Array(3 * g.length), y = new Float32Array(3 * g.length);
      g.forEach((pr, s) => {
        x[3 * s] = 0; x[3 * s + 1] = 1; x[3 * s + 2] = NaN;
        y[3 * s] = pr[0]; y[3 * s + 1] = pr[1]; y[3 * s + 2] = NaN;
      });
      const lo = edges[b], hi = Math.min(edges[b + 1], 1.0);
      bins.push({ lo: lo, hi: hi, opacity: Number(((lo + hi) / 2).toFixed(4)), x: x, y: y, count: g.length });
    }
    return { bins: bins, dropped: dropped };
  }

  function validPin(pin, p, st) {
    if (!pin || !pin.key || pin.key[0] !== st.run || pin.key[1] !== st.example || pin.key[2] !== st.kind) {
      return null;
    }
    const n = pin.side === "query" ? p.tq : p.tk;
    return pin.index >= 0 && pin.index < n ? [pin.side, pin.index] : null;
  }

  function headViewFigure(p, d, st, pin) {
    const t = p.templates;
    const multi = st.head === null;
    const stack = multi ? layerHeads(p, d, st.layer) : [headWeights(p, d, st.layer, st.head)];
    const mean = multi ? meanOf(d.attention, p.layers.indexOf(st.layer) * p.n_heads * p.tq * p.tk, p.n_heads,
      p.tq * p.tk, p.tq * p.tk) : stack[0];
    const selected = validPin(pin, p, st);
    const qSel = selected && selected[0] === "query" ? selected[1] : null;
    const kSel = selected && selected[0] === "key" ? selected[1] : null;
    const fig = clone(t.head_view[multi ? "all" : "one"]);
    const sides = [[p.q_tokens, qSel, true], [p.k_tokens, kSel, false]];
    sides.forEach(([tokens, sel, byQuery], n) => {
      const trace = fig.data[n];
      trace.hovertext = topHover(mean, p.tq, p.tk, p.q_tokens, p.k_tokens, byQuery);
      const highlight = new Float32Array(tokens.length);
      if (sel !== null) { highlight[sel] = 1; }
      trace.marker.color = highlight;
    });
    const edges = t.head_edges[multi ? "all" : "one"];
    const cap = Math.max(1, Math.floor(t.max_segments / stack.length));
    let droppedTotal = 0;
    stack.forEach((w, h) => {
      const { bins, dropped } = headViewBins(w, p.tq, p.tk, edges, qSel, kSel, cap);
      droppedTotal += dropped;
      const colour = multi ? t.head_colours[h % t.head_colours.length] : t.head_colours[0];
      const label = "head " + h;
      bins.forEach((b, k) => fig.data.push({
        type: "scatter", x: b.x, y: b.y, mode: "lines", opacity: b.opacity, line: { color: colour, width: 2 },
        hoverinfo: "skip", name: label, legendgroup: label, showlegend: multi && k === 0,
        meta: { head: h, lo: b.lo, hi: b.hi, segments: b.count },
      }));
    });
    const title = multi ? "Head view — layer " + st.layer + ", all heads"
      : "Head view — layer " + st.layer + ", head " + st.head;
    const hint = selected === null ? " · click a token for its lines" : " · click it again for all";
    const note = droppedTotal ? " (" + droppedTotal + " weakest lines not drawn)" : "";
    fig.layout.title.text = title + hint + note;
    fig.layout.meta = { view: "head", selected: selected, edges: edges, heads: stack.length, dropped: droppedTotal };
    return fig;
  }

  function modelViewFigure(p, mv, st) {
    if (mv.error) { return messageFigure(p, mv.error); }
    // the same trace objects every time: Plotly.react then only moves the outline (no recalculation)
    const fig = { data: mv.data, layout: clone(mv.layout) };
    const meta = fig.layout.meta || {};
    if (st.head !== null && meta.tile) {
      const sr = meta.tile[0], sc = meta.tile[1];
      fig.layout.shapes = [rect(p.templates.select_colour, st.head * (sc + 1) - 0.5, st.head * (sc + 1) + sc - 0.5,
        st.layer * (sr + 1) - 0.5, st.layer * (sr + 1) + sr - 0.5, 2.5)];
    }
    return fig;
  }

  function timestepFigures(p, d, st) {
    if (!(st.step >= 0 && st.step < p.tq)) {
      const text = "time step " + st.step + " is out of range for this example (0.." + (p.tq - 1) + ")";
      return [messageFigure(p, text), messageFigure(p, text)];
    }
    const rows = stepRows(p, d, st.step, st.head);
    if (!rows) { return null; }
    const what = p.step_word.charAt(0).toUpperCase() + p.step_word.slice(1);
    const head = headLabel(st.head);
    const bars = clone(p.templates.timestep_bars);
    bars.data[0].y = rows[st.layer];
    bars.layout.title.text = what + " " + st.step + " (" + p.q_tokens[st.step] + ") — layer " + st.layer + ", " + head;
    const layers = { data: layersTrace(p, d, rows), layout: clone(p.templates.timestep_layers.layout) };
    layers.layout.title.text = what + " " + st.step + " (" + p.q_tokens[st.step] + ") across layers — " + head;
    layers.layout.shapes = st.layer >= 0 && st.layer < p.n_layers
      ? [rect(p.templates.select_colour, -0.5, p.tk - 0.5, st.layer - 0.5, st.layer + 0.5)] : [];
    return [bars, layers];
  }

  /** The time-step heatmap's traces, the same objects while its rows are (see stepRows). */
  function layersTrace(p, d, rows) {
    if (d.layersRows !== rows) {
      const trace = clone(p.templates.timestep_layers.data[0]);
      trace.z = rows;
      d.layersRows = rows;
      d.layersData = [trace];
    }
    return d.layersData;
  }

  // ---------------------------------------------------------------------------------------------------
  // The head view on a canvas: the figure model above (the same traces as figures.head_view_figure), drawn
  // without Plotly, one fixed row per token in a scrolling box (legible at any length), lines culled to the rows
  // in view. A click on a token label pins it (set_props on the click store).
  // ---------------------------------------------------------------------------------------------------
  const HV = { row: 18, pad: 10, font: "12px system-ui, sans-serif", bold: "bold 12px system-ui, sans-serif",
    text: "#333333", quiet: "#999999", pinned: "#ff7f0e" };

  function headViewBox(el) {
    if (el.__hv && el.contains(el.__hv.canvas)) { return el.__hv; }
    el.innerHTML = "";
    const make = (tag, css) => { const n = document.createElement(tag); Object.assign(n.style, css); return n; };
    const title = make("div", { fontSize: "13px", fontWeight: "600", lineHeight: "18px", minHeight: "18px" });
    const legend = make("div", { fontSize: "11px", lineHeight: "16px" });
    const scroll = make("div", { overflowY: "auto", position: "relative", flex: "1 1 auto", minHeight: "0" });
    const canvas = make("canvas", { position: "sticky", top: "0", display: "block", width: "100%", cursor: "pointer" });
    const spacer = make("div", {});
    const tip = make("div", { position: "absolute", display: "none", pointerEvents: "none", zIndex: "5",
      background: "rgba(255,255,255,0.95)", border: "1px solid #adb5bd", borderRadius: "3px", padding: "2px 6px",
      fontSize: "12px", whiteSpace: "pre" });
    Object.assign(el.style, { display: "flex", flexDirection: "column", position: "relative" });
    scroll.append(canvas, spacer);
    el.append(title, legend, scroll, tip);
    const box = { el: el, title: title, legend: legend, scroll: scroll, canvas: canvas, spacer: spacer, tip: tip,
      fig: null, hover: null };
    scroll.addEventListener("scroll", () => paintHeadView(box));
    canvas.addEventListener("mousemove", (e) => {
      const hit = headViewHit(box, e.clientX, e.clientY);
      const key = hit ? hit.side + hit.index : null;
      if (key !== box.hover) { box.hover = key; showTip(box, hit, e); }
      else if (hit) { placeTip(box, e); }
    });
    canvas.addEventListener("mouseleave", () => { box.hover = null; tip.style.display = "none"; });
    canvas.addEventListener("click", (e) => {
      const hit = headViewHit(box, e.clientX, e.clientY);
      if (hit) { onHeadViewClick(hit); }
    });
    if (window.ResizeObserver) { new ResizeObserver(() => paintHeadView(box)).observe(scroll); }
    el.__hv = box;
    return box;
  }

  /** Where the label columns end (queries, right-aligned) and start (keys), in CSS pixels. */
  function headViewColumns(width) { return { q: Math.round(width * 0.36), k: Math.round(width * 0.64) }; }

  /** The token label under a point of the page: {side, index}, or null. */
  function headViewHit(box, clientX, clientY) {
    const fig = box.fig;
    if (!fig || !fig.data || fig.data.length < 2) { return null; }
    const r = box.canvas.getBoundingClientRect();
    const x = clientX - r.left, y = clientY - r.top + box.scroll.scrollTop;
    const cols = headViewColumns(r.width);
    const side = x <= cols.q + 8 ? "query" : x >= cols.k - 8 ? "key" : null;
    if (side === null) { return null; }
    const n = fig.data[side === "query" ? 0 : 1].text.length;
    const index = Math.floor((y - HV.pad) / HV.row);
    return index >= 0 && index < n ? { side: side, index: index } : null;
  }

  function placeTip(box, e) {
    const r = box.el.getBoundingClientRect();
    box.tip.style.left = Math.min(e.clientX - r.left + 12, r.width - box.tip.offsetWidth - 4) + "px";
    box.tip.style.top = (e.clientY - r.top + 14) + "px";
  }

  function showTip(box, hit, e) {
    if (!hit) { box.tip.style.display = "none"; return; }
    const trace = box.fig.data[hit.side === "query" ? 0 : 1];
    const raw = (trace.customdata || [])[hit.index];  // the raw token (figures._token_trace)
    box.tip.textContent = ((trace.hovertext || [])[hit.index] || "") + (raw ? "\nraw " + raw : "");
    box.tip.style.display = "block";
    placeTip(box, e);
  }

  /** Draw ``fig`` (a head-view figure model, or a message figure) into the head view's box. */
  function renderHeadView(el, fig) {
    const box = headViewBox(el);
    box.fig = fig;
    el.__figure = fig;  // what the view shows (the browser tests compare it with figures.head_view_figure)
    const meta = fig.layout.meta || {};
    box.title.textContent = meta.message !== undefined ? "" : fig.layout.title.text;
    const heads = fig.data.slice(2).filter((t) => t.showlegend);
    box.legend.innerHTML = "";
    heads.forEach((t) => {
      const item = document.createElement("span");
      item.style.marginRight = "8px";
      item.innerHTML = '<span style="display:inline-block;width:10px;height:10px;margin-right:3px;background:'
        + t.line.color + '"></span>';
      item.appendChild(document.createTextNode(t.name));
      box.legend.appendChild(item);
    });
    const rows = fig.data.length >= 2 ? Math.max(fig.data[0].text.length, fig.data[1].text.length) : 0;
    const view = box.scroll.clientHeight;
    const content = meta.message !== undefined ? view : 2 * HV.pad + rows * HV.row;
    box.spacer.style.height = Math.max(0, content - view) + "px";
    const pinned = meta.selected;
    if (pinned) {  // keep a pinned token in view
      const y = HV.pad + pinned[1] * HV.row;
      if (y < box.scroll.scrollTop || y + HV.row > box.scroll.scrollTop + view) {
        box.scroll.scrollTop = Math.max(0, y - view / 2);
      }
    }
    paintHeadView(box);
    requestAnimationFrame(() => el.dispatchEvent(new CustomEvent("attnviz:drawn", { bubbles: true })));
  }

  function fitText(ctx, text, width) {
    if (ctx.measureText(text).width <= width) { return text; }
    let lo = 0, hi = text.length;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (ctx.measureText(text.slice(0, mid) + "…").width <= width) { lo = mid; } else { hi = mid - 1; }
    }
    return text.slice(0, lo) + "…";
  }

  function paintHeadView(box) {
    const fig = box.fig;
    const canvas = box.canvas;
    const width = box.scroll.clientWidth, height = box.scroll.clientHeight;
    if (!fig || width <= 0 || height <= 0) { return; }
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
      canvas.width = Math.round(width * dpr); canvas.height = Math.round(height * dpr);
      canvas.style.height = height + "px";
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const meta = fig.layout.meta || {};
    if (meta.message !== undefined) {
      ctx.fillStyle = HV.quiet; ctx.font = HV.font; ctx.textAlign = "center"; ctx.textBaseline = "middle";
      ctx.fillText(fitText(ctx, meta.message, width - 20), width / 2, height / 2);
      return;
    }
    const top = box.scroll.scrollTop;
    const first = Math.max(0, Math.floor((top - HV.pad) / HV.row) - 1);
    const last = Math.floor((top + height - HV.pad) / HV.row) + 1;
    const yOf = (i) => HV.pad + i * HV.row + HV.row / 2 - top;
    const cols = headViewColumns(width);
    const x0 = cols.q + 6, x1 = cols.k - 6;
    ctx.lineWidth = 2;
    for (let t = 2; t < fig.data.length; t++) {
      const trace = fig.data[t];
      const ys = trace.y;
      ctx.globalAlpha = trace.opacity;
      ctx.strokeStyle = trace.line.color;
      ctx.beginPath();
      for (let s = 0; s + 1 < ys.length; s += 3) {
        const a = ys[s], b = ys[s + 1];
        if ((a < first && b < first) || (a > last && b > last)) { continue; }
        ctx.moveTo(x0, yOf(a)); ctx.lineTo(x1, yOf(b));
      }
      ctx.stroke();
    }
    ctx.globalAlpha = 1;
    ctx.textBaseline = "middle";
    [[fig.data[0], cols.q, "right"], [fig.data[1], cols.k, "left"]].forEach(([trace, x, align]) => {
      ctx.textAlign = align;
      const colour = trace.marker.color;
      const n = trace.text.length;
      for (let i = first; i <= Math.min(last, n - 1); i++) {
        const on = colour[i] >= 0.5;
        ctx.font = on ? HV.bold : HV.font;
        ctx.fillStyle = on ? HV.pinned : HV.text;
        ctx.fillText(fitText(ctx, trace.text[i], cols.q - 8), x, yOf(i));
      }
    });
  }

  // ---------------------------------------------------------------------------------------------------
  // Drawing: every attention view lives in a box the page owns (Plotly or the head view's canvas), so a change
  // is drawn in the event that made it, with no Dash round trip; views below the first screen are drawn when
  // they scroll into view.
  // ---------------------------------------------------------------------------------------------------
  const LAZY = ["model-view", "timestep-bars", "timestep-layers"];
  const MODEL_VIEW_CLICK = "model-view-click";
  const HEAD_VIEW_CLICK = "head-view-click";
  const SHOWN_PX = 120;  // a view counts as in view when this much of it shows (a sliver at the bottom does not)
  const watched = {};
  let observer = null;

  /** Whether a view's element is on the screen. */
  function onScreen(id) {
    const el = document.getElementById(id);
    if (!el) { return false; }
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && r.bottom > SHOWN_PX && r.top < window.innerHeight - SHOWN_PX;
  }

  /** Watch the views below the first screen: one that scrolls into view is drawn then, if it is behind. */
  function watchVisibility() {
    if (!window.IntersectionObserver) { return; }
    if (observer === null) {
      observer = new IntersectionObserver((entries) => {
        const arrived = entries.filter((e) => e.isIntersecting).map((e) => e.target.id);
        if (arrived.length && current.state && current.payload) {
          paintBelow(current.state, current.payload, arrays(current.payload), arrived);
        }
      }, { rootMargin: -SHOWN_PX + "px 0px " + -SHOWN_PX + "px 0px" });
    }
    for (const id of LAZY) {
      const el = document.getElementById(id);
      if (el && watched[id] !== el) {
        if (watched[id]) { observer.unobserve(watched[id]); }
        observer.observe(el);
        watched[id] = el;
      }
    }
  }

  function withFilename(config, stem) {
    const out = Object.assign({}, config || {});
    out.toImageButtonOptions = Object.assign({}, out.toImageButtonOptions || {}, { filename: stem });
    return out;
  }

  // What each view shows now, so that a change redraws only the views it affects, and the element it was drawn
  // in: the tabs take the Example tab's content out of the page while another tab shows, and put new elements
  // back when it returns, which show nothing until they are drawn again (see ``ns.draw``).
  let drawn = {};
  const drawnIn = {};
  const VIEW_BOX = { matrix: "attn-matrix", head: "head-view", model: "model-view", step: "timestep-bars",
    error: "attn-matrix" };

  /** Whether ``view`` shows ``sig`` in the element the page holds now. */
  function isDrawn(view, sig) {
    return drawn[view] === sig && drawnIn[view] === document.getElementById(VIEW_BOX[view]);
  }

  function markDrawn(view, sig) {
    drawn[view] = sig;
    drawnIn[view] = document.getElementById(VIEW_BOX[view]);
  }
  // The selection and data last drawn, and the pinned token: a control's own event draws from them at once
  // (see onControl), before Dash's callbacks carry the change to the URL and the server.
  const current = { state: null, payload: null, pin: null };

  function signatures(d, state, pin, payload) {
    return {
      matrix: [d.id, state.layer, state.head, state.step, state.attn, state.redraw].join("|"),
      head: [d.id, state.layer, state.head, JSON.stringify(validPin(pin, payload, state)), state.redraw].join("|"),
      model: [d.id, state.layer, state.head, state.redraw].join("|"),
      step: [d.id, state.layer, state.head, state.step, state.redraw].join("|"),
    };
  }

  /** Plotly draws ``fig`` in the box ``id`` (a div the page owns), filling the box's height if it has one. */
  function renderGraph(id, fig, config) {
    const host = document.getElementById(id);
    if (!host || !window.Plotly) { return false; }
    if (host.clientHeight > 0 && host.classList.contains("attnviz-fill")) { fig.layout.height = host.clientHeight; }
    if (!host.__gd || !host.contains(host.__gd)) {
      host.innerHTML = "";
      host.__drawing = false;
      host.__next = null;
      host.__gd = document.createElement("div");
      host.appendChild(host.__gd);
    }
    const gd = host.__gd;
    if (host.__drawing) { host.__next = [fig, config]; return true; }  // drawn after the one in progress
    react(host, gd, fig, config);
    if (id === "model-view" && !gd.__clickHooked && gd.on) {
      gd.on("plotly_click", onModelViewClick);
      gd.__clickHooked = true;
    }
    return true;
  }

  /** Plotly.react, one at a time per graph: a new config (the file name names the example) makes it a new plot
   * whose promise settles later, and a figure drawn meanwhile would be overwritten by it; the last figure asked
   * for while one is drawn is drawn next. */
  function react(host, gd, fig, config) {
    const done = window.Plotly.react(gd, fig.data, fig.layout, Object.assign({ responsive: true }, config));
    if (!done || !done.then) { return; }
    host.__drawing = true;
    const next = () => {
      host.__drawing = false;
      const queued = host.__next;
      host.__next = null;
      if (queued && host.__gd === gd) { react(host, gd, queued[0], queued[1]); }
    };
    done.then(next, next);
  }

  // ---------------------------------------------------------------------------------------------------
  // The matrix: its cells on a canvas of the page's own (one pixel per cell, scaled without smoothing, as
  // Plotly's own heatmap image is) under a Plotly frame that draws everything else: axes with every token,
  // title, colour bar, the query position's outline, zoom and pan. A change of layer, head or query position
  // then redraws the cells and changes the frame's title, outline and colour-bar labels only (Plotly does not
  // lay out or measure the axes again). The frame's first trace is the matrix's heatmap trace itself, hidden
  // (``visible: false``: Plotly neither computes nor draws it), so ``gd.data[0]`` holds the array the canvas was
  // drawn from; the host's ``__figure`` is the whole figure model (the browser tests read both). The hover and
  // the image downloads (modebar, Save PNG / SVG) use the model: the hover text is the template's
  // ``hovertemplate`` filled for the cell under the pointer, a download renders the model with Plotly's heatmap.
  // ---------------------------------------------------------------------------------------------------

  /** "#rrggbb" or "rgb(a)(…)" as [r, g, b, a] (a in 0..1). */
  function parseColour(text) {
    const c = String(text).trim();
    if (c.charAt(0) === "#") {
      const hex = c.length === 4 ? c.slice(1).split("").map((x) => x + x).join("") : c.slice(1);
      return [parseInt(hex.slice(0, 2), 16), parseInt(hex.slice(2, 4), 16), parseInt(hex.slice(4, 6), 16), 1];
    }
    const parts = c.replace(/^rgba?\(|\)$/g, "").split(",").map(Number);
    return [parts[0], parts[1], parts[2], parts.length > 3 ? parts[3] : 1];
  }

  /** The colour range Plotly gives a heatmap with ``zmin`` but no ``zmax``: both from the data (its colour
   * axis is automatic unless both ends are set), widened by 0.5 each way when they are equal. */
  function colourRange(rows) {
    let lo = Infinity, hi = -Infinity;
    for (const row of rows) {
      for (let j = 0; j < row.length; j++) {
        const v = row[j];
        if (v < lo) { lo = v; }
        if (v > hi) { hi = v; }
      }
    }
    if (lo === Infinity) { return [0, 1]; }
    return lo === hi ? [lo - 0.5, hi + 0.5] : [lo, hi];
  }

  /** RGBA bytes of every cell as Plotly's heatmap colours them: the colour scale's stops spread over
   * [lo, hi], each channel interpolated linearly and rounded, values outside clamped, a missing value clear. */
  function cellColours(rows, tk, scale, lo, hi) {
    const pos = scale.map((s) => lo + s[0] * (hi - lo));
    const col = scale.map((s) => parseColour(s[1]));
    const n = pos.length;
    const out = new Uint8ClampedArray(rows.length * tk * 4);
    let o = 0;
    for (const row of rows) {
      for (let j = 0; j < tk; j++, o += 4) {
        const v = row[j];
        if (!(v === v)) { continue; }  // NaN: transparent
        let k = 1;
        while (k < n - 1 && pos[k] <= v) { k++; }
        const a = col[k - 1], b = col[k];
        let t = (v - pos[k - 1]) / (pos[k] - pos[k - 1] || 1);
        t = t < 0 ? 0 : t > 1 ? 1 : t;
        out[o] = Math.round(a[0] * (1 - t) + b[0] * t);
        out[o + 1] = Math.round(a[1] * (1 - t) + b[1] * t);
        out[o + 2] = Math.round(a[2] * (1 - t) + b[2] * t);
        out[o + 3] = Math.round((a[3] * (1 - t) + b[3] * t) * 255);
      }
    }
    return out;
  }

  /** About six round colour-bar ticks over [lo, hi]: [values, labels]. */
  function niceTicks(lo, hi) {
    const span = hi - lo;
    const raw = span / 5;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || 10 * mag;
    const digits = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
    const values = [], labels = [];
    for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) {
      values.push(v);
      labels.push(v.toFixed(digits));
    }
    return [values, labels];
  }

  /** The frame's trace that carries the colour bar (one point, not drawn; the tokens are on the axes by their
   * ``categoryarray``): built once per template and kept, so that Plotly sees the same arrays and only the colour
   * bar's labels change from one selection to the next. */
  function frameTrace(heat) {
    if (!heat.__frameTrace) {
      Object.defineProperty(heat, "__frameTrace", { enumerable: false, value: {
        type: "scatter", mode: "markers", x: [heat.x[0]], y: [heat.y[0]], hoverinfo: "skip", showlegend: false,
        marker: { size: 1, opacity: 0, color: [0], colorscale: heat.colorscale, cmin: 0, cmax: 1, showscale: true,
          colorbar: heat.colorbar },
      } });
    }
    return heat.__frameTrace;
  }

  /** An axis of the frame: the tokens as its categories (the template's own array: Plotly sees the same one each
   * time), fixed to the cells, no grid over them, no title (drawn as an annotation, see ``axisTitles``). */
  function frameAxis(axis, labels, range) {
    return Object.assign({}, axis, { categoryorder: "array", categoryarray: labels, range: range, autorange: false,
      showgrid: false, zeroline: false, title: { text: "" } });
  }

  /** The axis titles as annotations at the outer edge of the label margins: Plotly places an axis title by
   * measuring every tick label it might cover (~25 ms at T = 512), an annotation by itself. */
  function axisTitles(layout) {
    const m = layout.margin || {};
    const text = (axis) => (axis && axis.title && axis.title.text) || "";
    return [
      { text: text(layout.xaxis), xref: "paper", yref: "paper", x: 0.5, y: 0, xanchor: "center", yanchor: "bottom",
        yshift: -(m.b || 0), showarrow: false, font: { size: 14 } },
      { text: text(layout.yaxis), xref: "paper", yref: "paper", x: 0, y: 0.5, xanchor: "left", yanchor: "middle",
        xshift: -(m.l || 0), textangle: -90, showarrow: false, font: { size: 14 } },
    ].filter((a) => a.text);
  }

  /** The Plotly frame of the matrix model ``fig``: its heatmap hidden, the token axes fixed to the cells (no
   * grid over them, no background under the canvas), the colour bar labelled for [lo, hi], no Plotly hover. */
  function matrixFrame(fig, template, lo, hi) {
    const heat = fig.data[0], kept = template.data[0];
    const base = frameTrace(kept);
    const [values, labels] = niceTicks(lo, hi);
    const bar = Object.assign({}, base.marker.colorbar, { tickmode: "array",
      tickvals: values.map((v) => (v - lo) / (hi - lo)), ticktext: labels });
    const trace = Object.assign({}, base, { marker: Object.assign({}, base.marker, { colorbar: bar }) });
    const layout = Object.assign({}, fig.layout, { hovermode: false, paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)" });
    layout.xaxis = frameAxis(fig.layout.xaxis, kept.x, [-0.5, kept.x.length - 0.5]);
    layout.yaxis = frameAxis(fig.layout.yaxis, kept.y, [kept.y.length - 0.5, -0.5]);
    layout.annotations = (fig.layout.annotations || []).concat(axisTitles(fig.layout));
    return { data: [Object.assign({}, heat, { visible: false }), trace], layout: layout };
  }

  /** Draw the matrix model ``fig`` (from ``template``): its cells on the page's canvas, the rest by Plotly. */
  function renderMatrix(fig, template, config) {
    const host = document.getElementById("attn-matrix");
    if (!host || !window.Plotly) { return false; }
    const heat = fig.data[0];
    const [lo, hi] = colourRange(heat.z);
    const frame = matrixFrame(fig, template, lo, hi);
    if (!renderGraph("attn-matrix", frame, Object.assign({}, config, matrixButtons()))) { return false; }
    if (!host.__cells || host.__cells.z !== heat.z || host.__cells.lo !== lo || host.__cells.hi !== hi) {
      const tk = heat.x.length, tq = heat.y.length;
      const image = host.__cells && host.__cells.image.width === tk && host.__cells.image.height === tq
        ? host.__cells.image : Object.assign(document.createElement("canvas"), { width: tk, height: tq });
      image.getContext("2d").putImageData(new ImageData(cellColours(heat.z, tk, heat.colorscale, lo, hi), tk, tq), 0, 0);
      host.__cells = { z: heat.z, lo: lo, hi: hi, image: image };
    }
    host.__figure = fig;  // what the view shows: the model (the canvas's array, title, outline)
    hookMatrix(host);
    paintCells(host);
    requestAnimationFrame(() => host.dispatchEvent(new CustomEvent("attnviz:drawn", { bubbles: true })));
    return true;
  }

  /** The matrix shows a message (a Plotly figure of its own): no cells, no model. */
  function clearCells(host) {
    if (!host) { return; }
    host.__cells = null;
    host.__figure = null;
    const canvas = host.__gd && host.__gd.querySelector("canvas.attnviz-cells");
    if (canvas) { canvas.remove(); }
  }

  /** The cells' canvas under the frame's plot area, showing the axes' current ranges (zoom, pan). */
  function paintCells(host) {
    const gd = host.__gd, cells = host.__cells;
    const fl = gd && gd._fullLayout;
    const container = gd && gd.querySelector(".svg-container");
    if (!cells || !fl || !fl._size || !container || !fl.xaxis || !fl.yaxis) { return; }
    let canvas = container.querySelector("canvas.attnviz-cells");
    if (!canvas) {
      canvas = document.createElement("canvas");
      canvas.className = "attnviz-cells";
      Object.assign(canvas.style, { position: "absolute", pointerEvents: "none" });
      container.insertBefore(canvas, container.firstChild);
    }
    const size = fl._size, dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(size.w * dpr)), h = Math.max(1, Math.round(size.h * dpr));
    Object.assign(canvas.style, { left: size.l + "px", top: size.t + "px", width: size.w + "px",
      height: size.h + "px" });
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.clearRect(0, 0, w, h);
    const xr = fl.xaxis.range, yr = fl.yaxis.range;
    const x0 = Math.min(xr[0], xr[1]) + 0.5, y0 = Math.min(yr[0], yr[1]) + 0.5;
    ctx.drawImage(cells.image, x0, y0, Math.abs(xr[1] - xr[0]), Math.abs(yr[1] - yr[0]), 0, 0, w, h);
  }

  /** The cell under a point of the page: [query i, key j], or null. */
  function matrixCellAt(host, clientX, clientY) {
    const gd = host.__gd, fig = host.__figure;
    const fl = gd && gd._fullLayout;
    if (!fig || !fl || !fl.xaxis || !fl.yaxis) { return null; }
    const r = gd.querySelector(".svg-container").getBoundingClientRect();
    const px = clientX - r.left - fl._size.l, py = clientY - r.top - fl._size.t;
    if (px < 0 || py < 0 || px > fl._size.w || py > fl._size.h) { return null; }
    const j = Math.round(fl.xaxis.p2l(px)), i = Math.round(fl.yaxis.p2l(py));
    const heat = fig.data[0];
    return i >= 0 && i < heat.y.length && j >= 0 && j < heat.x.length ? [i, j] : null;
  }

  /** The model's hovertemplate filled for cell (i, j) (plotly's ``%{z:.4f}``, the raw tokens' ``%{text}`` and
   * ``%{customdata}``), as Plotly's hover label text. */
  function matrixHoverText(heat, i, j) {
    const z = heat.z[i][j];
    const fields = { x: heat.x[j], y: heat.y[i], text: heat.text ? heat.text[i][j] : "",
      customdata: heat.customdata ? heat.customdata[i][j] : "" };
    return String(heat.hovertemplate || "").replace(/<extra>.*?<\/extra>/, "")
      .replace(/%\{z:\.(\d)f\}/g, (m, n) => (z === z ? z.toFixed(Number(n)) : "NaN"))
      .replace(/%\{(x|y|text|customdata)\}/g, (m, k) => String(fields[k]));
  }

  /** Hover, zoom and pan of the frame follow the cells (hooked once per graph). */
  function hookMatrix(host) {
    const gd = host.__gd;
    if (!gd || gd.__cellsHooked || !gd.on) { return; }
    gd.__cellsHooked = true;
    const repaint = () => paintCells(host);
    gd.on("plotly_afterplot", repaint);
    gd.on("plotly_relayout", repaint);
    gd.on("plotly_relayouting", repaint);
    let shown = null;
    const hide = () => {
      if (shown !== null && gd._fullLayout) { window.Plotly.Fx.loneUnhover(gd._fullLayout._hoverlayer.node()); }
      shown = null;
    };
    gd.addEventListener("mousemove", (e) => {
      const cell = e.buttons ? null : matrixCellAt(host, e.clientX, e.clientY);
      if (!cell) { hide(); return; }
      const key = cell.join(",");
      if (key === shown) { return; }
      hide();
      const fl = gd._fullLayout, heat = host.__figure.data[0];
      const x = fl._size.l + fl.xaxis.l2p(cell[1]), y = fl._size.t + fl.yaxis.l2p(cell[0]);
      window.Plotly.Fx.loneHover({ x: x, y: y, text: matrixHoverText(heat, cell[0], cell[1]),
        color: "#444444", fontSize: 12 }, { container: fl._hoverlayer.node(), outerContainer: fl._paper.node(),
        gd: gd });
      shown = key;
    });
    gd.addEventListener("mouseleave", hide);
  }

  /** The matrix's modebar: its camera button saves the model (Plotly's own would save the frame only). */
  let cameraButton = null;
  function matrixButtons() {
    if (cameraButton === null) {
      cameraButton = { name: "attnviz-save-matrix", title: "Download plot as a png",
        icon: window.Plotly.Icons.camera, click: (gd) => {
          const opts = (gd._context && gd._context.toImageButtonOptions) || {};
          saveMatrix(opts.format || "png", opts.filename || "matrix", opts.scale);
        } };
    }
    return { modeBarButtonsToRemove: ["lasso2d", "select2d", "toImage"], modeBarButtonsToAdd: [cameraButton] };
  }

  /** The matrix as an image file (Plotly renders the model, heatmap and all, off the page); the file name. */
  function saveMatrix(format, filename, scale) {
    const host = document.getElementById("attn-matrix");
    const gd = host && host.__gd;
    const fig = host && host.__figure;
    if (!gd || !gd._fullLayout || !window.Plotly) { return null; }
    const figure = fig ? { data: fig.data, layout: fig.layout } : gd;  // a message: the graph as it is
    window.Plotly.downloadImage(figure, { format: format, filename: filename, width: gd._fullLayout.width,
      height: gd._fullLayout.height, scale: scale || 1 });
    return filename;
  }

  function configFor(payload, state, view) {
    return withFilename(payload.templates.matrix_config, exampleStem(state, view));
  }

  /** Draw the first screen's views (matrix, head view) for ``state`` where they show something else. */
  function paintMain(state, payload, d, pin) {
    const sig = signatures(d, state, pin, payload);
    // the head view first: its canvas reads the box's size, which is cheap before Plotly has changed the page
    const headEl = document.getElementById("head-view");
    if (!isDrawn("head", sig.head) && headEl && window.Plotly) {
      renderHeadView(headEl, headViewFigure(payload, d, state, pin));
      markDrawn("head", sig.head);
    }
    if (!isDrawn("matrix", sig.matrix) && paintMatrix(payload, d, state)) {
      markDrawn("matrix", sig.matrix);
    }
  }

  /** The matrix of ``state``: its cells on the page's canvas under a Plotly frame, or a message. */
  function paintMatrix(payload, d, state) {
    const fig = matrixFigure(payload, d, state);
    const config = configFor(payload, state, "matrix");
    if (fig.layout.meta && fig.layout.meta.message !== undefined) {
      clearCells(document.getElementById("attn-matrix"));
      return renderGraph("attn-matrix", fig, config);
    }
    return renderMatrix(fig, payload.templates.matrix[barOf(state)], config);
  }

  /** Draw the views below the first screen that are behind and on the screen (or in ``arrived``). */
  function paintBelow(state, payload, d, arrived) {
    const sig = signatures(d, state, null, payload);
    const shown = (id) => (arrived || []).indexOf(id) >= 0 || onScreen(id);
    if (!isDrawn("model", sig.model) && shown("model-view")) {
      const mv = modelViewOf(payload);
      viewBusy("model-view", !mv);
      if (mv && renderGraph("model-view", modelViewFigure(payload, mv, state),
        configFor(payload, state, "modelview"))) {
        markDrawn("model", sig.model);
      }
    }
    if (!isDrawn("step", sig.step) && (shown("timestep-bars") || shown("timestep-layers"))) {
      const figs = timestepFigures(payload, d, state);
      if (figs && renderGraph("timestep-bars", figs[0], configFor(payload, state, "timestep"))
          && renderGraph("timestep-layers", figs[1], configFor(payload, state, "timestep_layers"))) {
        markDrawn("step", sig.step);
      }
    }
  }

  // ---------------------------------------------------------------------------------------------------
  // The example's data: fetched as raw bytes from the server (dashboard/example/transport.py), kept for a few
  // selections, the neighbours (next / previous example, adjacent layers of a long one) fetched in advance.
  // ---------------------------------------------------------------------------------------------------
  const DATA_URL = "/_attnviz/example";
  const KEPT_MAX = 12;  // payloads kept in the page (T = 512, one layer: ~6 MB each)
  const BUSY_MS = 300;  // a wait longer than this shows a spinner over the views
  const kept = new Map();  // key text -> {payload (null until it comes), failed}
  let wanted = null;  // {state, pin}: what the views should show (drawn as soon as its data is here)
  let busyTimer = null;

  /** The page's ``?store=``, read once per page load (as app.py's request hook does: a URL the page writes
   * later keeps it). */
  function pageStore() {
    if (window.attnvizStore === undefined) {
      window.attnvizStore = new URLSearchParams(window.location.search).get("store") || null;
    }
    return window.attnvizStore;
  }

  function fetchBytes(params) {
    const q = new URLSearchParams();
    for (const k of Object.keys(params)) {
      if (params[k] !== null && params[k] !== undefined) { q.append(k, String(params[k])); }
    }
    const store = pageStore();
    if (store) { q.append("store", store); }
    return fetch(DATA_URL + "?" + q.toString(), { credentials: "same-origin" }).then((r) => {
      if (!r.ok) { return r.text().then((t) => { throw new Error(t.trim() || "the server answered " + r.status); }); }
      return r.arrayBuffer();
    }).then(unpack);
  }

  function keep(text, entry) {
    kept.delete(text);
    kept.set(text, entry);
    const shown = current.payload;
    for (const [t, e] of kept) {
      if (kept.size <= KEPT_MAX) { break; }
      if (e.payload !== shown && (!wanted || t !== keyText(keyOf(wanted.state)))) { kept.delete(t); }
    }
  }

  /** The model view of the payload's example: carried by it (the Dash callback's payload), or asked for on its
   * own (``part=model_view``: the first screen never waits for it); null until it comes, ``{error}`` if it
   * cannot be drawn. */
  function modelViewOf(p) {
    if (p.model_view) { return p.model_view; }
    const key = { run: p.run, example: p.example, kind: p.kind, attn: "raw", detail: "all", part: "model_view" };
    const entry = request(key, "model_view" + JSON.stringify([p.run, p.example, p.kind]));
    if (!entry.payload) { return null; }
    return entry.payload.error ? { error: entry.payload.error } : entry.payload.model_view;
  }

  const busyTimers = {};
  /** A view below the first screen that waits for its data says so as the first screen's do (see ``busy``). */
  function viewBusy(id, on) {
    const el = document.getElementById(id);
    if (!el) { return; }
    clearTimeout(busyTimers[id]);
    el.setAttribute("data-attnviz-loading", on ? "true" : "false");
    if (on) { busyTimers[id] = setTimeout(() => el.classList.add("attnviz-busy"), BUSY_MS); }
    else { el.classList.remove("attnviz-busy"); }
  }

  function rowsText(key, step) { return "rows" + keyText(key) + step; }

  /** The entry for ``params`` (a key, or a search / ``detail=auto`` question) kept under ``text``; fetched when
   * there is none. A payload that comes is also kept under its own key and redraws the views if they wait. */
  function request(params, text) {
    const have = kept.get(text);
    if (have && !(have.failed && Date.now() - have.at > 2000)) { keep(text, have); return have; }
    const entry = { payload: null, failed: false, at: Date.now() };
    fetchBytes(params).then((p) => {
      entry.payload = p;
      if (p.key && !params.part) { keep(keyText(p.key), entry); }
    }, (err) => {
      entry.failed = true;
      entry.payload = { key: params, error: "cannot read this example: " + String(err.message || err).split("\n")[0] };
    }).then(arrived);
    keep(text, entry);
    return entry;
  }

  /** The entry of a key: fetched for it, or for a neighbour's question that the server answered with it. */
  function entryOf(key, step) {
    const have = kept.get(keyText(key));
    if (have) { keep(keyText(key), have); return have; }
    return request(Object.assign({}, key, { step: step }), keyText(key));
  }

  /** The data of the example next to ``state`` (``example``) or of its layer ``layer``, in advance. */
  function prefetch(state, payload) {
    const later = window.requestIdleCallback || ((f) => setTimeout(f, 30));
    later(() => {
      if (payload.detail === "layer") {
        for (const l of [state.layer + 1, state.layer - 1]) {
          if (l >= 0 && l < payload.n_layers) { entryOf(Object.assign(keyOf(state), { layer: l }), state.step); }
        }
      }
      const last = exampleMax();
      for (const e of [state.example + 1, state.example - 1]) {
        if (e >= 0 && (last === null || e <= last)) { neighbour(state, e); }
      }
    });
  }

  /** The entry of example ``e`` beside ``state``: kept already (under the detail level ``state`` has), or asked
   * for with the detail level left to the server (``auto``). */
  function neighbour(state, e) {
    const guess = kept.get(keyText(keyOf(Object.assign({}, state, { example: e }))));
    if (guess) { return guess; }
    const q = { run: state.run, example: e, kind: state.kind, attn: state.attn, layer: state.layer, step: 0,
      detail: "auto" };
    return request(q, "auto" + keyText(Object.assign({}, q, { detail: "layer" })));
  }

  function exampleMax() {
    const el = document.getElementById("example-index");
    const v = el ? parseInt(el.getAttribute("max"), 10) : NaN;
    return isNaN(v) ? null : v;
  }

  /** The payload for ``state`` if the page has it: fetched for its key, or a neighbour fetched in advance. */
  function ready(state) {
    const key = keyOf(state);
    let entry = kept.get(keyText(key));
    if (!entry) {
      const auto = kept.get("auto" + keyText(Object.assign({}, key, { detail: "layer", layer: state.layer })));
      if (auto && auto.payload && sameKey(auto.payload.key, key)) { entry = auto; }
    }
    return entry && entry.payload ? entry.payload : null;
  }

  /** Views that wait for data say so: ``data-attnviz-loading`` at once (the bench and tests read it), a spinner
   * after :data:`BUSY_MS`. */
  function busy(on) {
    const boxes = ["attn-matrix", "head-view"].map((id) => document.getElementById(id)).filter(Boolean);
    clearTimeout(busyTimer);
    for (const el of boxes) {
      el.setAttribute("data-attnviz-loading", on ? "true" : "false");
      if (!on) { el.classList.remove("attnviz-busy"); }
    }
    if (on) { busyTimer = setTimeout(() => boxes.forEach((el) => el.classList.add("attnviz-busy")), BUSY_MS); }
  }

  /** Show ``state`` (with the pinned token ``pin``): drawn now if its data is here, else when it comes. */
  function show(state, pin) {
    wanted = { state: state, pin: pin };
    let payload = ready(state);
    if (!payload && early && !early.payload && !current.state) { busy(true); return; }  // the URL's data is coming
    if (!payload) {
      const entry = entryOf(keyOf(state), state.step);
      payload = entry.payload;
    }
    if (!payload) { busy(true); return; }
    busy(false);
    paint(state, payload, pin);
  }

  function arrived() {
    if (wanted) { show(wanted.state, wanted.pin); }
    else if (early) { paintEarly(); }
  }

  function paint(state, payload, pin) {
    watchVisibility();
    const d = arrays(payload);
    paintNote(payload, state);
    if (payload.error) {
      current.state = null;
      current.payload = payload;
      paintMessage(payload, d);
      return;
    }
    delete drawn.error;
    Object.assign(current, { state: state, payload: payload, pin: pin });
    paintMain(state, payload, d, pin);
    paintBelow(state, payload, d, []);
    prefetch(state, payload);
  }

  // First load: the page asks for the data of its URL before Dash has started (the server resolves the URL as
  // the sync callback does), and draws it as soon as the views' boxes and Plotly are there.
  let early = null;
  function startEarly() {
    const search = window.location.search;
    const tab = new URLSearchParams(search).get("tab");
    if (tab && tab !== "example") { return; }
    early = request({ search: search }, "search" + search);
  }

  function paintEarly() {
    if (wanted || !early || !early.payload || early.payload.error || !early.payload.state) { return; }
    if (!document.getElementById("attn-matrix") || !window.Plotly) {
      if (Date.now() - early.at < 30000) { setTimeout(paintEarly, 16); }
      return;
    }
    const p = early.payload;
    const st = Object.assign({}, p.state, { detail: p.detail, steps: p.tq, redraw: 0 });
    paint(st, p, null);
  }

  const NOTE_BOX = "example-attention-note";

  /** The line over the views for an example whose raw attention the run did not keep (``--attention``): a link
   * to the nearest example that has it (followed in the page; a new tab with the browser's own keys) and one to
   * the Playground running this example again (a new tab), both at the layer and head ``state`` shows. Empty for
   * every other example. */
  function paintNote(payload, state) {
    const el = document.getElementById(NOTE_BOX);
    if (!el) { return; }
    el.textContent = "";
    if (!payload || !payload.error || (!payload.nearest_href && !payload.recompute_href)) { return; }
    const links = [];
    if (payload.nearest_href) {
      const href = state ? window.location.pathname
        + formatUrl(Object.assign({}, state, { example: payload.nearest, step: 0 }), "example") : payload.nearest_href;
      links.push(link(href, "open example " + payload.nearest + ", the nearest with attention", "attnviz-nearest"));
      links[0].addEventListener("click", followInPage);
    }
    if (payload.recompute_href) {
      const a = link(withView(payload.recompute_href, state), "recompute this example in the Playground ↗",
        "attnviz-recompute");
      a.target = "_blank";
      a.rel = "noopener";
      links.push(a);
    }
    el.append("No raw attention stored for this example: ");
    links.forEach((a, i) => { if (i) { el.append(" · "); } el.append(a); });
  }

  /** The Playground link ``href`` showing ``state``'s layer and head. */
  function withView(href, state) {
    if (!state) { return href; }
    const at = href.indexOf("#");
    const entries = new URLSearchParams(at < 0 ? "" : href.slice(at + 1));
    entries.set("pg.layer", String(state.layer));
    entries.set("pg.head", urlValue("head", state, null));
    return (at < 0 ? href : href.slice(0, at)) + "#" + entries.toString();
  }

  function link(href, text, className) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    a.className = className;
    return a;
  }

  /** A plain click on an in-app link changes the URL in the page, as dcc.Link does (Dash's Location hears it). */
  function followInPage(event) {
    if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) { return; }
    event.preventDefault();
    window.history.pushState({}, "", event.currentTarget.getAttribute("href"));
    window.dispatchEvent(new CustomEvent("_dashprivate_pushstate"));
  }

  /** Every view shows the message (an example out of range, a kind the run lacks, a store error). */
  function paintMessage(payload, d) {
    const key = "error|" + d.id;
    if (isDrawn("error", key)) { return; }
    drawn = {};
    markDrawn("error", key);
    const msg = () => messageFigure(payload, payload.error);
    clearCells(document.getElementById("attn-matrix"));
    for (const id of ["attn-matrix"].concat(LAZY)) { renderGraph(id, msg(), { displaylogo: false }); }
    const headEl = document.getElementById("head-view");
    if (headEl) { renderHeadView(headEl, msg()); }
  }

  /**
   * Draw the attention views for the view state (matrix and head view always, the views below the first screen
   * when on the screen; from the data the page holds, or when it comes) and return the pinned token. A view
   * whose inputs did not change is left as it is. A click on a head-view token pins it (again: unpins); another
   * example, run or kind clears the pin. When the Example tab is shown again its views are new, empty elements:
   * they are drawn as soon as they are in the page.
   */
  ns.draw = function (state, click, tab, pinned) {
    const pin = nextPin(triggered().indexOf(HEAD_VIEW_CLICK + ".data") >= 0, click, state, pinned);
    const out = pin !== pinned ? pin : noUpdate();
    if (!state) { return out; }
    show(state, pin);
    if (tab === "example" && !document.getElementById(VIEW_BOX.matrix)) {
      whenInPage(VIEW_BOX.matrix, () => { if (wanted) { show(wanted.state, wanted.pin); } });
    }
    return out;
  };

  /** Run ``then`` once the element ``id`` is in the page (looked for at each frame, for up to 5 s). */
  function whenInPage(id, then, since) {
    const start = since || Date.now();
    if (document.getElementById(id)) { then(); return; }
    if (Date.now() - start < 5000) { requestAnimationFrame(() => whenInPage(id, then, start)); }
  }

  /** The selection the page shows or waits for (the base of a change made in the page). */
  function base() { return wanted ? wanted.state : current.state; }
  function basePin() { return wanted ? wanted.pin : current.pin; }

  /** A model-view cell click selects its layer and head: drawn at once, then the selects tell Dash. */
  function onModelViewClick(event) {
    const point = event && event.points && event.points[0];
    if (!point || !base()) { return; }
    const y = String(point.y), x = String(point.x);
    const l = parseInt(y.slice(1), 10), h = parseInt(x.slice(1), 10);
    if (y.charAt(0) !== "L" || x.charAt(0) !== "H" || isNaN(l) || isNaN(h)) { return; }
    const next = Object.assign({}, base(), { layer: l, head: h });
    delete next.owns;
    show(next, basePin());
    window.dash_clientside.set_props(MODEL_VIEW_CLICK, { data: { layer: l, head: h, at: Date.now() } });
  }

  /**
   * A control's own DOM event (layer, head, query position, raw / rollout, next / previous example) or a
   * head-view token click draws the first screen at once from the data the page holds (or as soon as it comes);
   * the same change then reaches Dash (``ns.controls``, ``ns.draw``, the sync callback), which finds those views
   * drawn and updates the URL and the views below.
   */
  function onControl(event) {
    const st = base();
    const target = event.target;
    if (!st || !target || !target.closest) { return; }
    const next = Object.assign({}, st);
    delete next.owns;
    const id = target.id;
    let pin = basePin();
    if (id === "layer-select" && event.type === "change") {
      const l = parseInt(target.value, 10);
      if (isNaN(l)) { return; }
      next.layer = l;
    } else if (id === "head-select" && event.type === "change") {
      if (target.value === "mean") { next.head = null; }
      else if (!isNaN(parseInt(target.value, 10))) { next.head = parseInt(target.value, 10); } else { return; }
    } else if (id === "step-input" && event.type === "input") {
      const v = parseInt(target.value, 10);
      if (isNaN(v)) { return; }
      next.step = Math.min(Math.max(v, 0), Math.max(0, (st.steps || 1) - 1));
    } else if (target.closest("#attn-mode") && event.type === "change") {
      if (ATTN_MODES.indexOf(target.value) < 0) { return; }
      next.attn = target.value;
    } else if (event.type === "click" && (target.closest("#example-next") || target.closest("#example-prev"))) {
      const last = exampleMax();
      next.example = target.closest("#example-next") ? st.example + 1 : st.example - 1;
      if (next.example < 0 || (last !== null && next.example > last)) { return; }
      const p = neighbour(st, next.example).payload;
      if (!p || p.error || !p.key) { return; }  // the server's answer draws it (see ns.draw)
      Object.assign(next, { detail: p.detail, steps: p.tq, step: Math.min(st.step, Math.max(0, p.tq - 1)) });
      pin = null;
    } else { return; }
    show(next, pin);
  }

  /** A head-view token click: the pin drawn at once (see onControl), then told to Dash. */
  function onHeadViewClick(hit) {
    if (base()) { show(base(), nextPin(true, hit, base(), basePin())); }
    if (window.dash_clientside.set_props) {
      window.dash_clientside.set_props(HEAD_VIEW_CLICK, { data: { side: hit.side, index: hit.index, at: Date.now() } });
    }
  }

  document.addEventListener("change", onControl);
  document.addEventListener("input", onControl);
  document.addEventListener("click", onControl, true);
  startEarly();

  // ---------------------------------------------------------------------------------------------------
  // State: controls, pin, URL, data key, panels
  // ---------------------------------------------------------------------------------------------------

  /** Layer, head, query position, raw/rollout and a model-view click ({layer, head}) change the view state here,
   * without the server: [view state, layer select value, head select value, step input value]. */
  ns.controls = function (layer, head, step, attn, click, state) {
    const out = [noUpdate(), noUpdate(), noUpdate(), noUpdate()];
    if (!state) { return out; }
    const next = Object.assign({}, state);
    delete next.owns;
    const trig = triggered();
    if (trig.indexOf("view-state.data") >= 0) {
      // the server's answer (sync.py): keep the page's own value of the fields it does not set, which may have
      // changed while it was answering
      if (!state.owns) { return out; }
      const owns = state.owns;
      if (owns.indexOf("layer") < 0 && !isNaN(parseInt(layer, 10))) { next.layer = parseInt(layer, 10); }
      if (owns.indexOf("head") < 0) {
        if (head === "mean") { next.head = null; } else if (!isNaN(parseInt(head, 10))) { next.head = parseInt(head, 10); }
      }
      if (owns.indexOf("attn") < 0 && ATTN_MODES.indexOf(attn) >= 0) { next.attn = attn; }
      if (owns.indexOf("step") < 0 && step !== null && step !== undefined && !isNaN(parseInt(step, 10))) {
        next.step = parseInt(step, 10);
      }
      const last = Math.max(0, (state.steps || 1) - 1);
      if (next.step > last) { next.step = last; out[3] = last; }
      const answered = Object.assign({}, state);
      delete answered.owns;
      out[0] = sameState(next, answered) ? noUpdate() : next;
      return out;
    }
    if (trig.indexOf(MODEL_VIEW_CLICK + ".data") >= 0 && click) {
      next.layer = click.layer; next.head = click.head;
      out[1] = String(click.layer); out[2] = String(click.head);
    } else {
      const l = parseInt(layer, 10);
      if (!isNaN(l)) { next.layer = l; }
      if (head === "mean") { next.head = null; } else if (!isNaN(parseInt(head, 10))) { next.head = parseInt(head, 10); }
      if (step !== null && step !== undefined && step !== "" && !isNaN(parseInt(step, 10))) {
        const last = Math.max(0, (state.steps || 1) - 1);
        next.step = Math.min(Math.max(parseInt(step, 10), 0), last);
        if (next.step !== parseInt(step, 10)) { out[3] = next.step; }
      }
      if (ATTN_MODES.indexOf(attn) >= 0) { next.attn = attn; }
    }
    if (!sameState(next, state)) { out[0] = next; }
    return out;
  };

  /** The head view's pinned token after a click ({side, index}: toggles) or a selection change (cleared on a new
   * example). */
  function nextPin(clicked, click, state, pin) {
    if (!state) { return null; }
    const key = [state.run, state.example, state.kind];
    const same = pin && pin.key && pin.key.length === 3 && pin.key.every((v, i) => v === key[i]);
    if (!clicked) { return same ? pin : null; }
    if (!click || (click.side !== "query" && click.side !== "key") || !(click.index >= 0)) { return pin; }
    if (same && pin.side === click.side && pin.index === click.index) { return null; }
    return { key: key, side: click.side, index: click.index };
  }

  /** The URL of the view state (and tab), when it shows something else. */
  function urlOf(state, tab) {
    if (!state || !tab) { return noUpdate(); }
    const search = formatUrl(state, tab);
    return search === window.location.search ? noUpdate() : search;
  }

  /** A URL the view state does not show yet (back/forward, a link, a page load): for the server to resolve. The
   * URL the page was opened at is resolved already when its layout was filled for it (``built``, see
   * dashboard/served_layout.py): not asked again, once. */
  let layoutUrlUsed = false;
  ns.urlRequest = function (search, state, tab, built) {
    const current = search === null || search === undefined ? window.location.search : search;
    if (state && urlShows(current, state, tab)) { layoutUrlUsed = true; return noUpdate(); }
    if (state && built && !layoutUrlUsed && built.search === current) { layoutUrlUsed = true; return noUpdate(); }
    layoutUrlUsed = true;
    return { search: current, at: Date.now() };
  };

  function pick(state, fields) {
    const out = {};
    for (const f of fields) { out[f] = state[f] === undefined ? null : state[f]; }
    return out;
  }

  /** ``state``'s ``fields`` when they changed from ``current`` (and ``open``), else no update. */
  function changed(state, fields, current, open) {
    if (!state || open === false) { return noUpdate(); }
    const next = pick(state, fields);
    return sameState(next, current) ? noUpdate() : next;
  }

  const SELECTION = ["run", "example", "kind", "layer", "head", "step", "attn"];

  /**
   * What follows from the view state, each only when it changed: [URL, run and example (the picker's text), and
   * the selection of each panel below the views while it is open (metrics, debugging, embeddings; closed panels
   * draw nothing)]. The example's data the page fetches itself (see ``show``).
   */
  ns.fanOut = function (state, tab, openItems, exampleId, metrics, debug, embeddings) {
    const open = (name) => (Array.isArray(openItems) ? openItems.indexOf(name) >= 0 : openItems === name);
    return [
      urlOf(state, tab),
      changed(state, ["run", "example"], exampleId),
      changed(state, SELECTION, metrics, open("metrics")),
      changed(state, SELECTION, debug, open("debug")),
      changed(state, ["run", "example", "kind"], embeddings, open("embeddings")),
    ];
  };

  /** Save PNG / Save SVG: the matrix as an image named after the selection; the format and name saved. */
  ns.save = function (nPng, nSvg, state) {
    const trig = triggered()[0];
    if (!trig || !state) { return noUpdate(); }
    const format = trig.indexOf("save-svg") === 0 ? "svg" : "png";
    const filename = saveMatrix(format, fileStem(state, state.attn === "rollout" ? "rollout" : ""));
    return filename === null ? "no graph" : format + ":" + filename;
  };

  // For the browser tests: the same helpers the callbacks use.
  /** A person's click on a head-view token label (scrolled into view first): the DOM event the canvas gets. */
  function clickHeadViewToken(side, index) {
    const box = (document.getElementById("head-view") || {}).__hv;
    if (!box) { return false; }
    const y = HV.pad + index * HV.row;
    if (y < box.scroll.scrollTop || y + HV.row > box.scroll.scrollTop + box.scroll.clientHeight) {
      box.scroll.scrollTop = Math.max(0, y - box.scroll.clientHeight / 2);
      paintHeadView(box);
    }
    const r = box.canvas.getBoundingClientRect();
    const cols = headViewColumns(r.width);
    const x = r.left + (side === "query" ? cols.q - 4 : cols.k + 4);
    const cy = r.top + y - box.scroll.scrollTop + HV.row / 2;
    box.canvas.dispatchEvent(new MouseEvent("click", { clientX: x, clientY: cy, bubbles: true }));
    return true;
  }

  ns._internal = { keyOf: keyOf, formatUrl: formatUrl, urlShows: urlShows, decodeSpec: decodeSpec,
    clickHeadViewToken: clickHeadViewToken, kept: kept };

  window.dash_clientside = Object.assign({}, window.dash_clientside, { attnviz_example: ns });
})();
