"""Component bundles the first page leaves out, loaded when the tab that needs them is first opened.

dash_ag_grid's main bundle (1.3 MB) draws only the Corpus tab's head table, and the Corpus tab's content enters
the page when the tab is first opened (:func:`attnviz.dashboard.app.register_tab_panes`). So the bundle is marked
``dynamic`` (Dash serves it but puts no ``<script>`` for it in the page) and the page learns its URL from a
``<meta name="attnviz-lazy-bundle">`` element (:func:`meta_tags`): ``assets/lazy_bundles.js`` loads it when the tab
is opened (an async clientside callback that the tab's pane waits for, :func:`register_gate`) and, ahead of
that, at idle time after the Example tab's first screen is drawn, so that opening the tab later does not wait.
"""

from __future__ import annotations

import html
import importlib
import os
import sys
from dataclasses import dataclass
from typing import Any

import dash
from dash import ClientsideFunction, Input, Output
from dash.fingerprint import build_fingerprint


@dataclass(frozen=True)
class LazyBundle:
    """A component library's script that only ``tab``'s content needs; ``global_name`` is what it defines on
    ``window`` (the page skips loading it when that is already there)."""

    tab: str
    namespace: str
    relative_path: str
    global_name: str


#: The bundles left out of the first page, by the tab that needs them.
LAZY_BUNDLES: tuple[LazyBundle, ...] = (
    LazyBundle(tab="corpus", namespace="dash_ag_grid", relative_path="dash_ag_grid.min.js",
               global_name="dash_ag_grid"),
)
#: The clientside function that opens a tab's pane once its bundles are in the page (assets/lazy_bundles.js).
GATE = ClientsideFunction(namespace="attnviz_panes", function_name="gate")


def defer(bundles: tuple[LazyBundle, ...] = LAZY_BUNDLES) -> None:
    """Mark each bundle's ``_js_dist`` entry ``dynamic``: still served, no longer a ``<script>`` of the page.
    Process-wide (the entries belong to the component library's module); idempotent."""
    for bundle in bundles:
        module = sys.modules.get(bundle.namespace) or importlib.import_module(bundle.namespace)
        dist: list[dict[str, Any]] = getattr(module, "_js_dist", [])
        entries = [entry for entry in dist if entry.get("relative_package_path") == bundle.relative_path]
        if not entries:
            raise RuntimeError(f"{bundle.namespace} has no script {bundle.relative_path}: update LAZY_BUNDLES")
        dist[:] = [dict(entry, dynamic=True) if entry in entries else entry for entry in dist]  # in place


def bundle_url(bundle: LazyBundle, prefix: str = "/") -> str:
    """The bundle's versioned URL under Dash's component-suites route, as Dash would put it in the page
    (``/_dash-component-suites/dash_ag_grid/dash_ag_grid.v35_3_0m1733212345.min.js``)."""
    module = sys.modules.get(bundle.namespace) or importlib.import_module(bundle.namespace)
    path = os.path.join(os.path.dirname(module.__file__ or ""), bundle.relative_path)
    fingerprint = build_fingerprint(bundle.relative_path, module.__version__, int(os.stat(path).st_mtime))
    return f"{prefix}_dash-component-suites/{bundle.namespace}/{fingerprint}"


def meta_tags(prefix: str = "/", bundles: tuple[LazyBundle, ...] = LAZY_BUNDLES) -> str:
    """One ``<meta name="attnviz-lazy-bundle">`` per bundle: its URL, tab and global name, for the page's loader."""
    return "".join(
        f'<meta name="attnviz-lazy-bundle" content="{html.escape(bundle_url(b, prefix))}" '
        f'data-tab="{html.escape(b.tab)}" data-global="{html.escape(b.global_name)}">' for b in bundles)


def register_gate(app: dash.Dash, tabs: Input, request: Output) -> None:
    """``request`` (a ``dcc.Store``'s data) gets the opened tab's name once the tab's lazy bundles are loaded
    (at once when it has none or they are loaded already): an async clientside callback (a Promise)."""
    app.clientside_callback(GATE, request, tabs, prevent_initial_call=True)
