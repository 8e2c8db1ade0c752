/*
 * The Corpus tab's client-side callbacks (registered in dashboard/corpus/callbacks.py, _register_browser).
 *
 * The server stays the source of truth: for each selection (runs, kind, filter) and metric, the heatmaps, A - B,
 * per-layer profile and head table callbacks send, beside their own outputs, a "bundle" (a dcc.Store) of their
 * figures for every aggregate, built by the same Python views. This file keeps those bundles per
 * (selection, metric) and, when the metric or the aggregate changes, redraws those views from them without a
 * request; it asks the server (the corpus-need store) only for a metric it does not hold. It also moves the
 * picked head's outline on the layer x head maps (the same shapes as figures._selected_shape and
 * figures.similarity_shapes).
 */
(function () {
  "use strict";

  const VIEWS = ["heatmaps", "difference", "profile", "table"];
  const MAX_ENTRIES = 48;
  const cache = new Map(); // selection key + "|" + metric -> {view: bundle}
  const shown = {}; // view -> what it shows: "key|metric|agg" (agg-independent parts without the agg)

  function noUpdate() {
    return window.dash_clientside.no_update;
  }

  /* The same list as callbacks._key builds from the callback's arguments. */
  function corpusKey(runA, runB, kind, length, truncated, fieldValues, fieldIds) {
    const names = (fieldIds || []).map((i) => (i && i.field !== undefined ? i.field : null));
    const orNull = (v) => (v === undefined ? null : v);
    return JSON.stringify([orNull(runA), orNull(runB), orNull(kind), orNull(length), orNull(truncated),
                           fieldValues || [], names]);
  }

  function viewOf(propId) {
    const dot = propId.lastIndexOf(".");
    try {
      const id = JSON.parse(propId.slice(0, dot));
      return id && id.type === "corpus-bundle" ? id.of : null;
    } catch (e) {
      return null;
    }
  }

  function sameHead(a, b) {
    return (!a && !b) || (!!a && !!b && a.layer === b.layer && a.head === b.head);
  }

  /* Keep every bundle the stores hold; a bundle that just arrived was drawn by the server: note what it drew. */
  function ingest(bundles, bundleIds, arrived) {
    (bundles || []).forEach((b, i) => {
      if (!b || !b.key) { return; }
      const view = bundleIds[i].of;
      const k = JSON.stringify(b.key) + "|" + b.metric;
      let entry = cache.get(k);
      if (!entry) {
        entry = {};
        cache.set(k, entry);
        if (cache.size > MAX_ENTRIES) { cache.delete(cache.keys().next().value); }
      }
      entry[view] = b;
      if (arrived.includes(view)) {
        const base = JSON.stringify(b.key) + "|" + b.metric;
        shown[view] = {rows: base, state: base + "|" + b.agg, head: b.head || null};
      }
    });
  }

  /* The outline of head ``head`` on a map whose layout.meta says it takes one (null: the figure takes none). */
  function shapesFor(fig, head) {
    const meta = fig && fig.layout && fig.layout.meta;
    if (!meta || !meta.select) { return null; }
    const colour = meta.select_colour;
    if (!head) { return []; }
    const layer = head.layer;
    const h = head.head;
    if (meta.select === "grid") {
      const [nLayers, nHeads] = meta.grid;
      if (!(layer >= 0 && layer < nLayers && h >= 0 && h < nHeads)) { return []; }
      return [{type: "rect", xref: "x", yref: "y", x0: h - 0.5, x1: h + 0.5, y0: layer - 0.5, y1: layer + 0.5,
               line: {color: colour, width: 2.5}}];
    }
    if (meta.select === "similarity") {
      const names = (fig.data && fig.data[0] && fig.data[0].x) || [];
      const i = names.indexOf("L" + layer + "H" + h);
      if (i < 0) { return []; }
      return [{type: "line", xref: "x", yref: "y domain", x0: i, x1: i, y0: 0, y1: 1,
               line: {color: colour, width: 1}},
              {type: "line", xref: "x domain", yref: "y", x0: 0, x1: 1, y0: i, y1: i,
               line: {color: colour, width: 1}}];
    }
    return null;
  }

  function outlined(fig, head) {
    const shapes = shapesFor(fig, head);
    return shapes === null ? fig : Object.assign({}, fig, {layout: Object.assign({}, fig.layout, {shapes: shapes})});
  }

  window.dash_clientside = window.dash_clientside || {};
  window.dash_clientside.corpus = {
    /* corpus-need: ask the server for the bundled views of ``metric`` unless the browser holds them all. */
    need: function (metric, tab, runA, runB, kind, length, truncated, fieldValues, fieldIds) {
      if (tab !== "corpus" || !metric) { return noUpdate(); }
      const entry = cache.get(corpusKey(runA, runB, kind, length, truncated, fieldValues, fieldIds) + "|" + metric);
      if (entry && VIEWS.every((v) => entry[v])) { return noUpdate(); }
      return {metric: metric, at: Date.now()};
    },

    /* One callback (see callbacks._register_browser for why) with three jobs, by what triggered it:
       - metric, aggregate or a bundle that arrived: heatmaps A and B, A - B, the profile and the head table (rows,
         columns) of the selected metric and aggregate from the bundles; no update for what already shows them, or
         what the browser does not hold yet (``need`` asked the server, which draws it itself);
       - the picked head: its outline on every layer x head map that takes one (a patch of layout.shapes);
       - the views' error slots: the first distinct message (and how many others) in the tab's alert.
       Outputs: heatmap A, B, A - B, profile, patterns A, B, similarity A, B, table rows, columns, alert text, open. */
    draw: function (metric, agg, bundles, head, messages, bundleIds, heatA, heatB, diffFig, patA, patB, simA, simB,
                    runA, runB, kind, length, truncated, fieldValues, fieldIds) {
      const ctx = window.dash_clientside.callback_context;
      const props = ((ctx && ctx.triggered) || []).map((t) => t.prop_id || "");
      const arrived = props.map(viewOf).filter((v) => v);
      const out = Array(12).fill(noUpdate());
      ingest(bundles, bundleIds, arrived);

      if (props.some((p) => p.indexOf("corpus-error") >= 0)) {
        const seen = [];
        for (const m of messages || []) { if (m && !seen.includes(m)) { seen.push(m); } }
        const more = seen.length > 1 ? " (and " + (seen.length - 1) + " more)" : "";
        out[10] = seen.length ? seen[0] + more : "";
        out[11] = seen.length > 0;
      }

      const base = corpusKey(runA, runB, kind, length, truncated, fieldValues, fieldIds) + "|" + metric;
      const entry = cache.get(base);
      const state = base + "|" + agg;
      const current = (view) => shown[view] || {};
      const headShown = (view) => sameHead(current(view).head, head);
      if (entry) {
        const hm = entry.heatmaps;
        if (hm && hm.views[agg] && (current("heatmaps").state !== state || !headShown("heatmaps"))) {
          out[0] = outlined(hm.views[agg][0], head);
          out[1] = outlined(hm.views[agg][1], head);
          shown.heatmaps = {rows: base, state: state, head: head || null};
        }
        const diff = entry.difference;
        if (diff && diff.views[agg] && (current("difference").state !== state || !headShown("difference"))) {
          out[2] = outlined(diff.views[agg], head);
          shown.difference = {rows: base, state: state, head: head || null};
        }
        const profile = entry.profile;
        if (profile && current("profile").rows !== base) {
          out[3] = profile.views;
          shown.profile = {rows: base, state: state, head: null};
        }
        const table = entry.table;
        if (table && table.views.columns[agg]) {
          if (current("table").rows !== base) { out[8] = table.views.rows; }
          if (current("table").state !== state) { out[9] = table.views.columns[agg]; }
          shown.table = {rows: base, state: state, head: null};
        }
      }

      if (props.some((p) => p.indexOf("corpus-head.") === 0)) {
        const figures = [heatA, heatB, diffFig, null, patA, patB, simA, simB];
        figures.forEach((fig, i) => {
          if (!fig || out[i] !== noUpdate()) { return; } // not shown, or just redrawn with the outline
          const shapes = shapesFor(fig, head);
          if (shapes !== null) {
            out[i] = new window.dash_clientside.Patch().assign(["layout", "shapes"], shapes).build();
          }
        });
        ["heatmaps", "difference"].forEach((v) => { if (shown[v]) { shown[v].head = head || null; } });
      }
      return out;
    },
  };
})();
