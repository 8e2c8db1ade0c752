"""``attnviz serve``: check the store and the access policy, then run the dashboard on Flask's server.

For a team, prefer gunicorn (``docs/deploy.md``): ``attnviz.dashboard.app:server`` with ``deploy/gunicorn.conf.py``.
The policy (:mod:`attnviz.dashboard.security`) is the same for both: a loopback address needs nothing; any other
address needs users (``ATTNVIZ_AUTH_FILE`` or ``ATTNVIZ_USERS``) or an explicit ``--no-auth``, which prints a
warning; ``ATTNVIZ_REQUIRE_AUTH=1`` refuses to serve without users; ``--debug`` (Werkzeug's debugger runs code
for whoever opens it) is refused on any address but loopback.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from attnviz.dashboard.security import (
    AuthConfig,
    SecurityError,
    auth_file_warning,
    check_bind,
    is_loopback,
    load_auth,
    require_auth,
)
from attnviz.pipeline.store import StoreError, StoreReader

__all__ = ["bind_warning", "is_loopback", "plan_access", "serve"]


def bind_warning(host: str, no_auth: bool) -> str | None:
    """The warning to print before binding ``host`` (with users unless ``no_auth``), or None for loopback."""
    if is_loopback(host):
        return None
    if no_auth:
        return (f"warning: binding {host} without authentication (--no-auth): anyone who can reach this address "
                "can read the whole store")
    return (f"note: binding {host} with basic auth: passwords cross the network in clear unless a TLS proxy is in "
            "front (docs/deploy.md)")


def plan_access(host: str, *, no_auth: bool, debug: bool = False, environ: dict[str, str] | None = None
                ) -> tuple[AuthConfig | None, list[str]]:
    """The users to enforce and the warnings to print for serving on ``host``; SecurityError (one line) when
    the combination would expose the store (see the module doc)."""
    auth = load_auth(environ)
    check_bind(host, auth, no_auth=no_auth, require=require_auth(environ))
    if debug and not is_loopback(host):
        raise SecurityError(f"--debug on {host} would let any visitor run code on this machine (Werkzeug's "
                            "debugger): drop --debug, or bind 127.0.0.1")
    notes: list[str] = []
    if no_auth and auth is not None:
        notes.append(f"warning: --no-auth given: the users of {auth.source} are not asked for a password")
        auth = None
    warning = bind_warning(host, no_auth=auth is None)
    if warning:
        notes.append(warning)
    if auth is not None:
        notes.extend(filter(None, [auth_file_warning(environ)]))
    return auth, notes


def serve(store: str | os.PathLike, host: str = "127.0.0.1", port: int = 8050, debug: bool = False,
          no_auth: bool = False, say: Callable[[str], object] = print,
          data_dir: str | os.PathLike | None = None) -> None:
    """Serve the dashboard for ``store`` until interrupted.

    The store is opened once first so a wrong path fails with one line (``attnviz.pipeline.store.StoreError``)
    before any server starts; the access policy fails the same way (``attnviz.dashboard.security.SecurityError``).
    ``data_dir`` (default: the store's folder) holds the other stores a page may open with ``?store=NAME``.
    """
    path = Path(store)
    folder = Path(data_dir) if data_dir else path.parent
    if not folder.is_dir():
        raise StoreError(f"data directory {folder} does not exist: pass an existing --data-dir")
    auth, notes = plan_access(host, no_auth=no_auth, debug=debug)
    with StoreReader(path) as reader:  # raises NotAStoreError / SchemaTooNewError with a one-line message
        runs = reader.runs()
    for note in notes:
        say(note)
    if not runs:
        say(f"note: {path} has no runs yet; they appear when 'attnviz precompute' commits them")
    from attnviz.dashboard.app import create_app

    app = create_app(path, data_dir=folder, auth=auth)
    shown = f"[{host}]" if ":" in host else host
    who = f"users of {auth.source}" if auth else "no password"
    say(f"attnviz: serving {path} ({len(runs)} runs; data dir {folder}; {who}) at http://{shown}:{port}/  "
        "(Ctrl+C to stop)")
    app.run(host=host, port=port, debug=debug, dev_tools_ui=debug, use_reloader=False)
