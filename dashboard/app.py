"""The attnviz Dash app: header (store and run selectors), tabs (Example, Corpus, Playground, Training), URL state.

``create_app(store_path)`` builds an app for one store; other stores of its data directory (default: the
store's folder) open with ``?store=NAME`` or the Store menu. ``server`` is the WSGI entry for gunicorn with
process workers (``gunicorn -c deploy/gunicorn.conf.py 'attnviz.dashboard.app:server'`` with ``ATTNVIZ_STORE`` set,
optionally ``ATTNVIZ_DATA_DIR`` and users, see :mod:`attnviz.dashboard.security`): it builds the app on the first
request in each process, so no HDF5 file is opened before the fork. Importing this module opens no file and imports no
torch.

Every app has ``/healthz``, a JSON log line per callback (:mod:`attnviz.dashboard.observability`), basic auth when users
are configured, and an app-wide alert for errors no tab handled.

How the page's store reaches the server: the Store menu reloads the page with ``?store=NAME``; the renderer
hook :data:`REQUEST_PRE` reads that name once per page load and adds it to the body of every callback request
(``attnviz_store``), where :func:`attnviz.dashboard.data.current_store_path` resolves it inside the data directory. The
hook :data:`REQUEST_POST` keeps ``store=`` in the address bar when a callback rewrites the query string, so a
shared URL opens the same store.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate

from attnviz.dashboard import callback_inputs, ids, lazy_bundles, observability, plotly_bundle, security, served_layout
from attnviz.dashboard.corpus import callbacks as corpus_callbacks
from attnviz.dashboard.corpus import layout as corpus_layout
from attnviz.dashboard.corpus import qk_space as corpus_qk_space
from attnviz.dashboard.data import (
    CONFIG_DATA_DIR_KEY,
    CONFIG_STORE_KEY,
    STORE_PAYLOAD_KEY,
    current_store_path,
    data_dir_of,
    get_reader,
    preferred_run,
)
from attnviz.dashboard.example import callbacks as example_callbacks
from attnviz.dashboard.example import inputs as example_inputs
from attnviz.dashboard.example import layout as example_layout
from attnviz.dashboard.example import neighbours as example_neighbours
from attnviz.dashboard.example import sync, transport
from attnviz.dashboard.playground import callbacks as playground_callbacks
from attnviz.dashboard.playground import layout as playground_layout
from attnviz.dashboard.security import resolve_store
from attnviz.dashboard.training import callbacks as training_callbacks
from attnviz.dashboard.training import layout as training_layout
from attnviz.pipeline.store import StoreError

ASSETS = Path(__file__).resolve().parent / "assets"
TAB_STYLE = {"padding": "6px 14px"}
#: Classes of the header's Run box where it shows (Bootstrap's d-flex is !important: hidden with d-none).
RUN_BOX_CLASS = "d-flex align-items-center ms-auto"
#: Scripts the page needs at once but Dash loads only when the first graph renders (dcc.Graph's chunk): fetched
#: with the page's own scripts (``<link rel=preload>``), not after them.
PRELOAD = ("dash/dcc/async-graph.js",)
# Plotly is the vendored cartesian bundle (:mod:`attnviz.dashboard.plotly_bundle`), preloaded and run before Dash's
# renderer starts: the Example tab draws its views with it (example.js), and dcc.Graph's loader uses
# ``window.Plotly`` when it is there, so the full plotly.min.js is never requested.
#: Largest callback request body accepted (413 beyond); ``ATTNVIZ_MAX_REQUEST_BYTES`` overrides it.
MAX_REQUEST_BYTES = int(os.environ.get("ATTNVIZ_MAX_REQUEST_BYTES", str(4 << 20)))

#: Renderer hook: send the page's ``?store=`` (read once per page load) with every callback request, and put it
#: back in the address bar if an in-page link dropped it.
REQUEST_PRE = f"""function (payload) {{
    var w = window;
    if (w.attnvizStore === undefined) {{
        w.attnvizStore = new URLSearchParams(w.location.search).get('store') || null;
    }}
    var s = w.attnvizStore;
    if (!s) {{ return; }}
    payload.{STORE_PAYLOAD_KEY} = s;
    var p = new URLSearchParams(w.location.search);
    if (p.get('store') !== s) {{
        p.set('store', s);
        w.history.replaceState(w.history.state, '', w.location.pathname + '?' + p.toString() + w.location.hash);
    }}
}}"""
#: Renderer hook: keep ``store=`` in the query string a callback writes to the URL (``url.search``).
REQUEST_POST = f"""function (payload, response) {{
    var s = window.attnvizStore;
    var url = response && response['{ids.URL}'];
    if (!s || !url || typeof url.search !== 'string') {{ return; }}
    var p = new URLSearchParams(url.search);
    if (p.get('store') !== s) {{ p.set('store', s); url.search = '?' + p.toString(); }}
}}"""


def _store_label(path: Path, data_dir: Path) -> str:
    """How the header shows a store: its name inside the data directory, else its path."""
    try:
        return str(path.resolve().relative_to(data_dir.resolve()))
    except ValueError:
        return str(path)


def _header(store_path: str, data_dir: Path) -> dbc.Navbar:
    stores = security.list_stores(data_dir)
    current = _store_label(Path(store_path), data_dir)
    options = [{"label": name, "value": name} for name in sorted(set(stores) | {current})]
    return dbc.Navbar(dbc.Container([
        html.Span("attnviz", className="navbar-brand fw-bold"),
        html.Span(store_path, id=ids.STORE_PATH, className="text-white-50 small me-3 text-truncate",
                  title="store file", style={"maxWidth": "24rem"}),
        html.Div([
            dbc.Label("Store", html_for=ids.STORE_SELECT, className="text-white small mb-0 me-2"),
            dbc.Select(id=ids.STORE_SELECT, options=options, value=current, size="sm", style={"minWidth": "12rem"}),
        ], className="d-flex align-items-center me-3"),
        html.Div([
            dbc.Label("Run", html_for=ids.RUN_SELECT, className="text-white small mb-0 me-2"),
            dbc.Select(id=ids.RUN_SELECT, options=[], size="sm", style={"minWidth": "22rem"}),
        ], id=ids.RUN_BOX, className=RUN_BOX_CLASS),
    ], fluid=True), color="dark", dark=True, className="mb-2 py-1")


#: The tabs whose content is put in the page only when first opened (their callbacks would otherwise all start
#: with every page load, before the Example tab is drawn), with each one's layout.
LAZY_TABS: dict[str, Callable[[], Any]] = {
    "corpus": corpus_layout.layout, "playground": playground_layout.layout, "training": training_layout.layout,
}


def pane_id(tab: str) -> str:
    """The id of the element that holds ``tab``'s content once the tab has been opened."""
    return f"{tab}-pane"


def build_layout(store_path: str, data_dir: str | os.PathLike | None = None, *, lazy: bool = True) -> html.Div:
    """The page: location, header, tabs. Static: the run list and controls are filled by callbacks. With
    ``lazy`` the Corpus, Playground and Training tabs are empty until first opened (:func:`register_tab_panes`);
    without it every tab's content is in the page (what the request checks read the components' types from)."""
    folder = Path(data_dir) if data_dir else Path(store_path).parent

    def pane(tab: str) -> html.Div:
        return html.Div([] if lazy else LAZY_TABS[tab](), id=pane_id(tab), className="pt-2")

    return html.Div([
        dcc.Location(id=ids.URL, refresh=False),
        dcc.Location(id=ids.STORE_NAV, refresh=True),
        dcc.Store(id=ids.VIEW_STATE),
        dcc.Store(id=ids.LAYOUT_FOR),
        dcc.Store(id=ids.STORE_MENU_REQUEST),
        dcc.Store(id=ids.PANE_REQUEST),  # register_tab_panes: the tab to fill, once its bundles are loaded
        *training_layout.page_stores(),
        _header(store_path, folder),
        dbc.Container(dbc.Alert(id=observability.APP_ALERT, is_open=False, dismissable=True, color="danger",
                                duration=20000, className="py-2 small mb-2"), fluid=True),
        dbc.Container(dcc.Tabs(id=ids.TABS, value="example", children=[
            dcc.Tab(label="Example", value="example", children=html.Div(example_layout.layout(), className="pt-2"),
                    style=TAB_STYLE, selected_style=TAB_STYLE),
            dcc.Tab(label="Corpus", value="corpus", children=pane("corpus"), style=TAB_STYLE,
                    selected_style=TAB_STYLE),
            dcc.Tab(label="Playground", value="playground", children=pane("playground"), style=TAB_STYLE,
                    selected_style=TAB_STYLE),
            dcc.Tab(label="Training", value="training", children=pane("training"), style=TAB_STYLE,
                    selected_style=TAB_STYLE),
        ]), fluid=True),
    ])


def page_layout(store_path: str, data_dir: str, page_path: str) -> html.Div:
    """The layout Dash serves a page (called per ``/_dash-layout`` request): :func:`build_layout`, filled for the
    page's URL (its Referer) where it opens the Example tab (:mod:`.served_layout`)."""
    import flask

    if not flask.has_request_context():
        return build_layout(store_path, data_dir)
    config = flask.current_app.config
    folder = data_dir_of(config)

    def path_of(name: str | None) -> str:
        return str(resolve_store(folder, name)) if name else str(config[CONFIG_STORE_KEY])

    def menu(name: str | None) -> served_layout.Values:
        options, value, path = store_menu(config, lambda: path_of(name))
        return {(ids.STORE_SELECT, "options"): options, (ids.STORE_SELECT, "value"): value,
                (ids.STORE_PATH, "children"): path}

    page = served_layout.page_url(flask.request.referrer, flask.request.host, page_path)
    return cast(html.Div, served_layout.layout_for_page(
        lambda: build_layout(store_path, data_dir), page, lambda name: get_reader(path_of(name)), menu))


def register_tab_panes(app: dash.Dash) -> None:
    """Fill a lazy tab's pane the first time the tab is opened (kept afterwards, so its state survives tab
    changes). Its callbacks then start because their components appeared, and read the URL fragment and the run
    set as they are at that moment. The tab's component bundles that the first page left out
    (:mod:`attnviz.dashboard.lazy_bundles`: the Corpus tab's AgGrid) are loaded first: the opened tab reaches
    the pane through an async clientside gate that waits for them."""
    tabs = list(LAZY_TABS)
    lazy_bundles.register_gate(app, Input(ids.TABS, "value"), Output(ids.PANE_REQUEST, "data"))

    @app.callback(*[Output(pane_id(t), "children") for t in tabs], Input(ids.PANE_REQUEST, "data"),
                  *[State(pane_id(t), "children") for t in tabs], prevent_initial_call=True)
    def fill_pane(tab: Any, *shown: Any) -> tuple[Any, ...]:
        if not isinstance(tab, str) or tab not in LAZY_TABS or shown[tabs.index(tab)]:
            raise PreventUpdate
        return tuple(LAZY_TABS[t]() if t == tab else dash.no_update for t in tabs)


def create_app(store_path: str | os.PathLike, *, data_dir: str | os.PathLike | None = None,
               auth: security.AuthConfig | None = None) -> dash.Dash:
    """A Dash app serving the store at ``store_path`` (opened lazily, once per process, on first use).

    ``data_dir`` (default: the store's folder) holds the stores a page may open with ``?store=NAME``; nothing
    outside it is served. It is kept in the Flask config as ``ATTNVIZ_DATA_DIR``, the store path as
    ``ATTNVIZ_STORE``. ``auth`` (users) turns on basic auth for everything but ``/healthz``.
    """
    store = os.fspath(store_path)
    folder = os.fspath(data_dir) if data_dir else os.fspath(Path(store).parent)
    observability.configure_logging()
    app = dash.Dash(__name__, title="attnviz", assets_folder=str(ASSETS), serve_locally=True,
                    update_title=cast(str, None), suppress_callback_exceptions=True,
                    on_error=observability.callback_error,
                    hooks={"request_pre": REQUEST_PRE, "request_post": REQUEST_POST})
    prefix = app.config.requests_pathname_prefix
    lazy_bundles.defer()
    app.index_string = app.index_string.replace("{%metas%}", "{%metas%}" + "".join(
        f'<link rel="preload" as="script" href="{prefix}_dash-component-suites/{path}">' for path in PRELOAD)
        + f'<link rel="preload" as="script" href="{prefix}{plotly_bundle.route().lstrip("/")}">'
        + lazy_bundles.meta_tags(prefix))
    app.index_string = app.index_string.replace("{%renderer%}", plotly_bundle.script_tag(prefix) + "{%renderer%}")
    server = app.server
    server.config[CONFIG_STORE_KEY] = store
    server.config[CONFIG_DATA_DIR_KEY] = folder
    server.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    app.layout = functools.partial(page_layout, store, folder, prefix)
    app.validation_layout = cast(Any, build_layout(store, folder, lazy=False))
    prop_types = callback_inputs.declared_types(app.validation_layout)
    observability.install_callback_log(server)  # first: refused callbacks are logged too
    if auth is not None:
        security.install_auth(server, auth)
    security.install_request_checks(server, lambda: security.server_callbacks(app.callback_map),
                                    lambda: prop_types)
    security.install_headers(server)
    install_default_run(server)
    transport.register_route(server)
    plotly_bundle.register_route(server)
    observability.install_health(server, store, lambda path: get_reader(path, fresh=True))
    sync.register_callbacks(app)
    example_callbacks.register_callbacks(app)
    example_inputs.register_callbacks(app)
    example_neighbours.register_callbacks(app)
    corpus_callbacks.register_callbacks(app)
    corpus_qk_space.register_callbacks(app)
    playground_callbacks.register_callbacks(app)
    training_callbacks.register_callbacks(app)
    register_store_callbacks(app)
    register_tab_panes(app)
    return app


#: The header's Run selector is shown on the Example and Corpus tabs (the Playground runs its own model).
RUN_BOX_JS = f"""function (tab) {{
    return tab === 'playground' ? 'd-none' : '{RUN_BOX_CLASS}';
}}"""


def install_default_run(server: Any) -> None:
    """A page opened without ``run=`` is sent (302) to the same address with the store's preferred run
    (:func:`attnviz.dashboard.data.preferred_run`: trained weights before random ones) when that is not the first
    run (which the page shows by itself), so a new user first sees a model that has learnt something; every other
    parameter, and the fragment, is kept."""
    import flask

    @server.before_request
    def _default_run() -> Any:
        request = flask.request
        if request.method != "GET" or request.path != "/" or "run" in request.args:
            return None
        config = flask.current_app.config
        name = request.args.get("store")
        try:
            path = resolve_store(data_dir_of(config), name) if name else Path(config[CONFIG_STORE_KEY])
            reader = get_reader(path)
            run = preferred_run(reader)
            first = reader.runs()[0] if reader.runs() else None
        except (security.SecurityError, StoreError, OSError):
            return None  # the page says what is wrong with the store
        if run is None or run == first:
            return None  # the page shows the first run by itself
        query = [*request.args.items(multi=True), ("run", run)]
        return flask.redirect("/?" + urlencode(query), code=302)


#: The page asks for its Store menu unless its layout was filled for its store (:mod:`.served_layout`).
STORE_MENU_GATE_JS = """function (pathname, built) {
    var store = new URLSearchParams(window.location.search).get('store') || null;
    if (built && built.store === store) { return window.dash_clientside.no_update; }
    return {pathname: pathname || '/', at: Date.now()};
}"""


def store_menu(config: Any, store_path: Callable[[], str]) -> tuple[list[dict[str, str]], str | None, str]:
    """The Store menu's options and value and the header's path for the page's store (``store_path()``, which
    raises ``StoreAccessError`` for a name outside the data directory: then no value and the message as path)."""
    folder = data_dir_of(config)
    names = set(security.list_stores(folder))
    default = _store_label(Path(config[CONFIG_STORE_KEY]), folder)
    try:
        path = Path(store_path())
    except security.StoreAccessError as exc:
        return [{"label": n, "value": n} for n in sorted(names | {default})], None, str(exc)
    current = _store_label(path, folder)
    return [{"label": n, "value": n} for n in sorted(names | {default, current})], current, str(path)


def register_store_callbacks(app: dash.Dash) -> None:
    """The Store menu: list the data directory's stores, show the page's one, reload the page on a change; the
    Run selector hidden on the Playground."""
    app.clientside_callback(RUN_BOX_JS, Output(ids.RUN_BOX, "className"), Input(ids.TABS, "value"))

    app.clientside_callback(STORE_MENU_GATE_JS, Output(ids.STORE_MENU_REQUEST, "data"), Input(ids.URL, "pathname"),
                            State(ids.LAYOUT_FOR, "data"))

    @app.callback(Output(ids.STORE_SELECT, "options"), Output(ids.STORE_SELECT, "value"),
                  Output(ids.STORE_PATH, "children"),
                  Input(ids.STORE_MENU_REQUEST, "data"), State(ids.STORE_SELECT, "value"), prevent_initial_call=True)
    def show_store(_request: Any, shown: Any) -> tuple[list[dict[str, str]], Any, str]:
        import flask

        options, current, path = store_menu(flask.current_app.config, current_store_path)
        # the value it shows already is not set again (that would ask switch_store for nothing)
        return options, dash.no_update if current is not None and current == shown else current, path

    @app.callback(Output(ids.STORE_NAV, "href"), Input(ids.STORE_SELECT, "value"), prevent_initial_call=True)
    def switch_store(name: Any) -> str:
        import flask

        config = flask.current_app.config
        if not name:
            raise PreventUpdate
        default = Path(config[CONFIG_STORE_KEY]).resolve()
        is_default = name == _store_label(default, data_dir_of(config))
        target = default if is_default else security.resolve_store(data_dir_of(config), name)
        try:
            current = Path(current_store_path()).resolve()
        except security.StoreAccessError:
            current = None
        if target == current:
            raise PreventUpdate
        return "/" if target == default else "/?" + urlencode({"store": name})


def app_from_env(environ: dict[str, str] | None = None) -> dash.Dash:
    """The app the environment describes (see :class:`LazyServer`); RuntimeError/SecurityError when it cannot."""
    env = os.environ if environ is None else environ
    store = env.get("ATTNVIZ_STORE")
    if not store:
        raise RuntimeError("set ATTNVIZ_STORE to the store file to serve")
    auth = security.load_auth(env)
    security.check_required(auth, no_auth=False, require=security.require_auth(env))
    return create_app(store, data_dir=env.get(CONFIG_DATA_DIR_KEY) or None, auth=auth)


class LazyServer:
    """WSGI application that creates the Dash app from the environment on its first request in a process.

    ``ATTNVIZ_STORE`` (required), ``ATTNVIZ_DATA_DIR``, users from ``ATTNVIZ_AUTH_FILE``/``ATTNVIZ_USERS``
    (enforced when set); with ``ATTNVIZ_REQUIRE_AUTH=1`` and no users every request gets a 500 that says what
    to set, and no data.
    """

    def __init__(self) -> None:
        self._flask: Any = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    def flask(self) -> Any:
        """The Flask server of this process's app (built on first call)."""
        if self._flask is None or self._pid != os.getpid():
            with self._lock:
                if self._flask is None or self._pid != os.getpid():
                    self._flask = app_from_env().server
                    self._pid = os.getpid()
        return self._flask

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        try:
            app = self.flask()
        except (RuntimeError, security.SecurityError) as exc:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain; charset=utf-8")])
            return [f"attnviz: {exc}\n".encode()]
        return app(environ, start_response)


#: WSGI entry for gunicorn: ``ATTNVIZ_STORE=path gunicorn -c deploy/gunicorn.conf.py 'attnviz.dashboard.app:server'``.
server = LazyServer()
