"""Access control for a dashboard a team shares: users, basic auth, the bind policy, stores confined to the data
directory (path traversal through the URL and the callbacks), the serving path's code, and the gunicorn
deployment (health, JSON callback log, auth challenge, clean shutdown).
"""

from __future__ import annotations

import ast
import base64
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from callback_client import PAYLOAD, PAYLOAD_KEY, URL_REQUEST, callbacks, find, response_props, sync_values
from dash import Input, Output
from dashboard_fixtures import (
    BERT_RUN,
    GPT2_RUN,
    REPO,
    SEQ2SEQ_RUN,
    free_port,
)
from typer.testing import CliRunner

from attnviz.dashboard import data
from attnviz.dashboard.app import LazyServer, create_app
from attnviz.dashboard.example.payload import decode
from attnviz.dashboard.figjson import decode as decode_figure_array
from attnviz.dashboard.observability import APP_ALERT
from attnviz.dashboard.security import (
    AuthConfig,
    SecurityError,
    StoreAccessError,
    basic_credentials,
    check_bind,
    list_stores,
    load_auth,
    resolve_store,
)
from attnviz.dashboard.serve import plan_access
from attnviz.pipeline.cli import app as cli
from attnviz.pipeline.store import StoreReader, StoreWriter

TIMEOUT = 30


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def example_key(run: str, example: int, kind: str = "self") -> dict[str, object]:
    """The key the page sends to ``example-payload`` for all layers of one example's raw attention."""
    return {"run": run, "example": example, "kind": kind, "attn": "raw", "detail": "all"}


def payload_attention(body: bytes | str) -> np.ndarray:
    """The attention ([L, H, Tq, Tk] float32) of an ``example-payload`` response (its error if it has one)."""
    payload = response_props(body)["example-payload"]["data"]
    assert payload["error"] is None, payload["error"]
    return decode(payload["attention"]).astype(np.float32)


# ---- users ----------------------------------------------------------------------------------------------------


def test_users_from_a_file_or_the_environment(tmp_path: Path) -> None:
    from werkzeug.security import generate_password_hash

    users = tmp_path / "users"
    users.write_text(f"# team\nalice:s3cret:with:colons\n\nbob:{generate_password_hash('hunter2')}\n")
    auth = load_auth({"ATTNVIZ_AUTH_FILE": str(users)})
    assert auth is not None and set(auth.users) == {"alice", "bob"} and auth.source == str(users)
    assert auth.check("alice", "s3cret:with:colons") and not auth.check("alice", "s3cret")
    assert auth.check("bob", "hunter2") and not auth.check("bob", "hunter3")
    assert not auth.check("mallory", "s3cret:with:colons")
    assert "s3cret" not in repr(auth)
    inline = load_auth({"ATTNVIZ_USERS": "carol:pw1, dave:pw2"})
    assert inline is not None and inline.check("dave", "pw2") and inline.source == "ATTNVIZ_USERS"
    assert load_auth({}) is None


@pytest.mark.parametrize(("env", "message"), [
    ({"ATTNVIZ_USERS": "alice"}, "entry 1 is not 'user:password'"),
    ({"ATTNVIZ_USERS": "alice:pw,:nouser"}, "entry 2 is not 'user:password'"),
    ({"ATTNVIZ_USERS": "a:1,a:2"}, "user 'a' appears twice"),
    ({"ATTNVIZ_USERS": " , "}, "lists no users"),
    ({"ATTNVIZ_AUTH_FILE": "/nonexistent/users"}, "cannot read ATTNVIZ_AUTH_FILE=/nonexistent/users"),
    ({"ATTNVIZ_AUTH_FILE": "x", "ATTNVIZ_USERS": "a:b"}, "keep only one"),
])
def test_bad_user_configuration_is_one_line_without_the_password(env: dict[str, str], message: str) -> None:
    with pytest.raises(SecurityError) as info:
        load_auth(env)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert "pw" not in str(info.value)


@pytest.mark.parametrize("header", [None, "", "Basic", "Basic !!!", "Basic " + "A" * 5000, "Bearer abc",
                                    "Basic " + base64.b64encode(b"no-colon").decode(),
                                    "Basic " + base64.b64encode(b"\xff\xfe:x").decode()])
def test_malformed_authorization_headers_are_no_credentials(header: str | None) -> None:
    assert basic_credentials(header) is None


# ---- the bind policy ------------------------------------------------------------------------------------------


def test_bind_policy() -> None:
    auth = AuthConfig({"alice": "pw"}, "test")
    check_bind("127.0.0.1", None, no_auth=False, require=False)
    check_bind("::1", None, no_auth=False, require=False)
    check_bind("0.0.0.0", auth, no_auth=False, require=True)
    check_bind("0.0.0.0", None, no_auth=True, require=False)
    with pytest.raises(SecurityError, match="set ATTNVIZ_AUTH_FILE .* or pass --no-auth"):
        check_bind("0.0.0.0", None, no_auth=False, require=False)
    with pytest.raises(SecurityError, match="ATTNVIZ_REQUIRE_AUTH=1 but no users"):
        check_bind("127.0.0.1", None, no_auth=False, require=True)
    with pytest.raises(SecurityError, match="do not pass --no-auth"):
        check_bind("10.0.0.5", auth, no_auth=True, require=True)


def test_plan_access_warnings(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("alice:pw\n")
    users.chmod(0o644)
    auth, notes = plan_access("0.0.0.0", no_auth=False, environ={"ATTNVIZ_AUTH_FILE": str(users)})
    assert auth is not None and any("TLS" in n for n in notes) and any("chmod 600" in n for n in notes)
    auth, notes = plan_access("0.0.0.0", no_auth=True, environ={"ATTNVIZ_AUTH_FILE": str(users)})
    assert auth is None and any("without authentication (--no-auth)" in n for n in notes)
    assert plan_access("127.0.0.1", no_auth=False, environ={}) == (None, [])
    with pytest.raises(SecurityError, match="--debug on 0.0.0.0"):
        plan_access("0.0.0.0", no_auth=True, debug=True, environ={})


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--host", "0.0.0.0"], {}, "binding 0.0.0.0 would let anyone on the network read the store"),
    (["--host", "192.168.1.20"], {}, "or pass --no-auth"),
    (["--host", "0.0.0.0", "--no-auth", "--debug"], {}, "--debug on 0.0.0.0"),
    ([], {"ATTNVIZ_REQUIRE_AUTH": "1"}, "ATTNVIZ_REQUIRE_AUTH=1 but no users"),
    (["--host", "0.0.0.0"], {"ATTNVIZ_USERS": "broken"}, "ATTNVIZ_USERS: entry 1 is not 'user:password'"),
    (["--data-dir", "/nonexistent/dir"], {}, "data directory /nonexistent/dir does not exist"),
])
def test_serve_refuses_an_exposed_bind_with_one_line(
        dashboard_store: Path, monkeypatch: pytest.MonkeyPatch,
        args: list[str], env: dict[str, str], message: str) -> None:
    for name in ("ATTNVIZ_USERS", "ATTNVIZ_AUTH_FILE", "ATTNVIZ_REQUIRE_AUTH"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(cli, ["serve", "--store", str(dashboard_store), *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_passwords_never_go_on_the_command_line() -> None:
    text = CliRunner().invoke(cli, ["serve", "--help"], terminal_width=200).output.lower()
    assert "--host" in text and "--no-auth" in text
    assert "--password" not in text and "--user" not in text and "--auth" not in text.replace("--no-auth", "")


def _serve(store: Path, *args: str, env: dict[str, str]) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    log = store.with_name(f"serve-{port}.log")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ATTNVIZ_")}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "attnviz.pipeline.cli", "serve", "--store", str(store), "--port",
                                 str(port), *args], cwd=REPO, env={**clean, **env}, stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1).read()
            return proc, url, log
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("attnviz serve did not answer")


def _status(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10).status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_serve_on_all_addresses_with_users_and_with_no_auth(dashboard_store: Path) -> None:
    proc, url, log = _serve(dashboard_store, "--host", "0.0.0.0", env={"ATTNVIZ_USERS": "alice:s3cret"})
    try:
        assert _status(url + "/") == 401
        assert _status(url + "/", basic("alice", "wrong")) == 401
        assert _status(url + "/", basic("alice", "s3cret")) == 200
        assert _status(url + "/healthz") == 200
    finally:
        proc.terminate()
        proc.wait(10)
    text = log.read_text()
    assert "users of ATTNVIZ_USERS" in text and "s3cret" not in text

    proc, url, log = _serve(dashboard_store, "--host", "0.0.0.0", "--no-auth", env={})
    try:
        assert _status(url + "/") == 200
    finally:
        proc.terminate()
        proc.wait(10)
    assert "warning: binding 0.0.0.0 without authentication (--no-auth)" in log.read_text()


# ---- auth on every route but /healthz -------------------------------------------------------------------------


def test_auth_covers_page_assets_and_callbacks_but_not_health(dashboard_store: Path) -> None:
    app = create_app(dashboard_store, auth=AuthConfig({"alice": "s3cret"}, "test"))
    client = app.server.test_client()
    cbs = callbacks(client.get("/_dash-dependencies", headers=basic("alice", "s3cret")).json)
    payload = find(cbs, PAYLOAD).payload({PAYLOAD_KEY: example_key(BERT_RUN, 0)})
    scripts = re.findall(r'src="([^"]+)"', client.get("/", headers=basic("alice", "s3cret")).text)
    assert scripts
    for path in ("/", "/_dash-layout", "/_dash-dependencies", scripts[0]):
        resp = client.get(path)
        assert resp.status_code == 401 and resp.headers["WWW-Authenticate"].startswith('Basic realm="attnviz"')
        assert client.get(path, headers=basic("alice", "s3cret")).status_code == 200
    assert client.post("/_dash-update-component", json=payload).status_code == 401
    assert client.post("/_dash-update-component", json=payload, headers=basic("alice", "nope")).status_code == 401
    for header in ("Basic !!!", "Basic", "Digest x"):
        assert client.get("/", headers={"Authorization": header}).status_code == 401
    resp = client.post("/_dash-update-component", json=payload, headers=basic("alice", "s3cret"))
    expected = StoreReader(dashboard_store).attention(BERT_RUN, 0, kind="self")
    np.testing.assert_array_equal(payload_attention(resp.data), expected)
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json["status"] == "ok" and health.json["runs"] == 3


def test_wsgi_entry_enforces_users_and_require_auth(dashboard_store: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from werkzeug.test import Client

    monkeypatch.setenv("ATTNVIZ_STORE", str(dashboard_store))
    monkeypatch.delenv("ATTNVIZ_AUTH_FILE", raising=False)
    monkeypatch.setenv("ATTNVIZ_USERS", "alice:s3cret")
    client = Client(LazyServer())
    assert client.get("/").status_code == 401
    assert client.get("/", headers=basic("alice", "s3cret")).status_code == 200
    monkeypatch.delenv("ATTNVIZ_USERS")
    monkeypatch.setenv("ATTNVIZ_REQUIRE_AUTH", "1")
    resp = Client(LazyServer()).get("/_dash-layout")
    assert resp.status_code == 500 and b"ATTNVIZ_REQUIRE_AUTH=1 but no users" in resp.data
    assert b"run-select" not in resp.data


# ---- stores confined to the data directory --------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(dashboard_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``data/`` with demo.h5 (three runs), second.h5 (the GPT-2 run only), alias.h5 -> second.h5, and
    link.h5 -> ../secret.h5, a store outside the directory."""
    root = tmp_path_factory.mktemp("confined")
    folder = root / "data"
    folder.mkdir()
    for name in ("demo.h5", "second.h5"):
        shutil.copy2(dashboard_store, folder / name)
        shutil.copytree(f"{dashboard_store}.d", folder / f"{name}.d")
    for run in (BERT_RUN, SEQ2SEQ_RUN):
        StoreWriter(folder / "second.h5").delete_run(run)
    shutil.copy2(dashboard_store, root / "secret.h5")
    shutil.copytree(f"{dashboard_store}.d", root / "secret.h5.d")
    (folder / "alias.h5").symlink_to("second.h5")
    (folder / "link.h5").symlink_to("../secret.h5")
    return folder


def test_list_and_resolve_stores(data_dir: Path) -> None:
    assert list_stores(data_dir) == ["alias.h5", "demo.h5", "second.h5"]
    assert resolve_store(data_dir, "second.h5") == (data_dir / "second.h5").resolve()
    assert resolve_store(data_dir, "alias.h5") == (data_dir / "second.h5").resolve()


TRAVERSALS = [
    ("../secret.h5", "is not a store of the data directory"),
    ("%2e%2e/secret.h5", "is not a store of the data directory"),
    ("%2e%2e%2fsecret.h5", "does not exist in the data directory"),
    ("..%2Fsecret.h5", "does not exist in the data directory"),
    ("..", "is not a store of the data directory"),
    ("/etc/passwd", "is not a store of the data directory"),
    ("SECRET_ABS", "is not a store of the data directory"),  # the absolute path of secret.h5
    ("demo.h5/../../secret.h5", "is not a store of the data directory"),
    ("..\\secret.h5", "is not a store of the data directory"),
    ("link.h5", "leads outside the data directory"),
    ("demo.h5.d", "is not a store of the data directory"),
    ("nothere.h5", "does not exist in the data directory"),
    ("", "is not a store name"),
    (12, "is not a store name"),
    (["demo.h5"], "is not a store name"),
    ("a\x00.h5", "is not a valid store name"),
    ("x" * 300 + ".h5", "is not a valid store name"),
]


def _store_param(value: object, data_dir: Path) -> object:
    return str(data_dir.parent / "secret.h5") if value == "SECRET_ABS" else value


@pytest.mark.parametrize(("name", "message"), TRAVERSALS, ids=[f"t{i}" for i in range(len(TRAVERSALS))])
def test_store_traversal_through_the_callbacks_is_refused(data_dir: Path, name: object, message: str) -> None:
    app = create_app(data_dir / "demo.h5")
    client = app.server.test_client()
    cbs = callbacks(client.get("/_dash-dependencies").json)
    store = _store_param(name, data_dir)
    secret = (data_dir.parent / "secret.h5").resolve()
    with pytest.raises(StoreAccessError, match=re.escape(message)):
        resolve_store(data_dir, store)

    sync = find(cbs, "view-state.data")
    body = sync.payload(sync_values(f"?run={BERT_RUN}"), [URL_REQUEST])
    body["attnviz_store"] = store
    props = response_props(client.post("/_dash-update-component", json=body).data)
    assert props["state-alert"]["is_open"] is True and message in props["state-alert"]["children"]
    body = find(cbs, PAYLOAD).payload({PAYLOAD_KEY: example_key(BERT_RUN, 1)})  # the attention itself
    body["attnviz_store"] = store
    resp = client.post("/_dash-update-component", json=body)
    assert resp.status_code == 200, resp.data[:300]
    payload = response_props(resp.data)["example-payload"]["data"]
    assert message in payload["error"] and "attention" not in payload and "q_tokens" not in payload, payload
    for output, dep in (("metrics-panel.children", "metrics-state.data"), ("example-text.children",
                                                                           "example-id.data")):
        body = find(cbs, output).payload({dep: {"run": BERT_RUN, "example": 1}})  # the panels read the store too
        body["attnviz_store"] = store
        resp = client.post("/_dash-update-component", json=body)
        assert resp.status_code == 200 and message in resp.data.decode(), (output, resp.data[:300])
    body = find(cbs, "store-select.options").payload({"url.pathname": "/"})
    body["attnviz_store"] = store
    shown = response_props(client.post("/_dash-update-component", json=body).data)
    assert message in shown["store-path"]["children"] and shown["store-select"]["value"] is None
    body = find(cbs, "store-nav.href").payload({"store-select.value": store})
    resp = client.post("/_dash-update-component", json=body)
    if isinstance(store, list):  # a select sends one value: a list is refused before the callback runs
        assert resp.status_code == 400 and "store-select.value" in resp.json["error"]
    else:
        props = response_props(resp.data)
        assert "store-nav" not in props  # no navigation; a name that is not empty is explained in the app alert
        assert not store or props[APP_ALERT]["is_open"] is True
    assert all(key[1] != str(secret) for key in data._readers), "a store outside the data dir was opened"


def test_a_store_of_the_data_dir_is_served_by_name(data_dir: Path) -> None:
    app = create_app(data_dir / "demo.h5")
    client = app.server.test_client()
    cbs = callbacks(client.get("/_dash-dependencies").json)
    sync = find(cbs, "view-state.data")
    body = sync.payload(sync_values(f"?run={BERT_RUN}"), [URL_REQUEST])
    body["attnviz_store"] = "alias.h5"
    props = response_props(client.post("/_dash-update-component", json=body).data)
    assert [o["value"] for o in props["run-select"]["options"]] == [GPT2_RUN]
    assert f"run '{BERT_RUN}' is not in this store: showing '{GPT2_RUN}'" in props["state-alert"]["children"]
    body = find(cbs, PAYLOAD).payload({PAYLOAD_KEY: example_key(GPT2_RUN, 2)}, store="alias.h5")
    np.testing.assert_array_equal(payload_attention(client.post("/_dash-update-component", json=body).data),
                                  StoreReader(data_dir / "second.h5").attention(GPT2_RUN, 2))
    body = find(cbs, "store-nav.href").payload({"store-select.value": "second.h5"})
    assert response_props(client.post("/_dash-update-component", json=body).data)["store-nav"]["href"] == \
        "/?store=second.h5"
    body = find(cbs, "store-select.options").payload({"url.pathname": "/"})
    props = response_props(client.post("/_dash-update-component", json=body).data)
    assert [o["value"] for o in props["store-select"]["options"]] == ["alias.h5", "demo.h5", "second.h5"]
    assert props["store-select"]["value"] == "demo.h5"


@pytest.mark.parametrize("path", ["/assets/../pipeline/store/reader.py", "/assets/%2e%2e/pipeline/store/reader.py",
                                  "/assets/..%2fpipeline%2fstore%2freader.py",
                                  "/_dash-component-suites/dash/../../../pipeline/store/reader.py",
                                  "/_dash-component-suites/dash/%2e%2e/%2e%2e/%2e%2e/pipeline/store/reader.py",
                                  "/_dash-component-suites/..%2f..%2fpipeline/store/reader.py",
                                  "/?store=../secret.h5", "/?store=%2e%2e%2fsecret.h5"])
def test_no_file_outside_the_app_is_served_through_a_url(data_dir: Path, path: str) -> None:
    client = create_app(data_dir / "demo.h5").server.test_client()
    resp = client.get(path)
    assert b"class StoreReader" not in resp.data and b"attnviz-store" not in resp.data
    assert resp.status_code in (200, 400, 404)
    if resp.status_code == 200:  # the page itself: static, it names no store
        assert b"_dash-renderer" in resp.data and b"secret" not in resp.data


# ---- requests the server refuses on purpose: a 400, one rate-limited log line, never a traceback ----------------


class Refusals:
    """An app on the demo store, its test client, and every log record it writes (caplog, all loggers)."""

    def __init__(self, store: Path, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.INFO)
        self.caplog = caplog
        self.app = create_app(store)
        self.client = self.app.server.test_client()
        self.deps = self.client.get("/_dash-dependencies").json
        self.cbs = callbacks(self.deps)
        caplog.clear()

    def post(self, body: object) -> object:
        if isinstance(body, bytes):
            return self.client.post("/_dash-update-component", data=body, content_type="application/json")
        return self.client.post("/_dash-update-component", json=body)

    def refused(self, body: object, reason: str = "") -> None:
        """``body`` gets a 400 with a one-line reason, and the log has no traceback."""
        self.caplog.clear()
        resp = self.post(body)
        assert resp.status_code == 400, (resp.status_code, resp.data[:300])
        assert reason in resp.json["error"] and "\n" not in resp.json["error"], resp.json
        assert "Traceback" not in self.caplog.text, self.caplog.text[-3000:]
        assert not [r for r in self.caplog.records if r.exc_info], self.caplog.text[-3000:]
        lines = [r for r in self.caplog.records if getattr(r, "fields", {}).get("event") == "callback"]
        assert len(lines) == 1 and lines[0].fields["http"] == 400 and lines[0].fields["reason"], lines

    def payload_body(self, key: object = None) -> dict:
        """The request the page sends for an example's data (``key``: see ``example_key``)."""
        return find(self.cbs, PAYLOAD).payload({PAYLOAD_KEY: key})


@pytest.fixture
def refusals(dashboard_store: Path, caplog: pytest.LogCaptureFixture) -> Refusals:
    return Refusals(dashboard_store, caplog)


def test_deeply_nested_json_is_a_400_not_a_recursion_error(refusals: Refusals) -> None:
    refusals.refused(b"[" * 100_000 + b"]" * 100_000, "nested deeper than")
    body = json.dumps(refusals.payload_body({"run": "__DEEP__"})).replace('"__DEEP__"', "[" * 5000 + "]" * 5000)
    refusals.refused(body.encode(), "nested deeper than")
    refusals.refused(b'{"output": "x", "inputs": [' + b"{" * 3000, "nested deeper than")  # unterminated too
    assert refusals.post(refusals.payload_body(example_key(BERT_RUN, 0))).status_code == 200


@pytest.mark.parametrize("entries", [
    {"inputs": [{"id": "example-payload-key", "value": None}]},  # no property
    {"inputs": [{"property": "data", "value": None}]},  # no id
    {"inputs": ["example-payload-key.data"]},
    {"inputs": [[1, 2]]},
    {"inputs": []},  # fewer entries than the callback has
    {"inputs": [{"id": "example-payload-key", "property": "data"}] * 2},
    {"inputs": [{"id": "view-state", "property": "data", "value": {"run": BERT_RUN}}]},  # another callback's input
    {"inputs": [{"id": "url", "property": "search", "value": "?run=x"}]},
    {"state": [{"id": "example-payload-key", "value": None}]},  # the callback has no state
    {"changedPropIds": [["example-payload-key.data"]]},
    {"outputs": [{"id": "example-payload"}, {"id": "example-payload", "property": "data"}]},
    {"outputs": 7},
], ids=lambda e: json.dumps(e)[:40])
def test_inputs_that_are_not_the_callbacks_are_a_400(refusals: Refusals, entries: dict) -> None:
    refusals.refused({**refusals.payload_body(example_key(BERT_RUN, 0)), **entries}, "bad callback request")


def test_pattern_matching_entries_are_checked_not_refused(refusals: Refusals) -> None:
    """``ALL`` inputs arrive as a list of ``{"id": {…}, "property", "value"}`` entries (the corpus filters)."""
    cb = find(refusals.cbs, "corpus-diff.figure")
    body = cb.payload({"tabs.value": "corpus", "run-select.value": BERT_RUN})
    fields = [i for i, d in enumerate(cb.inputs) if isinstance(d["id"], (dict, str)) and "corpus-field" in str(d["id"])]
    assert fields
    body["inputs"][fields[0]] = [{"id": {"type": "corpus-field", "field": "label"}, "property": "value",
                                  "value": ["a"]}]
    assert refusals.post(body).status_code in (200, 204)
    body["inputs"][fields[0]] = [{"id": "corpus-field", "property": "value", "value": ["a"]}]
    refusals.refused(body, "bad callback request")


def test_client_side_and_unknown_callbacks_are_a_400(dashboard_store: Path, caplog: pytest.LogCaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from callback_client import Callback

    from attnviz.dashboard.observability import REFUSAL_RATE_ENV

    monkeypatch.setenv(REFUSAL_RATE_ENV, "1000")  # one log line for each of the many client-side callbacks
    refusals = Refusals(dashboard_store, caplog)
    clientside = [Callback(d) for d in refusals.deps if d.get("clientside_function") is not None]
    assert len(clientside) >= 2  # Save PNG/SVG and the playground session
    for cb in clientside:
        refusals.refused(cb.payload({}), "unknown callback")
    refusals.refused({**refusals.payload_body(), "output": "no-such-graph.figure"}, "unknown callback")


GARBAGE_VALUES = [
    ("example-payload.data", "example-payload-key.data", 12345),  # a store the page wrote, sent as a number
    ("example-payload.data", "example-payload-key.data", "a string"),
    ("example-payload.data", "example-payload-key.data", [BERT_RUN, 0]),
    ("metrics-panel.children", "metrics-state.data", 12345),  # the open panel's copy of the view state
    ("debug-view.figure", "debug-state.data", "a string"),
    ("embeddings-view.figure", "embeddings-state.data", [1, 2]),
    ("example-text.children", "example-id.data", 7),
    ("view-state.data", "example-next.n_clicks", "many"),  # clicks are a number
    ("view-state.data", "run-select.value", {"$ne": None}),  # a select without multi sends one value
    ("view-state.data", "example-index.value", [1]),  # a number field sends a number
    ("view-state.data", "layer-select.value", {"$gt": 1}),  # a state of the sync callback, checked the same
    ("view-state.data", "view-state.data", 12345),  # the sync callback's own view state, sent back as a number
    ("corpus-head.data", "corpus-heatmap-a.clickData", {"points": "x"}),
    ("store-nav.href", "store-select.value", [1, 2]),
    ("example-search-results.options", "example-search.value", 5),  # a text field sends text
    ("pg-add-request.data", "pg-result.data", {"id": 3}),  # not a playground result summary
    ("pg-summary.children", "pg-result.data", 12345),
    ("pg-layer.value@", "pg-modelview.clickData", {"points": [None]}),
]


@pytest.mark.parametrize(("output", "dep", "value"), GARBAGE_VALUES, ids=lambda v: json.dumps(v)[:30])
def test_garbage_values_are_a_400_without_a_traceback(refusals: Refusals, output: str, dep: str,
                                                      value: object) -> None:
    cb = find(refusals.cbs, output)
    inputs = {f"{d['id']}.{d['property']}" for d in cb.inputs}
    body = cb.payload({dep: value}, [dep] if dep in inputs else None)  # a state is sent with the first input
    refusals.refused(body)


@pytest.mark.parametrize("request_value", [["?run=x"], "?run=x", 12345, {"search": ["?run=x"]}, {"at": 1}])
def test_crafted_url_request_is_the_default_selection_not_a_500(refusals: Refusals, request_value: object) -> None:
    """``example-url-request`` (the page writes ``{"search", "at"}`` there) with anything else: the sync callback
    resolves the default selection (as for a page opened without a query string), no error, no traceback.
    (Unlike the view state and the payload key it is not refused with a 400: see ``sync._requested_search``.)"""
    sync = find(refusals.cbs, "view-state.data")
    resp = refusals.post(sync.payload({URL_REQUEST: request_value}, [URL_REQUEST]))
    assert resp.status_code == 200, resp.data[:300]
    props = response_props(resp.data)
    assert not props.get(APP_ALERT, {}).get("is_open"), props.get(APP_ALERT)
    state = props["view-state"]["data"]
    assert state["run"] == props["run-select"]["value"] and state["example"] == 0
    assert "Traceback" not in refusals.caplog.text and not [r for r in refusals.caplog.records if r.exc_info]


def test_every_callback_refuses_garbage_in_every_input_without_a_traceback(refusals: Refusals) -> None:
    """Each input and state of each server-side callback (background ones excepted: they start a job) set to
    values of the wrong type or shape: a 400, a figure message or no update, never a 500 or a traceback."""
    background = {key for key, spec in refusals.app.callback_map.items() if spec.get("background")}
    garbage = [12345, "a string", [1, [2]], {"points": [5], "run": [1]}, True]
    seen = 0
    for cb in refusals.cbs:
        if cb.key in background:
            continue
        for dep in [d for d in cb.inputs + cb.state if isinstance(d["id"], str)]:
            name = f"{dep['id']}.{dep['property']}"
            for value in garbage:
                resp = refusals.post(cb.payload({name: value}, [name]))
                assert resp.status_code in (200, 204, 400), (cb.key, name, value, resp.data[:300])
                seen += 1
    assert seen > 300
    assert "Traceback" not in refusals.caplog.text, refusals.caplog.text[-3000:]
    assert not [r for r in refusals.caplog.records if r.exc_info]


def test_a_flood_of_refused_requests_writes_a_bounded_number_of_lines(refusals: Refusals) -> None:
    """500 crafted requests in a burst: every one a 400; at most 5 log lines a second (the rest counted as
    ``suppressed`` in the next line written), no traceback; the server then serves real data."""
    bodies: list[object] = [b"[" * 10_000, refusals.payload_body(12345), {**refusals.payload_body(), "inputs": [{}]},
                            {**refusals.payload_body(), "output": "save-status.data"}]
    start = time.monotonic()
    for i in range(500):
        assert refusals.post(bodies[i % len(bodies)]).status_code == 400
    elapsed = time.monotonic() - start
    records = refusals.caplog.records
    assert "Traceback" not in refusals.caplog.text and not [r for r in records if r.exc_info]
    assert len(records) <= 5 * (int(elapsed) + 2), (len(records), elapsed)
    lines = [r.fields for r in records if getattr(r, "fields", {}).get("event") == "callback"]
    assert lines and all(f["http"] == 400 and f["reason"] for f in lines)
    assert len(lines) + sum(f.get("suppressed", 0) for f in lines) <= 500
    if elapsed > 1.0:  # a later window reports what the first one suppressed
        assert any(f.get("suppressed") for f in lines)
    ok = refusals.post(refusals.payload_body(example_key(BERT_RUN, 1)))
    np.testing.assert_array_equal(payload_attention(ok.data),
                                  StoreReader(refusals.app.server.config["ATTNVIZ_STORE"]).attention(BERT_RUN, 1))


def test_rate_limit_counts_what_it_suppressed() -> None:
    from attnviz.dashboard.observability import RateLimit

    now = [0.0]
    limit = RateLimit(3, clock=lambda: now[0])
    assert [limit.admit() for _ in range(5)] == [(True, 0)] * 3 + [(False, 0)] * 2
    now[0] = 1.5
    assert limit.admit() == (True, 2) and limit.admit() == (True, 0)


def test_a_real_bug_in_a_callback_still_logs_its_traceback(dashboard_store: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """Only input refused on purpose goes without a traceback: an unexpected exception on valid input is logged
    with it (and shown in the app alert, as before)."""
    app = create_app(dashboard_store)

    @app.callback(Output("save-status", "data", allow_duplicate=True), Input("reset-view", "n_clicks"),
                  prevent_initial_call=True)
    def _broken(_clicks: object) -> None:
        raise ZeroDivisionError("a bug")

    client = app.server.test_client()
    cb = find(callbacks(client.get("/_dash-dependencies").json), "save-status.data@")
    caplog.set_level(logging.INFO)
    resp = client.post("/_dash-update-component", json=cb.payload({"reset-view.n_clicks": 1}))
    assert resp.status_code == 200 and response_props(resp.data)[APP_ALERT]["is_open"] is True
    assert "ZeroDivisionError: a bug" in caplog.text and "Traceback" in caplog.text


# ---- the serving path's code ----------------------------------------------------------------------------------


def test_no_pickle_in_the_serving_path() -> None:
    files = [*sorted((REPO / "dashboard").rglob("*.py")), *sorted((REPO / "pipeline" / "store").glob("*.py"))]
    assert len(files) > 10
    offenders = [f"{p.relative_to(REPO)}: {line.strip()}" for p in files
                 for line in p.read_text().splitlines()
                 if re.search(r"\bimport (c)?pickle\b|\bpickle\.loads?\b|\bfrom (c)?pickle import", line)]
    assert offenders == []


def test_remote_code_only_where_a_model_info_file_asks() -> None:
    from attnviz.pipeline.models.info import ModelInfo, known_models, load_model_info_file

    tree = ast.parse((REPO / "pipeline" / "models" / "loading.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
             and n.func.attr in ("from_pretrained", "from_config")]
    assert calls
    passed = []
    for call in calls:
        for kw in call.keywords:
            if kw.arg == "trust_remote_code":
                assert ast.unparse(kw.value) == "info.trust_remote_code", ast.unparse(call)
                passed.append(call)
            if kw.arg == "use_safetensors":  # None: safetensors when the checkpoint has them; never False
                assert ast.unparse(kw.value) in ("None", "True"), ast.unparse(call)
            assert kw.arg is not None or "trust_remote_code" not in ast.unparse(kw.value), ast.unparse(call)
    assert len(passed) >= 3  # tokenizers, the pretrained model, its config
    assert ModelInfo.model_fields["trust_remote_code"].default is False
    shipped = known_models()
    assert len(shipped) >= 5
    for name, path in shipped.items():
        assert load_model_info_file(path).trust_remote_code is False, name
        assert "trust_remote_code: true" not in path.read_text().lower(), name


# ---- gunicorn with the deployment config ----------------------------------------------------------------------


def _gunicorn(store: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ATTNVIZ_")}
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py",
                                 "attnviz.dashboard.app:server"], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                env={**clean, "ATTNVIZ_STORE": str(store), "ATTNVIZ_WORKERS": "2", **env})


def _json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
    return out


@pytest.mark.slow
def test_gunicorn_config_serves_health_callbacks_auth_and_stops_cleanly(dashboard_store: Path,
                                                                        tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "gunicorn.log"
    proc = _gunicorn(dashboard_store, {"ATTNVIZ_BIND": f"127.0.0.1:{port}", "ATTNVIZ_USERS": "alice:s3cret"}, log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        health = None
        while time.monotonic() < deadline and health is None:
            assert proc.poll() is None, log.read_text()
            try:
                health = json.loads(urllib.request.urlopen(url + "/healthz", timeout=2).read())
            except OSError:
                time.sleep(0.3)
        assert health is not None, log.read_text()
        assert health["status"] == "ok" and health["runs"] == 3 and health["store"] == str(dashboard_store)
        assert health["pid"] != proc.pid  # answered by a worker, not the master

        resp = None
        try:
            urllib.request.urlopen(url + "/", timeout=10)
        except urllib.error.HTTPError as exc:
            resp = exc
        assert resp is not None and resp.code == 401 and resp.headers["WWW-Authenticate"].startswith("Basic")
        assert _status(url + "/", basic("alice", "s3cret")) == 200

        deps = json.loads(urllib.request.urlopen(urllib.request.Request(
            url + "/_dash-dependencies", headers=basic("alice", "s3cret")), timeout=10).read())
        payload = find(callbacks(deps), PAYLOAD).payload({PAYLOAD_KEY: example_key(SEQ2SEQ_RUN, 1, "cross")})
        request = urllib.request.Request(url + "/_dash-update-component", data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json", **basic("alice", "s3cret")})
        with urllib.request.urlopen(request, timeout=10) as r:
            assert "app;dur=" in r.headers["Server-Timing"]
            attention = payload_attention(r.read())
        np.testing.assert_array_equal(attention, StoreReader(dashboard_store).attention(SEQ2SEQ_RUN, 1, kind="cross"))

        def callback_line() -> dict | None:
            return next((r for r in _json_lines(log.read_text()) if r.get("event") == "callback"
                         and r.get("output", "").startswith(PAYLOAD) and r.get("status") == "ok"), None)

        deadline = time.monotonic() + 10
        while callback_line() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        line = callback_line()
        assert line is not None, log.read_text()[-3000:]
        assert line["http"] == 200 and line["ms"] > 0 and line["pid"] != proc.pid and line["user"] == "alice"
        access = [r for r in _json_lines(log.read_text()) if r.get("event") == "access"]
        assert any(r["path"] == "/healthz" and r["status"] == 200 for r in access)
        assert any(r["path"] == "/" and r["status"] == 401 for r in access)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(40)
    text = log.read_text()
    assert code == 0, text[-2000:]
    assert "Shutting down" in text and "Traceback" not in text and "s3cret" not in text


@pytest.mark.parametrize(("env", "message"), [
    ({"ATTNVIZ_BIND": "0.0.0.0:PORT"}, "binding 0.0.0.0 would let anyone on the network read the store"),
    ({"ATTNVIZ_REQUIRE_AUTH": "1"}, "ATTNVIZ_REQUIRE_AUTH=1 but no users"),
    ({"ATTNVIZ_STORE": "/nonexistent.h5"}, "ATTNVIZ_STORE=/nonexistent.h5 is not a file"),
])
def test_gunicorn_refuses_to_start_on_an_unsafe_configuration(dashboard_store: Path, tmp_path: Path,
                                                              env: dict[str, str], message: str) -> None:
    port = str(free_port())
    env = {"ATTNVIZ_BIND": f"127.0.0.1:{port}", **{k: v.replace("PORT", port) for k, v in env.items()}}
    log = tmp_path / "gunicorn.log"
    proc = _gunicorn(dashboard_store, env, log)
    try:
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert code != 0 and f"attnviz: {message}" in text, text[-2000:]
    assert "Booting worker" not in text


# ---- the Store menu and ?store= in a browser -------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.usefixtures("headless")  # before dash_duo starts its browser
def test_browser_store_parameter_stays_in_the_url_and_traversal_is_refused(dash_duo,
                                                                           data_dir: Path) -> None:
    from urllib.parse import parse_qs, urlsplit

    from dash.testing.wait import until
    from dashboard_fixtures import start_live_server
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.select import Select

    server = start_live_server(data_dir / "demo.h5")
    try:
        dash_duo.server_url = server.url

        def options(select_id: str) -> list[str]:
            try:
                return [o.get_attribute("value") for o in Select(dash_duo.find_element(f"#{select_id}")).options
                        if o.get_attribute("value")]
            except StaleElementReferenceException:  # the page reloaded while we read it: read again
                return []

        def query() -> dict[str, list[str]]:
            return parse_qs(urlsplit(dash_duo.driver.current_url).query)

        def matrix_is(expected: np.ndarray) -> bool:
            raw = dash_duo.driver.execute_script(
                "const gd = document.querySelector('#attn-matrix .js-plotly-plot');"
                "return gd && gd.data && gd.data[0] ? JSON.stringify(gd.data[0].z, "
                "(k, v) => ArrayBuffer.isView(v) ? Array.from(v) : v) : null;")
            z = json.loads(raw) if raw else None
            if z is None:
                return False
            z = decode_figure_array(z) if isinstance(z, dict) else np.asarray(z, dtype=np.float32)
            return z.shape == expected.shape and np.array_equal(z, expected)

        def alert_text() -> str:  # the alert is re-rendered as it opens and closes: read it by id each time
            return dash_duo.driver.execute_script(
                "const e = document.getElementById('state-alert'); return e ? e.textContent : '';") or ""

        second = StoreReader(data_dir / "second.h5")
        dash_duo.driver.get(f"{server.url}/?store=second.h5&run={GPT2_RUN}&example=2&layer=1&head=3")
        until(lambda: options("run-select") == [GPT2_RUN], timeout=TIMEOUT)
        until(lambda: matrix_is(second.attention(GPT2_RUN, 2, 1, 3)), timeout=TIMEOUT)
        assert dash_duo.find_element(f"#{'store-select'}").get_attribute("value") == "second.h5"
        assert options("store-select") == ["alias.h5", "demo.h5", "second.h5"]  # never link.h5

        Select(dash_duo.find_element("#head-select")).select_by_value("1")
        until(lambda: query().get("head") == ["1"], timeout=TIMEOUT)
        assert query()["store"] == ["second.h5"]  # the callback's new query string kept the store
        until(lambda: matrix_is(second.attention(GPT2_RUN, 2, 1, 1)), timeout=TIMEOUT)
        dash_duo.driver.get(dash_duo.driver.current_url)  # a shared link opens the same store
        until(lambda: options("run-select") == [GPT2_RUN], timeout=TIMEOUT)
        until(lambda: matrix_is(second.attention(GPT2_RUN, 2, 1, 1)), timeout=TIMEOUT)

        Select(dash_duo.find_element("#store-select")).select_by_value("demo.h5")  # reloads on the other store
        until(lambda: len(options("run-select")) == 3, timeout=TIMEOUT)
        assert "store" not in query()

        for bad, message in (("..%2Fsecret.h5", "is not a store of the data directory"),
                             ("link.h5", "leads outside the data directory"),
                             ("%252e%252e%252fsecret.h5", "does not exist in the data directory")):
            dash_duo.driver.get(f"{server.url}/?store={bad}&run={BERT_RUN}")
            until(lambda m=message: m in alert_text(), timeout=TIMEOUT, msg=f"{bad}: alert {alert_text()!r}")
            until(lambda m=message: m in dash_duo.find_element("#store-path").get_attribute("textContent"),
                  timeout=TIMEOUT, msg=f"{bad}: header {dash_duo.find_element('#store-path').text!r}")
            assert options("run-select") == []
        assert "Traceback" not in dash_duo.find_element("body").text
        secret = str((data_dir.parent / "secret.h5").resolve())
        assert secret not in Path(f"/proc/{server.process.pid}/maps").read_text()
    finally:
        server.process.terminate()
        server.process.wait(10)
