"""The Corpus tab when a shard goes missing or is damaged while the page is open.

The page must say so in one line (the tab's alert and the figures' messages: which shard, and the
``attnviz verify --store S --repair`` to run), no callback may fail (no 500, nothing in the app-wide error
alert, no error line in the server's callback log), the rest of the page keeps working, and once the shard is
back the next interaction draws the data again.

Every Corpus callback that reads the store is called through Flask's test client with the body the browser
sends (``tests/callback_client.py``); one browser test (headless Chromium via dash_duo, against a real
``attnviz serve`` process) drives a deleted, then a damaged, then a restored shard. Run with ``pytest
--headless`` (this module also forces it).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from browser_helpers import TIMEOUT, array, graph, message, wait_figure
from callback_client import callbacks, find, message_of, response_props
from dash.testing.wait import until
from dashboard_fixtures import LiveServer, start_live_server
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from store_helpers import write_shard
from synthetic import synthetic_examples, synthetic_meta

from attnviz.dashboard.app import create_app
from attnviz.dashboard.corpus import data as corpus_data
from attnviz.dashboard.observability import APP_ALERT
from attnviz.pipeline.metrics import METRICS
from attnviz.pipeline.precompute.analyze import analyze
from attnviz.pipeline.store import StoreReader, StoreWriter, analysis_path, shard_dir

RUN = "pat"
RUN_B = "other"  #: the same inputs in one shard, never damaged (run B of the comparison views)
N = 40
PATTERNS = [["previous", "broad", "heterogeneous"], ["sep", "next", "self"]]


@pytest.fixture(scope="module")
def _headless(pytestconfig: pytest.Config) -> None:
    """dash_duo reads --headless from the command line; there is no display here, so force it."""
    pytestconfig.option.headless = True


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A private store: a synthetic run of two shards (examples 0..19 and 20..39), and run B."""
    path = tmp_path / "data" / "corpus.h5"
    path.parent.mkdir()
    writer = StoreWriter(path)
    writer.begin_run(RUN, synthetic_meta(2, 3, N), fingerprint_keys=[])
    for start in (0, N // 2):
        write_shard(writer, RUN, start, synthetic_examples(PATTERNS, N // 2, start=start, seed=3))
    writer.begin_run(RUN_B, synthetic_meta(2, 3, N), fingerprint_keys=[])
    write_shard(writer, RUN_B, 0, synthetic_examples(PATTERNS, N, seed=3))
    return path


@pytest.fixture
def server(store: Path):
    live = start_live_server(store)
    try:
        yield live
    finally:
        live.process.terminate()
        live.process.wait(10)


# ---- every Corpus callback that reads the store, through the test client -----------------------------------

#: an output of each Corpus callback that reads the store -> its view (error slot)
READING_CALLBACKS = {
    "corpus-run-b.options": "runs", "corpus-length.min": "filters", "corpus-heatmap-a.figure": "heatmaps",
    "corpus-diff.figure": "difference", "corpus-profile.figure": "profile", "corpus-head-table.rowData": "table",
    "corpus-patterns-a.figure": "patterns", "corpus-head-title.children": "drill",
    "corpus-similarity-a.figure": "analysis",
}


class CorpusPage:
    """The app in this process and its test client, with the values the Corpus tab's controls hold."""

    def __init__(self, store: Path) -> None:
        corpus_data.clear_caches()
        self.app = create_app(store)
        self.client = self.app.server.test_client()
        self.cbs = callbacks(self.client.get("/_dash-dependencies").json)

    def call(self, output: str, metric: str = "entropy", run_b: str | None = RUN_B) -> tuple[dict, str]:
        """Call the callback that writes ``output``: (its response's props, the message in its error slot)."""
        values = {"tabs.value": "corpus", "run-select.value": RUN, "corpus-run-b.value": run_b,
                  "corpus-kind.value": "self", "corpus-metric.value": metric, "corpus-agg.value": "mean",
                  "corpus-truncated.value": "any", "corpus-head.data": {"layer": 1, "head": 2}}
        resp = self.client.post("/_dash-update-component", json=find(self.cbs, output).payload(values))
        assert resp.status_code == 200, (output, resp.status_code, resp.data[:300])
        props = response_props(resp.data)
        assert APP_ALERT not in props, (output, props.get(APP_ALERT))  # nothing the tab did not expect
        slot = f'"view":"{READING_CALLBACKS[output]}"'
        errors = [v["data"] for k, v in props.items() if slot in k.replace(" ", "")]
        assert len(errors) == 1, (output, list(props))
        return props, errors[0]


@pytest.mark.parametrize("fault", ["missing", "garbage", "without-dataset"])
def test_every_corpus_callback_says_which_shard_in_one_line(store: Path, fault: str) -> None:
    page = CorpusPage(store)
    shard = shard_dir(store, RUN) / StoreReader(store).run_info(RUN).shards[1].file
    saved = shard.read_bytes()
    if fault == "missing":
        shard.unlink()
    elif fault == "garbage":
        put(shard, np.random.default_rng(1).bytes(len(saved)))
    else:
        import h5py

        with h5py.File(shard, "r+") as f:
            for name in ("example/meta_json", "metrics/self/entropy"):
                del f[name]
    said = "is missing" if fault == "missing" else "is damaged"
    for output, view in READING_CALLBACKS.items():
        props, error = page.call(output)
        if view in ("runs", "analysis"):  # the index and analysis.h5 only: no shard read
            assert error == "", (output, error)
            continue
        assert error.startswith(f"shard {shard.name} of run '{RUN}' {said}"), (output, error)
        assert "\n" not in error and f"attnviz verify --store {store} --repair" in error, (output, error)
        figures = [v["figure"] for v in props.values() if "figure" in v]
        assert all(message_of(f) == error for f in figures), output

    put(shard, saved)  # restored: every view reads again (nothing failed was cached)
    for output in READING_CALLBACKS:
        props, error = page.call(output)
        assert error == "", (output, error)
        assert all(message_of(v["figure"]) == "" for k, v in props.items()
                   if "figure" in v and k in ("corpus-heatmap-a", "corpus-profile")), output
    heat = page.call("corpus-heatmap-a.figure")[0]["corpus-heatmap-a"]["figure"]
    assert array(heat["data"][0]["z"]).shape == (2, 3)


def test_damaged_analysis_file_is_one_line_in_the_analysis_views(store: Path) -> None:
    analyze(store, RUN, max_offset=3, workers=0)
    page = CorpusPage(store)
    props, error = page.call("corpus-similarity-a.figure")
    assert error == "" and message_of(props["corpus-similarity-a"]["figure"]) == ""
    put(analysis_path(store, RUN), b"not an HDF5 file" * 100)
    props, error = page.call("corpus-similarity-a.figure")
    assert "analysis.h5 is unreadable" in error and "rerun 'attnviz analyze'" in error and "\n" not in error
    assert message_of(props["corpus-similarity-a"]["figure"]) == error
    props, error = page.call("corpus-heatmap-a.figure")  # the views that do not need it still draw
    assert error == "" and message_of(props["corpus-heatmap-a"]["figure"]) == ""


# ---- the same faults in a browser ------------------------------------------------------------------------------


def label(metric: str) -> str:
    """The metric dropdown's text for a metric."""
    return f"{METRICS[metric].label} ({METRICS[metric].unit})"


def mean_heatmap(reader: StoreReader, metric: str) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(reader.metrics(RUN, metric), axis=0).astype(np.float32)


def shows(expected: np.ndarray):
    def check(fig: dict) -> bool:
        z = array(fig["data"][0]["z"])
        return z.shape == expected.shape and np.allclose(z, expected, rtol=1e-5, atol=1e-6, equal_nan=True)

    return check


def put(path: Path, data: bytes) -> None:
    """Replace a file the way tools do (a new file moved into place). An in-place rewrite would not do: the
    server's Example tab may hold the shard open, and HDF5 then shares that open file with any new open."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def alert_text(dash_duo, cid: str) -> str:
    """The text of an alert, "" while it is closed (a closed dbc.Alert is not in the page); read again when the
    alert was redrawn between finding it and reading it."""
    for _ in range(5):
        found = dash_duo.driver.find_elements(By.ID, cid)
        try:
            return found[0].text if found and found[0].is_displayed() else ""
        except StaleElementReferenceException:
            continue
    return ""


def callback_errors(server: LiveServer) -> list[dict]:
    """Callback log lines of the server that report an error or a 5xx."""
    out = []
    for line in server.log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "callback" and (entry.get("status") == "error" or entry.get("http", 0) >= 500):
            out.append(entry)
    return out


def assert_no_callback_failed(dash_duo, server: LiveServer) -> None:
    assert alert_text(dash_duo, "app-alert") == "", "an unexpected callback error reached the app alert"
    assert callback_errors(server) == []
    severe = [e for e in dash_duo.get_logs() or [] if e.get("level") == "SEVERE"]
    assert not [e for e in severe if "500" in e.get("message", "")], severe
    assert "Traceback" not in dash_duo.find_element("body").text
    assert server.process.poll() is None


@pytest.mark.browser
def test_shard_deleted_then_damaged_then_restored(_headless: None, dash_duo, store: Path, server: LiveServer
                                                  ) -> None:
    reader = StoreReader(store)
    shards = [shard_dir(store, RUN) / s.file for s in reader.run_info(RUN).shards]
    saved = {p: p.read_bytes() for p in shards}
    expected = {m: mean_heatmap(reader, m) for m in ("entropy", "mass_prev", "mass_next", "mass_self")}

    dash_duo.server_url = server.url
    dash_duo.driver.set_window_size(1500, 1200)
    dash_duo.driver.get(f"{server.url}/?tab=corpus&run={RUN}")
    wait_figure(dash_duo, "corpus-heatmap-a", shows(expected["entropy"]), "entropy before any fault")
    until(lambda: f"{N} of {N} examples" in dash_duo.find_element("#corpus-status").text, timeout=TIMEOUT)
    assert alert_text(dash_duo, "corpus-alert") == ""

    # 1. the second shard is deleted; a metric not read yet must read every shard
    os.remove(shards[1])
    dash_duo.select_dcc_dropdown("#corpus-metric", value=label("mass_prev"))
    until(lambda: "is missing" in alert_text(dash_duo, "corpus-alert"), timeout=TIMEOUT,
          msg="no message in the Corpus tab for a deleted shard")
    text = alert_text(dash_duo, "corpus-alert")
    assert "\n" not in text and text.startswith(f"shard {shards[1].name} of run '{RUN}' is missing"), text
    assert f"attnviz verify --store {store} --repair" in text, text
    fig = wait_figure(dash_duo, "corpus-heatmap-a", lambda f: "is missing" in message(f), "heatmap message")
    assert message(fig).splitlines() == [message(fig)]
    assert_no_callback_failed(dash_duo, server)
    # the rest of the page still answers: the aggregate radio redraws nothing new but must not fail
    dash_duo.driver.find_element(By.CSS_SELECTOR, "#corpus-agg input[value='median']").click()
    until(lambda: "is missing" in alert_text(dash_duo, "corpus-alert"), timeout=TIMEOUT)

    # 2. it comes back as garbage, and the first shard is truncated
    put(shards[1], np.random.default_rng(0).bytes(len(saved[shards[1]])))
    put(shards[0], saved[shards[0]][: len(saved[shards[0]]) // 3])
    dash_duo.driver.find_element(By.CSS_SELECTOR, "#corpus-agg input[value='mean']").click()
    dash_duo.select_dcc_dropdown("#corpus-metric", value=label("mass_next"))
    until(lambda: f"shard {shards[0].name} of run '{RUN}' is damaged" in alert_text(dash_duo, "corpus-alert"),
          timeout=TIMEOUT, msg=f"no message for a damaged shard: {alert_text(dash_duo, 'corpus-alert')!r}")
    text = alert_text(dash_duo, "corpus-alert")
    assert "\n" not in text and f"attnviz verify --store {store} --repair" in text, text
    wait_figure(dash_duo, "corpus-heatmap-a", lambda f: "is damaged" in message(f), "heatmap message")
    assert_no_callback_failed(dash_duo, server)

    # 3. the shards are restored: the next interaction draws the data again and the message goes away
    for path, data in saved.items():
        put(path, data)
    dash_duo.select_dcc_dropdown("#corpus-metric", value=label("mass_self"))
    wait_figure(dash_duo, "corpus-heatmap-a", shows(expected["mass_self"]), "mass_self after the repair")
    until(lambda: alert_text(dash_duo, "corpus-alert") == "", timeout=TIMEOUT,
          msg="the Corpus tab still shows a message after the shards came back")
    dash_duo.select_dcc_dropdown("#corpus-metric", value=label("mass_prev"))  # failed before: not cached
    wait_figure(dash_duo, "corpus-heatmap-a", shows(expected["mass_prev"]), "mass_prev after the repair")
    assert message(graph(dash_duo, "corpus-profile")) == ""
    assert_no_callback_failed(dash_duo, server)
