"""Access control for a dashboard a team shares: basic auth, the bind policy, and stores confined to a data dir.

* **Users** come from the environment, never from the command line (it shows up in ``ps`` and shell history):
  ``ATTNVIZ_AUTH_FILE`` names a file of ``user:password`` lines (``#`` comments and blank lines ignored; a
  password may also be a werkzeug hash such as ``scrypt:32768:8:1$…``, made by
  ``python -m attnviz.dashboard.security hash``), or ``ATTNVIZ_USERS`` holds ``user:password`` pairs separated by
  commas.
* **Auth** is a Flask ``before_request`` check (HTTP basic auth, constant-time comparison) on every route but
  :data:`PUBLIC_PATHS` (``/healthz``), so it covers the page, the assets and every callback of every tab.
* **Bind policy** (:func:`check_bind`): a loopback address needs nothing; any other address needs users, or an
  explicit ``--no-auth``; ``ATTNVIZ_REQUIRE_AUTH=1`` (production) refuses to serve without users at all.
* **Stores** are served from one data directory: :func:`resolve_store` turns a name that came from a URL or a
  callback into a path; only bare file names of the directory's stores pass (no absolute path, no ``..``, no
  sub-folder), and a symlink that leads out of the directory is refused.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnviz.pipeline.store import StoreError

AUTH_FILE_ENV = "ATTNVIZ_AUTH_FILE"
USERS_ENV = "ATTNVIZ_USERS"
REQUIRE_AUTH_ENV = "ATTNVIZ_REQUIRE_AUTH"
NO_AUTH_ENV = "ATTNVIZ_NO_AUTH"
#: Routes that answer without credentials (a load balancer's health probe has none).
PUBLIC_PATHS: frozenset[str] = frozenset({"/healthz"})
REALM = "attnviz"
_HASH_PREFIXES = ("scrypt:", "pbkdf2:")
_TRUE = ("1", "true", "yes", "on")
#: Longest store name accepted from a URL or a callback (a file name, not a document).
MAX_STORE_NAME = 255

log = logging.getLogger("attnviz.security")


class SecurityError(Exception):
    """A configuration that would serve the store unprotected or cannot be read; one line that says what to do."""


class StoreAccessError(StoreError):
    """A store name that is not a store of the data directory (shown in the page like any store error)."""


# --------------------------------------------------------------------------------------------------------
# Users
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthConfig:
    """Who may use the dashboard: user name -> password (plain, or a werkzeug hash). ``source`` says where
    the users came from (a file name or the variable's name; never a secret)."""

    users: Mapping[str, str] = field(repr=False)
    source: str = ""

    def check(self, user: str, password: str) -> bool:
        """Whether ``user``/``password`` is valid; takes the same time whether or not the user exists."""
        stored = self.users.get(user)
        if stored is None:  # compare anyway, against a password of the same kind, so timing tells nothing
            check_password(next(iter(self.users.values()), ""), password + "\0")
            return False
        return check_password(stored, password)


def check_password(stored: str, given: str) -> bool:
    """``given`` against a stored password: a werkzeug hash (``scrypt:``/``pbkdf2:``) or plain text."""
    if stored.startswith(_HASH_PREFIXES):
        from werkzeug.security import check_password_hash

        return check_password_hash(stored, given)
    return hmac.compare_digest(stored.encode("utf-8"), given.encode("utf-8"))


def parse_users(lines: Iterable[str], where: str) -> dict[str, str]:
    """``user:password`` entries (blank and ``#`` lines skipped); a bad entry raises SecurityError naming it
    by position only (the line may hold a password)."""
    users: dict[str, str] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        user = user.strip()
        if not sep or not user or not password:
            raise SecurityError(f"{where}: entry {number} is not 'user:password'")
        if user in users:
            raise SecurityError(f"{where}: user {user!r} appears twice")
        users[user] = password
    if not users:
        raise SecurityError(f"{where} lists no users: add 'user:password' lines")
    return users


def load_auth(environ: Mapping[str, str] | None = None) -> AuthConfig | None:
    """Users from ``ATTNVIZ_AUTH_FILE`` or ``ATTNVIZ_USERS`` (not both), or None when neither is set."""
    env = os.environ if environ is None else environ
    file_name, inline = env.get(AUTH_FILE_ENV, "").strip(), env.get(USERS_ENV, "").strip()
    if file_name and inline:
        raise SecurityError(f"both {AUTH_FILE_ENV} and {USERS_ENV} are set: keep only one")
    if inline:
        return AuthConfig(parse_users(inline.split(","), USERS_ENV), source=USERS_ENV)
    if not file_name:
        return None
    path = Path(file_name)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise SecurityError(f"cannot read {AUTH_FILE_ENV}={path} ({reason}): point it to a file of "
                            "'user:password' lines") from exc
    return AuthConfig(parse_users(text.splitlines(), str(path)), source=str(path))


def auth_file_warning(environ: Mapping[str, str] | None = None) -> str | None:
    """A warning when the auth file can be read by other users of this machine (mode not 0600/0400)."""
    env = os.environ if environ is None else environ
    name = env.get(AUTH_FILE_ENV, "").strip()
    if not name:
        return None
    try:
        mode = Path(name).stat().st_mode
    except OSError:
        return None
    if mode & 0o077:
        return f"warning: {name} can be read by other users of this machine: chmod 600 {name}"
    return None


def env_flag(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether an environment flag is set to 1/true/yes/on."""
    env = os.environ if environ is None else environ
    return env.get(name, "").strip().lower() in _TRUE


def require_auth(environ: Mapping[str, str] | None = None) -> bool:
    """``ATTNVIZ_REQUIRE_AUTH=1``: refuse to serve without users (production)."""
    return env_flag(REQUIRE_AUTH_ENV, environ)


# --------------------------------------------------------------------------------------------------------
# Bind policy
# --------------------------------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine (localhost, 127.0.0.0/8, ::1)."""
    import ipaddress

    name = host.strip().lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def check_required(auth: AuthConfig | None, *, no_auth: bool, require: bool) -> None:
    """``ATTNVIZ_REQUIRE_AUTH=1`` (``require``) without users, or with ``no_auth``: SecurityError, one line."""
    if require and (auth is None or no_auth):
        raise SecurityError(f"{REQUIRE_AUTH_ENV}=1 but no users are configured: set {AUTH_FILE_ENV} to a file of "
                            f"'user:password' lines (or {USERS_ENV}), and do not pass --no-auth")


def check_bind(host: str, auth: AuthConfig | None, *, no_auth: bool, require: bool) -> None:
    """Refuse (SecurityError, one line) to serve ``host`` in a way that would expose the store.

    * ``require`` (``ATTNVIZ_REQUIRE_AUTH=1``) without users, or with ``no_auth``: refused everywhere;
    * a non-loopback ``host`` without users and without ``no_auth``: refused.
    """
    check_required(auth, no_auth=no_auth, require=require)
    if not is_loopback(host) and auth is None and not no_auth:
        raise SecurityError(f"binding {host} would let anyone on the network read the store: set {AUTH_FILE_ENV} "
                            f"to a file of 'user:password' lines (or {USERS_ENV}=user:password), or pass --no-auth "
                            "to serve without a password, or bind 127.0.0.1")


# --------------------------------------------------------------------------------------------------------
# Flask hooks
# --------------------------------------------------------------------------------------------------------


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """(user, password) of an ``Authorization: Basic …`` header, or None when absent or malformed."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value or len(value) > 4096:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def install_auth(server: Any, auth: AuthConfig, public: Iterable[str] = PUBLIC_PATHS) -> None:
    """Require HTTP basic auth for every request to the Flask ``server`` except ``public`` paths."""
    import flask

    public_paths = frozenset(public)
    server.config["ATTNVIZ_AUTH"] = auth

    @server.before_request
    def _require_credentials() -> flask.Response | None:
        request = flask.request
        if request.path in public_paths:
            return None
        creds = basic_credentials(request.headers.get("Authorization"))
        if creds is not None and auth.check(*creds):
            flask.g.attnviz_user = creds[0]
            return None
        if creds is not None:
            log.warning("authentication failed for user %r from %s", creds[0][:64], request.remote_addr)
        return flask.Response("authentication required\n", status=401, mimetype="text/plain",
                              headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'})


#: Deepest JSON nesting accepted in a callback body (the browser's are under 20 levels; a figure's relayout data
#: and the app's stores stay well inside). Checked on the raw bytes, before any parser recurses into them.
MAX_JSON_DEPTH = 64
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def json_depth(raw: bytes) -> int:
    """The deepest ``[``/``{`` nesting of the JSON text ``raw``, without parsing it (no recursion: brackets
    inside strings are skipped, the rest counted with a running sum). Malformed text gets a depth too; the
    parser refuses it afterwards."""
    import numpy as np

    codes = np.frombuffer(_JSON_STRING.sub(b"", raw), dtype=np.uint8)
    steps = ((codes == ord("[")) | (codes == ord("{"))).astype(np.int32)
    steps -= ((codes == ord("]")) | (codes == ord("}"))).astype(np.int32)
    return int(np.cumsum(steps).max(initial=0))


def server_callbacks(callback_map: Mapping[str, Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The callbacks of a Dash app's ``callback_map`` that run on the server, by output key (client-side
    callbacks are listed there too, without a ``callback`` function: a POST naming one is refused)."""
    return {key: spec for key, spec in callback_map.items() if "callback" in spec}


def install_request_checks(server: Any,
                           callbacks_of: Callable[[], Mapping[str, Mapping[str, Any]]] | None = None,
                           types_of: Callable[[], Mapping[tuple[str, str], Any]] | None = None,
                           callback_path: str = "/_dash-update-component") -> None:
    """Answer 400 (one line, JSON ``{"error": …}``) to a callback request the server refuses on purpose, before
    Dash parses it (Dash would fail with a 500 and a traceback):

    * a body nested deeper than :data:`MAX_JSON_DEPTH` (checked on the raw bytes, before parsing);
    * a body that is not a JSON object with ``output`` (text) and ``inputs``/``state`` (lists);
    * an ``output`` that is not a server-side callback of ``callbacks_of()`` (unknown, or client-side);
    * inputs, state or outputs that do not match that callback, or values its components cannot hold
      (``types_of()``, see :func:`attnviz.dashboard.callback_inputs.body_problem`);
    * and, from inside a callback, :class:`attnviz.dashboard.callback_inputs.InputRefusedError` raised by a tab's
      validator (re-raised by the app's ``on_error`` handler: :func:`attnviz.dashboard.observability.callback_error`).

    The reason is kept in ``flask.g.attnviz_refused`` for the callback log's one line (no traceback).
    The body size is limited by Flask's ``MAX_CONTENT_LENGTH`` (413).
    """
    import flask

    from attnviz.dashboard.callback_inputs import InputRefusedError, body_problem

    def refuse(message: str) -> Any:
        flask.g.attnviz_refused = message
        response = flask.jsonify(error=message)
        response.status_code = 400
        return response

    @server.errorhandler(InputRefusedError)
    def _refused_in_callback(exc: InputRefusedError) -> Any:
        return refuse(str(exc).splitlines()[0][:300] if str(exc) else "input refused")

    @server.before_request
    def _check_callback_body() -> Any:
        request = flask.request
        if request.method != "POST" or not request.path.endswith(callback_path):
            return None
        if request.is_json and json_depth(request.get_data(cache=True)) > MAX_JSON_DEPTH:
            flask.g.attnviz_unparsed = True  # nobody parses it after this (the callback log neither)
            return refuse(f"not a Dash callback request: JSON nested deeper than {MAX_JSON_DEPTH} levels")
        body = request.get_json(silent=True)
        ok = (isinstance(body, dict) and isinstance(body.get("output"), str) and isinstance(body.get("inputs"), list)
              and isinstance(body.get("state", []), list))
        if not ok:
            return refuse("not a Dash callback request: expected a JSON object with 'output' (text) and 'inputs' "
                          "(list)")
        if callbacks_of is None or not isinstance(body, dict):
            return None
        spec = callbacks_of().get(body["output"])
        if spec is None:
            return refuse(f"unknown callback {body['output'][:80]!r}: reload the page (the app may have changed)")
        problem = body_problem(body, spec, types_of() if types_of is not None else {})
        if problem:
            return refuse(f"bad callback request: {problem}")
        return None


def install_headers(server: Any) -> None:
    """Defensive response headers on every response (no MIME sniffing, no framing by other sites), and a 404
    instead of Dash's 500 for a request of a component file it does not have (``../`` in the path, say)."""
    import flask
    from dash.exceptions import DependencyException

    @server.errorhandler(DependencyException)
    def _not_a_component_file(_exc: Exception) -> Any:
        return flask.Response("not found\n", status=404, mimetype="text/plain")

    @server.after_request
    def _headers(response: Any) -> Any:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response


# --------------------------------------------------------------------------------------------------------
# Stores confined to the data directory
# --------------------------------------------------------------------------------------------------------


def list_stores(data_dir: str | os.PathLike) -> list[str]:
    """Names of the stores (``*.h5`` files at the top of ``data_dir``) a URL may select, sorted.

    A symlink is listed only when it resolves inside the directory.
    """
    root = Path(data_dir).resolve()
    names = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return []
    for entry in entries:
        if entry.suffix != ".h5" or ".tmp-" in entry.name:
            continue
        try:
            target = entry.resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        if target.is_file() and target.is_relative_to(root):
            names.append(entry.name)
    return sorted(names)


def resolve_store(data_dir: str | os.PathLike, name: object) -> Path:
    """The store ``name`` (from a URL's ``store=`` or a callback) inside ``data_dir``, or StoreAccessError.

    Accepted: the bare file name of an ``.h5`` file at the top of ``data_dir`` (what :func:`list_stores` lists).
    Refused: anything else (not a ``str``, empty, a path with ``/`` or ``\\``, so no absolute path and no
    ``..``; NUL bytes; over 255 characters), and a symlink that resolves outside ``data_dir``. ``%2e%2e`` is not
    decoded here: the browser decodes the URL once, and a literal ``%2e%2e`` is a file name that does not exist.
    """
    root = Path(data_dir).resolve()
    shown = repr(name)[:80]
    if not isinstance(name, str) or not name.strip():
        raise StoreAccessError(f"store {shown} is not a store name: pick one from the Store menu")
    if len(name) > MAX_STORE_NAME or "\0" in name:
        raise StoreAccessError(f"store {shown} is not a valid store name: pick one from the Store menu")
    candidate = Path(name)
    if "/" in name or "\\" in name or name in (".", "..") or candidate.suffix != ".h5":
        raise StoreAccessError(f"store {shown} is not a store of the data directory: pick one from the Store menu "
                               f"({', '.join(list_stores(root)) or 'none'})")
    try:
        target = (root / candidate).resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise StoreAccessError(f"store {shown} does not exist in the data directory: pick one from the Store "
                               f"menu ({', '.join(list_stores(root)) or 'none'})") from exc
    if not target.is_relative_to(root) or not target.is_file():
        raise StoreAccessError(f"store {shown} leads outside the data directory (symlink?): pick one from the "
                               "Store menu")
    return target


def is_within(data_dir: str | os.PathLike, path: str | os.PathLike) -> bool:
    """Whether ``path`` (after resolving symlinks) lies inside ``data_dir``."""
    try:
        return Path(path).resolve().is_relative_to(Path(data_dir).resolve())
    except (OSError, RuntimeError, ValueError):
        return False


def _main(argv: list[str]) -> int:
    """``python -m attnviz.dashboard.security hash``: print a werkzeug hash of a password read from the terminal."""
    import getpass

    from werkzeug.security import generate_password_hash

    if argv[1:] != ["hash"]:
        print("usage: python -m attnviz.dashboard.security hash   (prompts for a password, prints user-file hash)")
        return 2
    password = getpass.getpass("password: ")
    if password != getpass.getpass("again: "):
        print("the passwords differ", file=sys.stderr)
        return 1
    print(generate_password_hash(password))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv))
