"""Plotly for the page: the vendored cartesian partial bundle, served on a route of its own.

The page draws only scatter, bar and heatmap traces, so it loads Plotly's official cartesian partial bundle
(``dashboard/vendor/plotly-cartesian.min.js``, 1.5 MB, npm ``plotly.js-cartesian-dist-min``, byte-identical to
npm's; ``make vendor-plotly`` refreshes it) instead of the full 4.8 MB ``plotly.min.js`` that python plotly ships:
a fresh browser spends ~1 s less downloading and compiling it. The route prepends V8's explicit compile hint
(``//# allFunctionsCalledOnLoad``, Chrome >= 136), so the bundle is compiled eagerly on a background thread
while it streams instead of function by function on the main thread. The name carries the version, so the
response may be cached for a year. Basic auth and the security headers apply as to every other route.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

VENDOR = Path(__file__).resolve().parent / "vendor"
#: The vendored bundle, unmodified from npm.
BUNDLE_FILE = VENDOR / "plotly-cartesian.min.js"
#: Its source (package, version, registry integrity, sha256 of the file), written by ``make vendor-plotly``.
MANIFEST_FILE = VENDOR / "plotly-cartesian.json"
#: V8's explicit compile hint for the whole file: the first line of the served script.
COMPILE_HINT = b"//# allFunctionsCalledOnLoad\n"
#: The response may be kept: the route's name changes with the bundle's version.
CACHE_CONTROL = "max-age=31536000, immutable"
_VERSION = re.compile(rb"plotly\.js \(cartesian[^)]*\) v(\d+\.\d+\.\d+)")


def bundle_version(head: bytes) -> str:
    """The plotly.js version a cartesian bundle's licence header names (``v4.1.1`` -> ``"4.1.1"``);
    ValueError when it names none."""
    found = _VERSION.search(head[:1000])
    if found is None:
        raise ValueError("not a plotly.js cartesian bundle: no 'plotly.js (cartesian ...) vX.Y.Z' in its header")
    return found.group(1).decode()


@functools.cache
def vendored_version() -> str:
    """The version of the vendored bundle (read from its header once per process)."""
    with BUNDLE_FILE.open("rb") as f:
        return bundle_version(f.read(1000))


@functools.cache
def served_bytes() -> bytes:
    """What the route sends: the compile hint line, then the vendored file as it is."""
    return COMPILE_HINT + BUNDLE_FILE.read_bytes()


def route() -> str:
    """The bundle's path on the server, versioned: ``/_attnviz/plotly-cartesian-4.1.1.min.js``."""
    return f"/_attnviz/plotly-cartesian-{vendored_version()}.min.js"


def script_tag(prefix: str = "/") -> str:
    """The page's ``<script>`` element for the bundle under the app's ``requests_pathname_prefix``."""
    return f'<script src="{prefix}{route().lstrip("/")}"></script>'


def register_route(server: Any) -> None:
    """Serve the bundle at :func:`route` on the Flask ``server`` (long-lived cache, behind the app's auth)."""
    import flask

    def plotly_bundle() -> Any:
        return flask.Response(served_bytes(), mimetype="text/javascript",
                              headers={"Cache-Control": CACHE_CONTROL})

    server.add_url_rule(route(), "attnviz_plotly_bundle", plotly_bundle, methods=["GET"])
