/*
 * The Corpus tab's and the Playground's state in the URL fragment (#corpus.…&pg.…), written here from their
 * controls (registered in dashboard/corpus/callbacks.py and dashboard/playground/callbacks.py) and read back by
 * the server when a page opens (dashboard/urlstate.py: corpus_wish, playground_wish; the keys are listed there).
 *
 * The query string is the Example tab's (example.js rewrites it whole), and dcc.Location keeps the fragment when
 * it does. Each writer replaces only its own entries (history.replaceState: a change of these controls adds no
 * history entry), keeps the other tab's, and returns the new fragment as the Location's `hash`, which then equals
 * the address bar's, so the Location neither pushes it again nor drops it on its next change of the query string.
 */
(function () {
  "use strict";

  const CORPUS = "corpus.";
  const PLAYGROUND = "pg.";

  function noUpdate() {
    return window.dash_clientside.no_update;
  }

  function rank(key) {
    return key.indexOf(CORPUS) === 0 ? 0 : key.indexOf(PLAYGROUND) === 0 ? 1 : 2;
  }

  /* The fragment with the entries of ``prefix`` replaced by ``pairs`` ([key without prefix, value]); Corpus
     entries first, then the Playground's, then any other, each group in its own order. */
  function merged(prefix, pairs) {
    const params = new URLSearchParams((window.location.hash || "").replace(/^#/, ""));
    const all = [];
    params.forEach((value, key) => { if (key.indexOf(prefix) !== 0) { all.push([key, value]); } });
    pairs.forEach(([key, value]) => all.push([prefix + key, value]));
    const ordered = all.map((pair, i) => [pair, i]).sort((a, b) => rank(a[0][0]) - rank(b[0][0]) || a[1] - b[1]);
    const out = new URLSearchParams();
    ordered.forEach(([[key, value]]) => out.append(key, value));
    const text = out.toString();
    return text ? "#" + text : "";
  }

  /* Put ``hash`` in the address bar without a history entry; the Location's new `hash` (no update if same). */
  function write(hash) {
    if (hash === (window.location.hash || "")) { return noUpdate(); }
    const url = window.location.pathname + window.location.search + hash;
    window.history.replaceState(window.history.state, "", url || "/");
    return hash;
  }

  function text(value) {
    return value === null || value === undefined ? "" : String(value);
  }

  function add(pairs, key, value) {
    const v = text(value);
    if (v !== "") { pairs.push([key, v]); }
  }

  window.dash_clientside = window.dash_clientside || {};
  window.dash_clientside.attnviz_state = {
    /* The Corpus tab's controls -> corpus.* entries (only while the tab shows: its controls are set by the
       server before, from the fragment itself). */
    corpus: function (runB, kind, metric, agg, length, truncated, fieldValues, head, tab, lengthMin, lengthMax,
                      fieldIds) {
      if (tab !== "corpus") { return noUpdate(); }
      const pairs = [];
      add(pairs, "b", runB);
      add(pairs, "kind", kind);
      add(pairs, "metric", metric);
      add(pairs, "agg", agg);
      if (Array.isArray(length) && length.length === 2 && lengthMin !== null && lengthMax !== null &&
          (length[0] > lengthMin || length[1] < lengthMax)) {
        pairs.push(["length", length[0] + "-" + length[1]]);
      }
      if (truncated === "yes" || truncated === "no") { pairs.push(["truncated", truncated]); }
      (fieldIds || []).forEach((id, i) => {
        const values = (fieldValues || [])[i];
        (Array.isArray(values) ? values : values ? [values] : []).forEach((v) => add(pairs, "f." + id.field, v));
      });
      if (head && Number.isInteger(head.layer) && Number.isInteger(head.head)) {
        pairs.push(["head", head.layer + "." + head.head]);
      }
      return write(merged(CORPUS, pairs));
    },

    /* The Playground's inputs and settings, the shown result's kind (run or predict) and view -> pg.* entries
       (only while the tab shows). */
    playground: function (model, layers, heads, hidden, seed, task, src, tgt, input, typed, second, length, rseed,
                          genN, mode, temp, genSeed, mask, result, kind, layer, head, step, tab, fixed) {
      if (tab !== "playground") { return noUpdate(); }
      const pairs = [];
      add(pairs, "model", model);
      if (!fixed) {
        add(pairs, "layers", layers);
        add(pairs, "heads", heads);
        add(pairs, "hidden", hidden);
        add(pairs, "seed", seed);
      }
      add(pairs, "task", task);
      if (task === "translation") {
        add(pairs, "src", src);
        add(pairs, "tgt", tgt);
      }
      add(pairs, "input", input);
      if (input === "random") {
        add(pairs, "length", length);
        add(pairs, "rseed", rseed);
      } else {
        add(pairs, "text", typed);
        if (task === "pair" || task === "translation") { add(pairs, "second", second); }
      }
      add(pairs, "gen_n", genN);
      add(pairs, "mode", mode);
      if (mode === "sample") {
        add(pairs, "temp", temp);
        add(pairs, "gen_seed", genSeed);
      }
      add(pairs, "mask", mask);
      if (result && result.id) {
        pairs.push(["result", result.generated || result.masked ? "predict" : "run"]);
        add(pairs, "kind", kind);
        add(pairs, "layer", layer);
        add(pairs, "head", head);
        add(pairs, "step", step);
      }
      return write(merged(PLAYGROUND, pairs));
    },
  };
})();
