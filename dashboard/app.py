"""The attnviz Dash app: header (store, run selector), tabs (Example, Corpus, Playground), URL state.

``create_app(store_path)`` builds an app for one store. ``server`` is a WSGI entry for gunicorn with process
workers (``gunicorn -w 4 'dashboard.app:server'`` with ``ATTNVIZ_STORE`` set, optionally
``ATTNVIZ_DATA_DIR``): it builds the app on the first request in each process, so no HDF5 file is opened
before the fork. Importing this module opens no file and imports no torch.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import dash
import dash_bootstrap_components as dbc
from dash import dcc, html

from dashboard import corpus_tab, example_tab, ids, playground_tab, sync
from dashboard.data import CONFIG_DATA_DIR_KEY, CONFIG_STORE_KEY

ASSETS = Path(__file__).resolve().parent / "assets"
TAB_STYLE = {"padding": "6px 14px"}


def _header(store_path: str) -> dbc.Navbar:
    return dbc.Navbar(dbc.Container([
        html.Span("attnviz", className="navbar-brand fw-bold"),
        html.Span(store_path, id=ids.STORE_PATH, className="text-white-50 small me-3 text-truncate",
                  title="store file", style={"maxWidth": "32rem"}),
        html.Div([
            dbc.Label("Run", html_for=ids.RUN_SELECT, className="text-white small mb-0 me-2"),
            dbc.Select(id=ids.RUN_SELECT, options=[], size="sm", style={"minWidth": "22rem"}),
        ], className="d-flex align-items-center ms-auto"),
    ], fluid=True), color="dark", dark=True, className="mb-2 py-1")


def build_layout(store_path: str) -> html.Div:
    """The page: location, header, tabs. Static: the run list and controls are filled by callbacks."""
    return html.Div([
        dcc.Location(id=ids.URL, refresh=False),
        dcc.Store(id=ids.VIEW_STATE),
        _header(store_path),
        dbc.Container(dcc.Tabs(id=ids.TABS, value="example", children=[
            dcc.Tab(label="Example", value="example", children=html.Div(example_tab.layout(), className="pt-2"),
                    style=TAB_STYLE, selected_style=TAB_STYLE),
            dcc.Tab(label="Corpus", value="corpus", children=html.Div(corpus_tab.layout(), className="pt-2"),
                    style=TAB_STYLE, selected_style=TAB_STYLE),
            dcc.Tab(label="Playground", value="playground",
                    children=html.Div(playground_tab.layout(), className="pt-2"),
                    style=TAB_STYLE, selected_style=TAB_STYLE),
        ]), fluid=True),
    ])


def create_app(store_path: str | os.PathLike, *, data_dir: str | os.PathLike | None = None) -> dash.Dash:
    """A Dash app serving the store at ``store_path`` (opened lazily, once per process, on first use).

    ``data_dir`` (optional) is where other tabs may find input files; it is kept in the Flask config as
    ``ATTNVIZ_DATA_DIR``, the store path as ``ATTNVIZ_STORE``.
    """
    app = dash.Dash(__name__, title="attnviz", assets_folder=str(ASSETS), serve_locally=True,
                    update_title=None, suppress_callback_exceptions=True)
    app.server.config[CONFIG_STORE_KEY] = os.fspath(store_path)
    app.server.config[CONFIG_DATA_DIR_KEY] = os.fspath(data_dir) if data_dir else None
    app.layout = build_layout(os.fspath(store_path))
    sync.register_callbacks(app)
    example_tab.register_callbacks(app)
    corpus_tab.register_callbacks(app)
    playground_tab.register_callbacks(app)
    return app


class LazyServer:
    """WSGI application that creates the Dash app from ``ATTNVIZ_STORE`` on its first request in a process."""

    def __init__(self) -> None:
        self._flask: Any = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    def flask(self) -> Any:
        """The Flask server of this process's app (built on first call)."""
        if self._flask is None or self._pid != os.getpid():
            with self._lock:
                if self._flask is None or self._pid != os.getpid():
                    store = os.environ.get("ATTNVIZ_STORE")
                    if not store:
                        raise RuntimeError("set ATTNVIZ_STORE to the store file to serve")
                    self._flask = create_app(store, data_dir=os.environ.get("ATTNVIZ_DATA_DIR")).server
                    self._pid = os.getpid()
        return self._flask

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        try:
            app = self.flask()
        except RuntimeError as exc:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain; charset=utf-8")])
            return [f"attnviz: {exc}\n".encode()]
        return app(environ, start_response)


#: WSGI entry for gunicorn: ``ATTNVIZ_STORE=path gunicorn -w 4 'dashboard.app:server'``.
server = LazyServer()
