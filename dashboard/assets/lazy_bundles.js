/* Component bundles the first page leaves out (dashboard/lazy_bundles.py): each is named by a
 * <meta name="attnviz-lazy-bundle" content=URL data-tab=TAB data-global=NAME> element. A tab's pane is filled
 * only once its bundles are in the page (the clientside gate below); they are also loaded ahead, at idle time
 * after the Example tab's first screen is drawn, so opening the tab later does not wait for them. */
(function () {
  "use strict";
  const loading = new Map();  // URL -> Promise of the script's load

  function bundles(tab) {
    return Array.from(document.querySelectorAll('meta[name="attnviz-lazy-bundle"]'))
      .filter((m) => tab === undefined || m.dataset.tab === tab);
  }

  function loadBundle(meta) {
    if (window[meta.dataset.global]) { return Promise.resolve(); }
    const url = meta.content;
    if (!loading.has(url)) {
      loading.set(url, new Promise((resolve, reject) => {
        const script = document.createElement("script");
        script.src = url;
        script.onload = () => resolve();
        script.onerror = () => {
          loading.delete(url);  // a later opening of the tab tries again
          reject(new Error("attnviz: could not load " + url));
        };
        document.head.appendChild(script);
      }));
    }
    return loading.get(url);
  }

  /** Load the bundles ``tab`` needs (every lazy bundle without a tab); resolves when they have run. */
  function load(tab) { return Promise.all(bundles(tab).map(loadBundle)); }

  window.attnvizLazyBundles = { load: load };

  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    attnviz_panes: {
      /** The opened tab's name for its pane's callback (which fills the pane once) when the tab's bundles are
       * loaded. A bundle that fails to load is reported in the console and the pane is filled anyway (Dash then
       * says which component it could not find). */
      gate: function (tab) {
        return load(tab).then(() => tab, (err) => { console.error(err); return tab; });
      },
    },
  });

  // Ahead of need: at idle time after the first view is drawn (example.js's ``attnviz:drawn``), or a few seconds
  // after the page's load when no view is drawn (a page opened on another tab).
  let started = false;
  function prefetch() {
    if (started) { return; }
    started = true;
    const idle = window.requestIdleCallback || ((f) => setTimeout(f, 50));
    idle(() => { load().catch((err) => console.error(err)); }, { timeout: 3000 });
  }
  document.addEventListener("attnviz:drawn", prefetch, { once: true });
  window.addEventListener("load", () => setTimeout(prefetch, 5000), { once: true });
})();
