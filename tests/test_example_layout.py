"""The Example tab as a reviewer uses it, in headless Chromium against ``attnviz serve`` on a store made by the real
pipeline: the first screen at 1600 x 1000 (matrix, head view and controls without scrolling), the panels under the
views as tabs (a tab switch draws its view; a panel with nothing to show is one line), stepping between the windows
of a long text (``--long-inputs window``), raw tokens in the matrix and head-view hovers beside the decoded ones,
a 512-token head view whose labels and lines are on its canvas, and the attention kind's longest label shown whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import numpy as np
import pytest
from browser_helpers import TIMEOUT, array, message, wait_figure
from dash.testing.wait import until
from dashboard_fixtures import SEQ2SEQ_RUN, LiveServer, start_live_server

from attnviz.dashboard.example.layout import MESSAGE_HEIGHT
from attnviz.dashboard.example.tokens import display_tokens, raw_labels
from attnviz.dashboard.urlstate import parse_state
from attnviz.pipeline.store import StoreReader

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("headless")]

WINDOWS_RUN = "gpt2-windows"
LONG_RUN = "gpt2-long"
SHORT = "A short one."
LONG = ("Attention maps are easier to read when the text is short, but reviewers paste whole paragraphs into the "
        "tool, and a model that accepts only sixteen tokens must look at them window by window.")
BYTES = "A café, ’quoted’ \ufeffmark."  # 14 GPT-2 tokens, characters split across tokens
TINY = {"n_layer": 1, "n_head": 2, "n_embd": 32}


@pytest.fixture(scope="module")
def layout_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two GPT-2 runs (random weights, real GPT-2 BPE): short texts, one cut into windows of 16 tokens and one
    with bytes split across tokens; and one text of more than 512 tokens, truncated to 512."""
    from attnviz.pipeline.precompute.local import precompute
    from attnviz.pipeline.precompute.options import PrecomputeOptions

    root = tmp_path_factory.mktemp("layout")
    store = root / "layout.h5"
    texts = root / "texts.txt"
    texts.write_text(f"{SHORT}\n{LONG}\n{BYTES}\n", encoding="utf-8")
    precompute(PrecomputeOptions(model="gpt2-random", input=str(texts), store=store, run=WINDOWS_RUN, threads=1,
                                 overrides=TINY, max_length=16, long_inputs="window:8", capture="attention"))
    long_text = root / "long.txt"
    long_text.write_text(" ".join(f"word{i % 97} is here," for i in range(260)) + "\n", encoding="utf-8")
    precompute(PrecomputeOptions(model="gpt2-random", input=str(long_text), store=store, run=LONG_RUN, threads=1,
                                 overrides=TINY, max_length=512, capture="attention"))
    return store


@pytest.fixture(scope="module")
def server(layout_store: Path) -> Iterator[LiveServer]:
    srv = start_live_server(layout_store)
    yield srv
    srv.process.terminate()
    srv.process.wait(10)


@pytest.fixture(scope="module")
def store_reader(layout_store: Path) -> StoreReader:
    return StoreReader(layout_store)


def open_page(dash_duo, server: LiveServer, **query: object) -> None:
    dash_duo.server_url = server.url
    dash_duo.driver.get(f"{server.url}/?{urlencode(query)}")
    dash_duo.wait_for_element("#attn-matrix .js-plotly-plot", timeout=TIMEOUT)


def viewport(dash_duo, width: int = 1600, height: int = 1000) -> None:
    """The page's viewport exactly ``width`` x ``height`` CSS pixels (a window's size includes its frame)."""
    dash_duo.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})


def url_example(dash_duo) -> int:
    return parse_state(urlsplit(dash_duo.driver.current_url).query).example


def z_equals(expected: np.ndarray):
    return lambda fig: np.array_equal(array(fig["data"][0]["z"]), expected)


def click_tab(dash_duo, title: str) -> None:
    link = dash_duo.driver.find_element(
        "xpath", f"//*[@id='example-details']//a[contains(@class, 'nav-link')][normalize-space()='{title}']")
    link.click()


_RECT_JS = "const r = document.querySelector(arguments[0]).getBoundingClientRect(); " \
           "return [r.left, r.top, r.right, r.bottom, window.innerWidth, window.innerHeight, window.scrollY];"


def test_first_screen_at_1600x1000_shows_matrix_head_view_and_controls(dash_duo, server: LiveServer,
                                                                       store_reader: StoreReader) -> None:
    viewport(dash_duo)
    open_page(dash_duo, server, run=WINDOWS_RUN, example=2)
    wait_figure(dash_duo, "attn-matrix", z_equals(store_reader.attention(WINDOWS_RUN, 2, 0, 0)), "example 2")
    until(lambda: dash_duo.driver.execute_script("return !!document.querySelector('#head-view canvas')"),
          timeout=TIMEOUT)
    for selector in ("#attn-matrix .js-plotly-plot", "#head-view", "#head-view canvas", "#layer-select",
                     "#head-select", "#step-input", "#kind-select", "#example-next", "#reset-view",
                     "#example-details .nav-link"):
        left, top, right, bottom, width, height, scrolled = dash_duo.driver.execute_script(_RECT_JS, selector)
        assert (width, height, scrolled) == (1600, 1000, 0)
        assert 0 <= left < right <= width and 0 <= top < bottom <= height, (selector, left, top, right, bottom)


def test_tabs_under_the_views_draw_when_opened_and_empty_panels_are_one_line(dash_duo, server: LiveServer,
                                                                             store_reader: StoreReader) -> None:
    viewport(dash_duo)
    open_page(dash_duo, server, run=WINDOWS_RUN, example=0)
    wait_figure(dash_duo, "attn-matrix", z_equals(store_reader.attention(WINDOWS_RUN, 0, 0, 0)), "example 0")
    drawn = "return !!document.querySelector('#timestep-bars .js-plotly-plot')"
    assert not dash_duo.driver.execute_script(drawn)  # behind a closed tab: not drawn
    click_tab(dash_duo, "Time step")
    until(lambda: dash_duo.driver.execute_script(drawn), timeout=TIMEOUT)  # no scroll: the switch drew it
    bars = dash_duo.driver.execute_script(
        "return Array.from(document.querySelector('#timestep-bars .js-plotly-plot').data[0].y)")
    np.testing.assert_array_equal(np.float32(bars), store_reader.attention(WINDOWS_RUN, 0, 0, 0)[0])
    assert dash_duo.driver.execute_script("return window.scrollY") == 0

    # the Debugging / Embeddings graphs are not in the page (no Plotly drawing at start-up) until their tab opens
    graphs = "return ['debug-view', 'embeddings-view', 'norms-view'].map(id => !!document.getElementById(id))"
    assert dash_duo.driver.execute_script(graphs) == [False, False, False]

    # a panel with nothing to show (no Q/K/V captured) is a line, not a 560 px box
    click_tab(dash_duo, "Debugging")
    wait_figure(dash_duo, "debug-view", lambda f: "did not capture Q/K/V" in message(f), "missing Q/K/V")
    height = dash_duo.driver.execute_script(_RECT_JS.replace("r.bottom,", "r.bottom - r.top,"), "#debug-view")[3]
    assert height <= MESSAGE_HEIGHT + 2, height

    # the Input tab: the text and its tokens, decoded, the raw token in each tooltip
    click_tab(dash_duo, "Input")
    until(lambda: SHORT in dash_duo.find_element("#input-panel").text, timeout=TIMEOUT)
    chips = dash_duo.driver.execute_script(
        "return Array.from(document.querySelectorAll('#input-panel .attnviz-token')).map(e => e.title)")
    raw = raw_labels(store_reader.tokens(WINDOWS_RUN, 0))
    assert chips == [f"token {i}: raw {r}" for i, r in enumerate(raw)]


def test_window_buttons_step_through_the_windows_of_a_long_text(dash_duo, server: LiveServer,
                                                                store_reader: StoreReader) -> None:
    first = store_reader.windows(WINDOWS_RUN, 1)
    assert first.windowed and first.position == 0 and len(first.examples) == first.total >= 3
    open_page(dash_duo, server, run=WINDOWS_RUN, example=0)
    wait_figure(dash_duo, "attn-matrix", z_equals(store_reader.attention(WINDOWS_RUN, 0, 0, 0)), "example 0")
    until(lambda: dash_duo.driver.execute_script("return document.getElementById('example-window-box').hidden"),
          timeout=TIMEOUT)  # a short text is no window: no line

    dash_duo.find_element("#example-next").click()
    label = dash_duo.find_element("#example-window-label")
    until(lambda: label.text == f"window 1 of {first.total}", timeout=TIMEOUT)
    prev, nxt = dash_duo.find_element("#example-window-prev"), dash_duo.find_element("#example-window-next")
    assert not dash_duo.driver.execute_script("return document.getElementById('example-window-box').hidden")
    assert prev.get_attribute("disabled") is not None and nxt.get_attribute("disabled") is None
    for k, example in enumerate(first.examples[1:], start=2):
        nxt.click()
        until(lambda k=k: label.text == f"window {k} of {first.total}", timeout=TIMEOUT)
        assert url_example(dash_duo) == example
        wait_figure(dash_duo, "attn-matrix", z_equals(store_reader.attention(WINDOWS_RUN, example, 0, 0)),
                    f"window {k}")
    until(lambda: nxt.get_attribute("disabled") is not None, timeout=TIMEOUT)  # the last window
    prev.click()
    until(lambda: label.text == f"window {first.total - 1} of {first.total}", timeout=TIMEOUT)
    assert url_example(dash_duo) == first.examples[-2]


_HOVER_MATRIX_JS = """
const gd = document.querySelector('#attn-matrix .js-plotly-plot');
const fl = gd._fullLayout, [i, j] = [arguments[0], arguments[1]];
const drag = gd.querySelector('.nsewdrag');
const r = drag.getBoundingClientRect();
const x = r.left + fl.xaxis.l2p(j), y = r.top + fl.yaxis.l2p(i);
drag.dispatchEvent(new MouseEvent('mousemove', {clientX: x, clientY: y, bubbles: true}));
const hover = gd.querySelector('.hoverlayer .hovertext');
return hover ? hover.textContent : null;
"""

_HOVER_HEAD_VIEW_JS = """
const box = document.getElementById('head-view').__hv;
const r = box.canvas.getBoundingClientRect();
const x = r.left + Math.round(r.width * 0.36) - 4, y = r.top + 10 + arguments[0] * 18 + 9 - box.scroll.scrollTop;
box.canvas.dispatchEvent(new MouseEvent('mousemove', {clientX: x, clientY: y, bubbles: true}));
return box.tip.style.display === 'block' ? box.tip.textContent : null;
"""


def test_hovers_show_the_raw_token_beside_the_decoded_one(dash_duo, server: LiveServer,
                                                          store_reader: StoreReader) -> None:
    example = store_reader.examples(WINDOWS_RUN).text.index(BYTES)
    tokens = store_reader.tokens(WINDOWS_RUN, example)
    shown, raw = display_tokens(tokens), raw_labels(tokens)
    split = next(i for i, t in enumerate(tokens) if "b'\\x" in raw[i] and shown[i] != t)  # a byte-level piece
    viewport(dash_duo)
    open_page(dash_duo, server, run=WINDOWS_RUN, example=example)
    wait_figure(dash_duo, "attn-matrix", z_equals(store_reader.attention(WINDOWS_RUN, example, 0, 0)), "bytes")
    key = 0
    text = None

    def hovered() -> bool:
        nonlocal text
        text = dash_duo.driver.execute_script(_HOVER_MATRIX_JS, split, key)
        return text is not None

    until(hovered, timeout=TIMEOUT)
    assert f"{split} {shown[split]}" in text and raw[split] in text  # decoded label, then the raw token
    assert f"{key} {shown[key]}" in text and raw[key] in text

    until(lambda: dash_duo.driver.execute_script(_HOVER_HEAD_VIEW_JS, split) is not None, timeout=TIMEOUT)
    tip = dash_duo.driver.execute_script(_HOVER_HEAD_VIEW_JS, split)
    assert tip.startswith(f"{split} {shown[split]}") and tip.splitlines()[-1] == f"raw {raw[split]}"


_CANVAS_JS = """
const el = document.getElementById('head-view'), box = el.__hv, fig = el.__figure;
const c = box.canvas, ctx = c.getContext('2d'), dpr = window.devicePixelRatio || 1;
const w = c.width, h = c.height, px = ctx.getImageData(0, 0, w, h).data;
const qCol = Math.round(c.clientWidth * 0.36), kCol = Math.round(c.clientWidth * 0.64);
function count(x0, x1, test) {  // pixels in CSS columns x0..x1 passing test(r, g, b, a)
  let n = 0;
  for (let y = 0; y < h; y++) {
    for (let x = Math.round(x0 * dpr); x < Math.round(x1 * dpr); x++) {
      const o = 4 * (y * w + x);
      if (test(px[o], px[o + 1], px[o + 2], px[o + 3])) { n++; }
    }
  }
  return n;
}
const ink = (r, g, b, a) => a > 128 && r < 120 && g < 120 && b < 120;  // label text (#333)
const line = (r, g, b, a) => a > 20 && b > r + 20;  // a head's line (blue)
// per token row fully in view (10 px padding, 18 px a row): ink in both label columns
const top = box.scroll.scrollTop, rowsInView = [];
for (let i = Math.ceil((top - 10) / 18); 10 + (i + 1) * 18 - top <= c.clientHeight; i++) {
  const y0 = 10 + i * 18 - top;
  const band = (x0, x1) => {
    for (let y = Math.round(y0 * dpr); y < Math.round((y0 + 18) * dpr); y++) {
      for (let x = Math.round(x0 * dpr); x < Math.round(x1 * dpr); x++) {
        const o = 4 * (y * w + x);
        if (ink(px[o], px[o + 1], px[o + 2], px[o + 3])) { return true; }
      }
    }
    return false;
  };
  rowsInView.push([i, band(qCol - 60, qCol), band(kCol, kCol + 60)]);
}
return {labels: fig.data[0].text.length, keys: fig.data[1].text.length,
        segments: fig.data.slice(2).reduce((s, t) => s + t.meta.segments, 0),
        queryInk: count(qCol - 60, qCol, ink), keyInk: count(kCol, kCol + 60, ink),
        lineInk: count(qCol + 10, kCol - 10, line), rows: rowsInView,
        content: box.scroll.scrollHeight, view: box.scroll.clientHeight};
"""


def test_the_512_token_head_view_draws_labelled_lines(dash_duo, server: LiveServer,
                                                     store_reader: StoreReader) -> None:
    assert int(store_reader.examples(LONG_RUN).n_tokens[0]) == 512
    viewport(dash_duo)
    open_page(dash_duo, server, run=LONG_RUN, example=0, layer=0, head=1)
    wait_figure(dash_duo, "head-view", lambda f: f["data"][0]["text"] and len(f["data"][0]["text"]) == 512,
                "512 tokens")
    until(lambda: dash_duo.driver.execute_script(_CANVAS_JS)["lineInk"] > 0, timeout=TIMEOUT)
    canvas = dash_duo.driver.execute_script(_CANVAS_JS)
    weights = store_reader.attention(LONG_RUN, 0, 0, 1)
    assert canvas["labels"] == canvas["keys"] == 512
    assert canvas["segments"] > 512 and canvas["segments"] <= int((weights >= 0.01).sum())
    assert canvas["queryInk"] > 500 and canvas["keyInk"] > 500  # the labels in view are drawn
    assert canvas["lineInk"] > 2000  # and the lines between them
    rows = canvas["rows"]
    assert len(rows) >= canvas["view"] // 18 - 1  # one 18 px row per token (12 px labels: never overlapping) ...
    assert all(q and k for _, q, k in rows), rows  # ... each with its query and key label drawn
    assert canvas["content"] >= 512 * 18  # every token has its row (the box scrolls)


_FITS_JS = """
const el = document.querySelector(arguments[0]);
const style = getComputedStyle(el);
const ctx = document.createElement('canvas').getContext('2d');
ctx.font = style.font;
const text = el.options[el.selectedIndex].text;
const room = el.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
return [text, ctx.measureText(text).width, room];
"""


def test_the_attention_kind_select_shows_its_longest_label_whole(dash_duo, live_server: LiveServer) -> None:
    viewport(dash_duo)
    open_page(dash_duo, live_server, run=SEQ2SEQ_RUN, kind="cross")
    until(lambda: "cross" in dash_duo.driver.execute_script(_FITS_JS, "#kind-select")[0], timeout=TIMEOUT)
    text, needed, room = dash_duo.driver.execute_script(_FITS_JS, "#kind-select")
    assert text == "cross-attention (decoder → encoder)"
    assert needed <= room, (needed, room)  # not cut ("cross-attention (decoder → enc")
