"""The page's JavaScript at first load (issue 14): Plotly from the vendored cartesian partial bundle on its own
route, and dash_ag_grid's bundle left out of the first page until the Corpus tab needs it.

Route, file and page checks go through the app's Flask test client; the browser test opens every tab of the
real server (``attnviz serve``) in headless Chromium and reads what the page loaded."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from browser_helpers import TIMEOUT, prop
from dash.testing.wait import until
from dashboard_fixtures import LiveServer

from attnviz.dashboard import lazy_bundles, plotly_bundle
from attnviz.dashboard.app import create_app
from attnviz.dashboard.security import AuthConfig

REFRESH = "run `make vendor-plotly` to vendor the matching plotly.js-cartesian-dist-min"


@pytest.fixture(scope="module")
def client(dashboard_store: Path):
    return create_app(dashboard_store).server.test_client()


def test_the_route_serves_the_vendored_file_after_the_compile_hint_with_long_cache(client) -> None:
    response = client.get(plotly_bundle.route())
    assert response.status_code == 200
    assert response.mimetype == "text/javascript"
    body = response.get_data()
    first, rest = body.split(b"\n", 1)
    assert first == b"//# allFunctionsCalledOnLoad"
    assert rest == plotly_bundle.BUNDLE_FILE.read_bytes()
    cache = response.headers["Cache-Control"]
    assert "max-age=31536000" in cache and "immutable" in cache
    assert plotly_bundle.route() == f"/_attnviz/plotly-cartesian-{plotly_bundle.vendored_version()}.min.js"
    other = client.get("/_attnviz/plotly-cartesian-0.0.1.min.js")  # another version: Dash's page, not a script
    assert other.mimetype != "text/javascript" and not other.get_data().startswith(plotly_bundle.COMPILE_HINT)


def test_the_route_is_behind_the_dashboards_auth(dashboard_store: Path) -> None:
    client = create_app(dashboard_store, auth=AuthConfig({"alice": "s3cret"}, "test")).server.test_client()
    assert client.get(plotly_bundle.route()).status_code == 401
    ok = client.get(plotly_bundle.route(), headers={"Authorization": "Basic YWxpY2U6czNjcmV0"})  # alice:s3cret
    assert ok.status_code == 200 and ok.get_data().startswith(plotly_bundle.COMPILE_HINT)


def test_the_vendored_file_is_npms_as_recorded() -> None:
    manifest = json.loads(plotly_bundle.MANIFEST_FILE.read_text())
    data = plotly_bundle.BUNDLE_FILE.read_bytes()
    assert hashlib.sha256(data).hexdigest() == manifest["sha256"], f"the vendored file was changed: {REFRESH}"
    assert manifest["package"] == "plotly.js-cartesian-dist-min"
    assert manifest["integrity"].startswith("sha512-")
    assert plotly_bundle.vendored_version() == manifest["version"]
    assert not data.startswith(b"//# allFunctionsCalledOnLoad")  # the hint is added when served, not stored


def test_the_vendored_plotly_js_is_the_installed_plotlys() -> None:
    from plotly.offline import get_plotlyjs_version

    installed = get_plotlyjs_version()
    vendored = plotly_bundle.vendored_version()
    assert installed.split(".")[:2] == vendored.split(".")[:2], (
        f"python plotly bundles plotly.js {installed} but dashboard/vendor has {vendored}: {REFRESH}")


def test_bundle_version_reads_the_header_and_refuses_other_files() -> None:
    assert plotly_bundle.bundle_version(b"/**\n* plotly.js (cartesian - minified) v12.3.45\n*/") == "12.3.45"
    with pytest.raises(ValueError, match="not a plotly.js cartesian bundle"):
        plotly_bundle.bundle_version(b"/**\n* plotly.js v4.1.1\n*/")


def test_the_page_loads_the_vendored_bundle_and_names_the_grid_bundle_without_loading_it(client) -> None:
    page = client.get("/").get_data(as_text=True)
    scripts = re.findall(r'<script[^>]*\ssrc="([^"]+)"', page)
    assert f"/{plotly_bundle.route().lstrip('/')}" in scripts
    assert page.index(plotly_bundle.script_tag()) < page.index('<script id="_dash-renderer"')  # runs before Dash starts
    assert not [s for s in scripts if "plotly.min.js" in s or "dash_ag_grid" in s]
    assert f'<link rel="preload" as="script" href="{plotly_bundle.route()}">' in page
    (grid,) = lazy_bundles.LAZY_BUNDLES
    url = lazy_bundles.bundle_url(grid)
    assert re.search(rf'<meta name="attnviz-lazy-bundle" content="{re.escape(url)}" data-tab="corpus" '
                     r'data-global="dash_ag_grid">', page)
    served = client.get(url)  # the dynamic bundle is still served, at the URL the page was given
    assert served.status_code == 200
    assert b"window.dash_ag_grid=" in served.get_data()[-500:]  # what the loader waits for



_RESOURCES_JS = "return performance.getEntriesByType('resource').map(e => e.name);"
_TAB_PANES = {2: "#corpus-head-table .ag-row", 3: "#pg-run", 4: "#training-pane .dash-graph, #training-pane .alert"}


def open_page(dash_duo, server: LiveServer, path: str, ready: str) -> Any:
    """The browser on ``path`` of ``server``, once ``ready`` (a CSS selector) is in the page."""
    dash_duo.server_url = server.url
    dash_duo.driver.get(server.url + path)
    dash_duo.wait_for_element(ready, timeout=TIMEOUT)
    return dash_duo.driver


@pytest.mark.browser
@pytest.mark.usefixtures("headless")
def test_every_tab_draws_with_the_vendored_plotly_and_the_full_bundle_is_never_requested(
        dash_duo, live_server: LiveServer) -> None:
    driver = open_page(dash_duo, live_server, "/", "#attn-matrix .js-plotly-plot")
    assert driver.execute_script("return window.Plotly.version") == plotly_bundle.vendored_version()
    traces = driver.execute_script("return Object.keys(window.Plotly.PlotSchema.get().traces)")
    assert {"scatter", "bar", "heatmap"} <= set(traces)
    # the grid's bundle arrives at idle time after the first view is drawn, before the Corpus tab is opened
    until(lambda: driver.execute_script("return !!window.dash_ag_grid"), timeout=TIMEOUT,
          msg="dash_ag_grid was not loaded ahead of the Corpus tab")
    assert not prop(driver, "corpus-pane", "children")  # loaded ahead, not by opening the tab
    for nth, ready in _TAB_PANES.items():
        driver.find_element("css selector", f"#tabs .tab:nth-child({nth})").click()
        dash_duo.wait_for_element(ready, timeout=TIMEOUT)
    loaded = driver.execute_script(_RESOURCES_JS)
    assert not [u for u in loaded if "plotly.min.js" in u], loaded
    assert [u for u in loaded if u.endswith(plotly_bundle.route())]
    assert [u for u in loaded if "/dash_ag_grid/dash_ag_grid.v" in u]
    assert [u for u in loaded if u.endswith("/dash_ag_grid/async-community.js")]  # the grid's own chunk still loads


@pytest.mark.browser
@pytest.mark.usefixtures("headless")
def test_a_page_opened_on_the_corpus_tab_loads_the_grid_before_filling_the_pane(
        dash_duo, live_server: LiveServer) -> None:
    driver = open_page(dash_duo, live_server, "/?tab=corpus", "#corpus-head-table .ag-row")
    assert driver.execute_script("return window.dash_ag_grid && typeof window.dash_ag_grid.AgGrid") == "function"
    errors = [e["message"] for e in driver.get_log("browser")
              if e["level"] == "SEVERE" and ("dash_ag_grid" in e["message"] or "could not load" in e["message"])]
    assert not errors
    assert not [u for u in driver.execute_script(_RESOURCES_JS) if "plotly.min.js" in u]
