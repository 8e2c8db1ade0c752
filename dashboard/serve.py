"""``attnviz serve``: check the store, then run the dashboard on Flask's server (gunicorn: ``dashboard.app:server``)."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from pathlib import Path

from pipeline.store import StoreReader


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine (localhost, 127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_warning(host: str, no_auth: bool) -> str | None:
    """The warning to print before binding ``host``, or None for a loopback address."""
    if is_loopback(host):
        return None
    reason = "--no-auth given" if no_auth else "authentication is not implemented yet"
    return (f"warning: binding {host} exposes the dashboard to other machines and {reason}: anyone who can "
            "reach this address can read the whole store")


def serve(store: str | os.PathLike, host: str = "127.0.0.1", port: int = 8050, debug: bool = False,
          no_auth: bool = False, say: Callable[[str], object] = print) -> None:
    """Serve the dashboard for ``store`` until interrupted.

    The store is opened once first so a wrong path fails with one line (``pipeline.store.StoreError``)
    before any server starts. A non-loopback ``host`` prints a warning.
    """
    path = Path(store)
    with StoreReader(path) as reader:  # raises NotAStoreError / SchemaTooNewError with a one-line message
        runs = reader.runs()
    warning = bind_warning(host, no_auth)
    if warning:
        say(warning)
    if not runs:
        say(f"note: {path} has no runs yet; they appear when 'attnviz precompute' commits them")
    from dashboard.app import create_app

    app = create_app(path)
    shown = f"[{host}]" if ":" in host else host
    say(f"attnviz: serving {path} ({len(runs)} runs) at http://{shown}:{port}/  (Ctrl+C to stop)")
    app.run(host=host, port=port, debug=debug, dev_tools_ui=debug, use_reloader=False)
