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

  function decodeSpec(spec) {
    if (!spec) { return null; }
    const text = atob(spec.bdata);
    const bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) { bytes[i] = text.charCodeAt(i); }
    if (spec.dtype === "f4") { return new Float32Array(bytes.buffer); }
    const raw = new Uint16Array(bytes.buffer);
    const table = half();
    const out = new Float32Array(raw.length);
    for (let i = 0; i < raw.length; i++) { out[i] = table[raw[i]]; }
    return out;
  }

  let cache = { payload: null, id: 0 };

  /** The payload's arrays, decoded once per payload. */
  function arrays(payload) {
    if (cache.payload !== payload) {
      cache = {
        payload: payload, id: cache.id + 1, attention: decodeSpec(payload.attention),
        stepRows: decodeSpec(payload.step_rows), rollout: decodeSpec(payload.rollout),
      };
    }
    return cache;
  }

  // ---------------------------------------------------------------------------------------------------
  // Selection helpers (the Python side: dashboard/example/payload.py and urlstate.py)
  // ---------------------------------------------------------------------------------------------------
  const KEY_FIELDS = ["run", "example", "kind", "attn"];
  const URL_FIELDS = ["tab", "run", "example", "layer", "head", "step", "kind", "attn"];

  /** What data a view state needs (payload.payload_key). */
  function keyOf(state) {
    const key = {};
    for (const f of KEY_FIELDS) { key[f] = state[f]; }
    key.detail = state.detail || "all";
    if (key.detail === "layer") { key.layer = state.layer; key.step = state.step; }
    return key;
  }

  function sameKey(a, b) {
    if (!a || !b) { return false; }
    const fields = KEY_FIELDS.concat(["detail", "layer", "step"]);
    return fields.every((f) => (a[f] === undefined ? null : a[f]) === (b[f] === undefined ? null : b[f]));
  }

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
    if (window.attnvizStore) { params.append("store", window.attnvizStore); }  // the page's store (app.py)
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

  /** [Tq*Tk] weights of one head (or the mean of the layer's heads); null when the layer was not sent. */
  function headWeights(p, d, layer, head) {
    const li = p.layers.indexOf(layer);
    if (li < 0) { return null; }
    const block = p.tq * p.tk;
    const base = li * p.n_heads * block;
    if (head === null) { return meanOf(d.attention, base, p.n_heads, block, block); }
    return d.attention.subarray(base + head * block, base + (head + 1) * block);
  }

  /** Every head of a layer: [H] arrays of [Tq*Tk]. */
  function layerHeads(p, d, layer) {
    const li = p.layers.indexOf(layer);
    const block = p.tq * p.tk;
    const base = li * p.n_heads * block;
    const out = [];
    for (let h = 0; h < p.n_heads; h++) { out.push(d.attention.subarray(base + h * block, base + (h + 1) * block)); }
    return out;
  }

  /** [L] rows over the keys of one query position (one head, or the mean of heads); the same arrays for the
   * same payload, step and head (a layer change then only moves the outline in the page). */
  function stepRows(p, d, step, head) {
    const memo = step + "|" + head;
    d.stepMemo = d.stepMemo || {};
    if (!d.stepMemo[memo]) { d.stepMemo = { [memo]: computeStepRows(p, d, step, head) }; }
    return d.stepMemo[memo];
  }

  function computeStepRows(p, d, step, head) {
    const rows = [];
    const tk = p.tk;
    for (let l = 0; l < p.n_layers; l++) {
      let a, base, stride;
      if (d.stepRows) { a = d.stepRows; base = l * p.n_heads * tk; stride = tk; }
      else { a = d.attention; base = l * p.n_heads * p.tq * tk + step * tk; stride = p.tq * tk; }
      rows.push(head === null ? meanOf(a, base, p.n_heads, tk, stride)
        : a.subarray(base + head * stride, base + head * stride + tk));
    }
    return rows;
  }

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

  function matrixFigure(p, d, st) {
    const t = p.templates;
    let w, title;
    if (st.attn === "rollout") {
      if (p.rollout_error) { return messageFigure(p, p.rollout_error); }
      if (!(st.layer >= 0 && st.layer < p.n_layers)) {
        return messageFigure(p, "layer " + st.layer + " is out of range (0.." + (p.n_layers - 1) + ")");
      }
      const block = p.tq * p.tk;
      w = d.rollout.subarray(st.layer * block, (st.layer + 1) * block);
      title = "Attention rollout through layer " + st.layer + " (mean of heads, with residual)";
    } else {
      w = headWeights(p, d, st.layer, st.head);
      title = "Layer " + st.layer + ", " + headLabel(st.head) + " — " + p.kind_label;
    }
    const fig = clone(t.matrix[st.attn === "rollout" ? "rollout" : "weight"]);
    fig.data[0].z = rowsOf(w, p.tq, p.tk);
    fig.layout.title.text = title;
    fig.layout.shapes = st.step >= 0 && st.step < p.tq
      ? [rect(t.select_colour, -0.5, p.tk - 0.5, st.step - 0.5, st.step + 0.5)] : [];
    return fig;
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

  function modelViewFigure(p, st) {
    // the same trace objects every time: Plotly.react then only moves the outline (no recalculation)
    const fig = { data: p.model_view.data, layout: clone(p.model_view.layout) };
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

  function withFilename(config, stem) {
    const out = Object.assign({}, config || {});
    out.toImageButtonOptions = Object.assign({}, out.toImageButtonOptions || {}, { filename: stem });
    return out;
  }

  // What each graph shows now, so that a change redraws only the views it affects.
  let drawn = {};

  /**
   * Draw the attention views for the view state from the payload: [matrix figure, matrix config, head view
   * figure, head view config, model view figure, model view config, step bars, step layers, pinned token]. A
   * view whose inputs did not change, or a payload that is not the one the state needs yet, leaves the graph as
   * it is. A click on a head-view token pins it (again: unpins); another example, run or kind clears the pin.
   */
  ns.draw = function (state, payload, click, pinned, matrixConfig, headConfig, modelConfig) {
    const out = new Array(9).fill(noUpdate());
    const pin = nextPin(triggered().indexOf("head-view.clickData") >= 0, click, state, pinned);
    if (pin !== pinned) { out[8] = pin; }
    if (!state || !payload || !sameKey(payload.key, keyOf(state))) { return out; }
    const d = arrays(payload);
    const sig = {
      matrix: [d.id, state.layer, state.head, state.step, state.attn, state.redraw].join("|"),
      head: [d.id, state.layer, state.head, JSON.stringify(validPinOrNull(pin, payload, state)), state.redraw]
        .join("|"),
      model: [d.id, state.layer, state.head, state.redraw].join("|"),
      step: [d.id, state.layer, state.head, state.step, state.redraw].join("|"),
    };
    if (payload.error) {
      const msg = messageFigure(payload, payload.error);
      const key = "error|" + d.id;
      if (drawn.error !== key) {
        drawn = { error: key };
        out[0] = msg; out[2] = msg; out[4] = msg; out[6] = msg; out[7] = msg;
      }
      return out;
    }
    // The modebar's image file names name the example and view, not the layer and head: a config change makes
    // Plotly draw the graph from scratch. Save PNG / Save SVG name the file after the whole selection (ns.save).
    const names = [exampleStem(state, "matrix"), exampleStem(state, "headview"), exampleStem(state, "modelview")];
    [matrixConfig, headConfig, modelConfig].forEach((config, n) => {
      const current = ((config || {}).toImageButtonOptions || {}).filename;
      if (current !== names[n]) { out[2 * n + 1] = withFilename(config, names[n]); }
    });
    if (drawn.matrix !== sig.matrix) { out[0] = matrixFigure(payload, d, state); }
    if (drawn.head !== sig.head) { out[2] = headViewFigure(payload, d, state, pin); }
    if (drawn.model !== sig.model) { out[4] = modelViewFigure(payload, state); }
    if (drawn.step !== sig.step) {
      const figs = timestepFigures(payload, d, state);
      out[6] = figs[0]; out[7] = figs[1];
    }
    drawn = sig;
    return out;
  };

  function validPinOrNull(pin, payload, state) {
    return payload.error ? null : validPin(pin, payload, state);
  }

  // ---------------------------------------------------------------------------------------------------
  // State: controls, pin, URL, data key, panels
  // ---------------------------------------------------------------------------------------------------

  /** Layer, head, query position, raw/rollout and a model-view click change the view state here, without the
   * server: [view state, layer select value, head select value, step input value]. */
  ns.controls = function (layer, head, step, attn, click, state) {
    const out = [noUpdate(), noUpdate(), noUpdate(), noUpdate()];
    if (!state) { return out; }
    const next = Object.assign({}, state);
    delete next.owns;
    const trig = triggered();
    const point = click && click.points && click.points[0];
    if (trig.indexOf("view-state.data") >= 0) {
      // the server's answer (sync.py): keep the page's own value of the fields it does not set, which may have
      // changed while it was answering
      if (!state.owns) { return out; }
      const owns = state.owns;
      if (owns.indexOf("layer") < 0 && !isNaN(parseInt(layer, 10))) { next.layer = parseInt(layer, 10); }
      if (owns.indexOf("head") < 0) {
        if (head === "mean") { next.head = null; } else if (!isNaN(parseInt(head, 10))) { next.head = parseInt(head, 10); }
      }
      if (owns.indexOf("attn") < 0 && (attn === "raw" || attn === "rollout")) { next.attn = attn; }
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
    if (trig.indexOf("model-view.clickData") >= 0 && point) {
      const y = String(point.y), x = String(point.x);
      const l = parseInt(y.slice(1), 10), h = parseInt(x.slice(1), 10);
      if (y.charAt(0) !== "L" || x.charAt(0) !== "H" || isNaN(l) || isNaN(h)) { return out; }
      next.layer = l; next.head = h;
      out[1] = String(l); out[2] = String(h);
    } else {
      const l = parseInt(layer, 10);
      if (!isNaN(l)) { next.layer = l; }
      if (head === "mean") { next.head = null; } else if (!isNaN(parseInt(head, 10))) { next.head = parseInt(head, 10); }
      if (step !== null && step !== undefined && step !== "" && !isNaN(parseInt(step, 10))) {
        const last = Math.max(0, (state.steps || 1) - 1);
        next.step = Math.min(Math.max(parseInt(step, 10), 0), last);
        if (next.step !== parseInt(step, 10)) { out[3] = next.step; }
      }
      if (attn === "raw" || attn === "rollout") { next.attn = attn; }
    }
    if (!sameState(next, state)) { out[0] = next; }
    return out;
  };

  /** The head view's pinned token after a click (toggles) or a selection change (cleared on a new example). */
  function nextPin(clicked, click, state, pin) {
    if (!state) { return null; }
    const key = [state.run, state.example, state.kind];
    const same = pin && pin.key && pin.key.length === 3 && pin.key.every((v, i) => v === key[i]);
    if (!clicked) { return same ? pin : null; }
    const point = ((click || {}).points || [])[0];
    if (!point || (point.curveNumber !== 0 && point.curveNumber !== 1)) { return pin; }
    const side = point.curveNumber === 0 ? "query" : "key";
    const index = parseInt(point.pointIndex !== undefined ? point.pointIndex : point.pointNumber || 0, 10);
    if (same && pin.side === side && pin.index === index) { return null; }
    return { key: key, side: side, index: index };
  }

  /** The URL of the view state (and tab), when it shows something else. */
  function urlOf(state, tab) {
    if (!state || !tab) { return noUpdate(); }
    const search = formatUrl(state, tab);
    return search === window.location.search ? noUpdate() : search;
  }

  /** A URL the view state does not show yet (page load, back/forward, a link): for the server to resolve. */
  ns.urlRequest = function (search, state, tab) {
    const current = search === null || search === undefined ? window.location.search : search;
    if (state && urlShows(current, state, tab)) { return noUpdate(); }
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
   * What follows from the view state, each only when it changed: [URL, payload key (the data the page needs:
   * the server is asked when it changes), run and example (the picker's text), and the selection of each panel
   * below the views while it is open (metrics, debugging, embeddings; closed panels draw nothing)].
   */
  ns.fanOut = function (state, tab, openItems, key, exampleId, metrics, debug, embeddings) {
    const open = (name) => (Array.isArray(openItems) ? openItems.indexOf(name) >= 0 : openItems === name);
    const nextKey = state ? keyOf(state) : null;
    return [
      urlOf(state, tab),
      !nextKey || sameKey(nextKey, key) ? noUpdate() : nextKey,
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
    const gd = document.querySelector("#attn-matrix .js-plotly-plot");
    if (!gd || !window.Plotly) { return "no graph"; }
    const filename = fileStem(state, state.attn === "rollout" ? "rollout" : "");
    window.Plotly.downloadImage(gd, { format: format, filename: filename, width: gd._fullLayout.width,
      height: gd._fullLayout.height });
    return format + ":" + filename;
  };

  // For the browser tests: the same helpers the callbacks use.
  ns._internal = { keyOf: keyOf, formatUrl: formatUrl, urlShows: urlShows, decodeSpec: decodeSpec };

  window.dash_clientside = Object.assign({}, window.dash_clientside, { attnviz_example: ns });
})();
