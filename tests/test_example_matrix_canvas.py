"""The attention matrix's cells drawn on the page's own canvas under a Plotly frame (``dashboard/assets/example.js``):
after client-side switches the canvas's pixels are the store's slice coloured as Plotly colours a heatmap (checked
against an independent numpy colouring), zoom keeps cells and axes together, the hover names the cell under the
pointer, and Save PNG / SVG write the matrix with its cells (not the empty frame).

Headless Chromium (dash_duo) against ``attnviz serve`` on the session's store made by the real pipeline.
"""

from __future__ import annotations

import base64
import json
import re
import time
import zlib
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pytest
from browser_helpers import TIMEOUT, array, wait_figure
from dash.testing.wait import until
from dashboard_fixtures import BERT_RUN, LiveServer
from selenium.webdriver.support.select import Select

from attnviz.dashboard.example.figures import ATTENTION_COLORSCALE
from attnviz.pipeline.store import StoreReader

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("headless")]

# The cells canvas's pixel (RGBA) at the centre of each plot-area point given in the axes' units (x = key, y =
# query), read where the page draws them; the frame's plot area and ranges with them.
_PIXELS_JS = """
const host = document.getElementById('attn-matrix'), gd = host.__gd, fl = gd._fullLayout;
const canvas = gd.querySelector('canvas.attnviz-cells');
if (!canvas) { return null; }
const ctx = canvas.getContext('2d'), sx = canvas.width / fl._size.w, sy = canvas.height / fl._size.h;
const out = arguments[0].map(([x, y]) => Array.from(ctx.getImageData(
    Math.floor(fl.xaxis.l2p(x) * sx), Math.floor(fl.yaxis.l2p(y) * sy), 1, 1).data));
const r = canvas.getBoundingClientRect();
return JSON.stringify({pixels: out, size: fl._size, canvas: [r.left, r.top, r.width, r.height],
                       plot: (() => { const d = gd.querySelector('.nsewdrag').getBoundingClientRect();
                                      return [d.left, d.top, d.width, d.height]; })(),
                       x: fl.xaxis.range, y: fl.yaxis.range});
"""

_HOVER_JS = """
const gd = document.querySelector('#attn-matrix .js-plotly-plot');
const fl = gd._fullLayout, [i, j] = [arguments[0], arguments[1]];
const drag = gd.querySelector('.nsewdrag');
const r = drag.getBoundingClientRect();
drag.dispatchEvent(new MouseEvent('mousemove', {clientX: r.left + fl.xaxis.l2p(j), clientY: r.top + fl.yaxis.l2p(i),
                                                bubbles: true}));
const hover = gd.querySelector('.hoverlayer .hovertext');
return hover ? hover.textContent : null;
"""


def plotly_colours(z: np.ndarray) -> np.ndarray:
    """RGBA bytes of every cell as Plotly colours a heatmap whose colour range is automatic (data min..max): the
    colour scale's stops spread over the range, channels interpolated linearly (numpy, independently of the page)."""
    lo, hi = float(np.nanmin(z)), float(np.nanmax(z))
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    stops = np.array([lo + s * (hi - lo) for s, _ in ATTENTION_COLORSCALE])
    rgb = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for _, c in ATTENTION_COLORSCALE], dtype=np.float64)
    out = np.empty((*z.shape, 4))
    for ch in range(3):
        out[..., ch] = np.interp(z.astype(np.float64), stops, rgb[:, ch])
    out[..., 3] = 255
    return np.round(out)


def open_page(dash_duo, server: LiveServer, **query: object) -> None:
    dash_duo.server_url = server.url
    dash_duo.driver.set_window_size(1600, 1000)
    dash_duo.driver.get(f"{server.url}/?{urlencode(query)}")
    dash_duo.wait_for_element("#attn-matrix .js-plotly-plot", timeout=TIMEOUT)


def pixels(dash_duo, points: list[tuple[float, float]]) -> dict:
    raw = dash_duo.driver.execute_script(_PIXELS_JS, [list(p) for p in points])
    assert raw, "no cells canvas in the matrix"
    return json.loads(raw)


def all_cells(shape: tuple[int, int]) -> list[tuple[int, int]]:
    return [(j, i) for i in range(shape[0]) for j in range(shape[1])]


def canvas_equals_store(dash_duo, expected: np.ndarray) -> bool:
    """Every cell's pixel is the store slice's Plotly colour (±1 per channel: rounding of the interpolation)."""
    got = np.array(pixels(dash_duo, all_cells(expected.shape))["pixels"], dtype=np.float64)
    want = plotly_colours(expected).reshape(-1, 4)
    return got.shape == want.shape and bool(np.abs(got - want).max() <= 1)


def test_cells_on_the_canvas_are_the_store_slice_after_client_side_switches(
        dash_duo, live_server: LiveServer, reader: StoreReader) -> None:
    open_page(dash_duo, live_server, run=BERT_RUN, example=1, layer=0, head=0)
    for layer, head in ((0, 0), (1, 0), (1, 2)):
        if (layer, head) != (0, 0):
            Select(dash_duo.find_element("#layer-select")).select_by_value(str(layer))
            Select(dash_duo.find_element("#head-select")).select_by_value(str(head))
        expected = reader.attention(BERT_RUN, 1, layer, head)
        # the array the canvas was drawn from (the hidden heatmap trace and the model) is the store's slice ...
        wait_figure(dash_duo, "attn-matrix", lambda f, e=expected: np.array_equal(array(f["data"][0]["z"]), e),
                    f"L{layer} H{head}")
        # ... and so are its pixels
        until(lambda e=expected: canvas_equals_store(dash_duo, e), timeout=TIMEOUT,
              msg=f"canvas pixels differ from the store at L{layer} H{head}")
    frame = pixels(dash_duo, [(0, 0)])
    assert frame["canvas"] == pytest.approx(frame["plot"], abs=1)  # the cells fill the frame's plot area exactly

    # the mean of heads: the page's float32 mean, coloured the same way
    Select(dash_duo.find_element("#head-select")).select_by_value("mean")
    mean = reader.attention(BERT_RUN, 1, 1).astype(np.float32).mean(axis=0, dtype=np.float32)
    until(lambda: canvas_equals_store(dash_duo, mean), timeout=TIMEOUT, msg="mean of heads")


def test_zoom_moves_the_cells_with_the_axes(dash_duo, live_server: LiveServer, reader: StoreReader) -> None:
    open_page(dash_duo, live_server, run=BERT_RUN, example=2, layer=1, head=1)
    expected = reader.attention(BERT_RUN, 2, 1, 1)
    until(lambda: canvas_equals_store(dash_duo, expected), timeout=TIMEOUT, msg="before zoom")
    dash_duo.driver.execute_script(
        "Plotly.relayout(document.querySelector('#attn-matrix .js-plotly-plot'),"
        "{'xaxis.range': [0.5, 3.5], 'yaxis.range': [4.5, 1.5]});")
    colours = plotly_colours(expected)
    cells = [(j, i) for i in (2, 3, 4) for j in (1, 2, 3)]

    def zoomed() -> bool:
        got = pixels(dash_duo, cells)
        if got["x"] != [0.5, 3.5]:
            return False
        return all(np.abs(np.array(px) - colours[i, j]).max() <= 1
                   for px, (j, i) in zip(got["pixels"], cells, strict=True))

    until(zoomed, timeout=TIMEOUT, msg="zoomed cells do not match their axes")


def test_hover_names_the_cell_under_the_pointer(dash_duo, live_server: LiveServer, reader: StoreReader) -> None:
    open_page(dash_duo, live_server, run=BERT_RUN, example=1, layer=1, head=2)
    expected = reader.attention(BERT_RUN, 1, 1, 2)
    wait_figure(dash_duo, "attn-matrix", lambda f: np.array_equal(array(f["data"][0]["z"]), expected), "L1 H2")
    labels = json.loads(dash_duo.driver.execute_script(
        "const gd = document.querySelector('#attn-matrix .js-plotly-plot');"
        "return JSON.stringify([gd.data[0].y, gd.data[0].x]);"))
    for i, j in ((0, 0), (2, 3), (expected.shape[0] - 1, 1)):
        text = None

        def hovered(i: int = i, j: int = j) -> bool:
            nonlocal text
            text = dash_duo.driver.execute_script(_HOVER_JS, i, j)
            return text is not None and labels[0][i] in text and labels[1][j] in text

        until(hovered, timeout=TIMEOUT, msg=f"no hover for cell ({i}, {j}): {text!r}")
        assert text is not None and f"{float(expected[i, j]):.4f}" in text


def _png_pixels(data: bytes) -> np.ndarray:
    """RGBA pixels of an 8-bit RGBA/RGB PNG (non-interlaced), decoded with zlib and the PNG row filters."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    height = channels = 0
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            width, height = int.from_bytes(body[:4], "big"), int.from_bytes(body[4:8], "big")
            assert body[8] == 8 and body[12] == 0
            channels = {6: 4, 2: 3}[body[9]]
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = width * channels
    out = np.zeros((height, stride), dtype=np.int64)
    prev = np.zeros(stride, dtype=np.int64)
    for y in range(height):
        f, line = raw[y * (stride + 1)], np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int64)
        if f == 0:  # None
            row = line
        elif f == 1:  # Sub: a running sum of each channel along the row
            row = line.reshape(-1, channels).cumsum(axis=0).reshape(-1) & 0xFF
        elif f == 2:  # Up
            row = (line + prev) & 0xFF
        else:  # Average, Paeth: byte by byte
            row = np.zeros(stride, dtype=np.int64)
            for x in range(stride):
                a = int(row[x - channels]) if x >= channels else 0
                b, c = int(prev[x]), int(prev[x - channels]) if x >= channels else 0
                if f == 3:
                    pred = (a + b) // 2
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                row[x] = (int(line[x]) + pred) & 0xFF
        out[y], prev = row, row
    return out.reshape(height, width, channels)


def test_save_png_and_svg_hold_the_cells(dash_duo, live_server: LiveServer, reader: StoreReader) -> None:
    open_page(dash_duo, live_server, run=BERT_RUN, example=2, layer=1, head=0)
    expected = reader.attention(BERT_RUN, 2, 1, 0)
    until(lambda: canvas_equals_store(dash_duo, expected), timeout=TIMEOUT, msg="drawn")
    folder = Path(dash_duo.download_path)
    stem = f"{BERT_RUN}_ex2_L1_H0"
    dash_duo.find_element("#save-svg").click()
    svg_path = folder / f"{stem}.svg"
    until(lambda: svg_path.exists() and svg_path.stat().st_size > 1000, timeout=TIMEOUT)
    time.sleep(0.3)
    svg = svg_path.read_text()
    # Plotly's own heatmap image of the cells is in the file: decode it and compare it with the store
    image = re.search(r'<image[^>]*href="data:image/png;base64,([^"]+)"', svg)
    assert image, "the SVG has no heatmap image"
    cells = _png_pixels(base64.b64decode(image.group(1)))
    assert cells.shape[:2] == expected.shape  # one pixel per cell
    assert np.abs(cells[..., :3] - plotly_colours(expected)[..., :3]).max() <= 1

    dash_duo.find_element("#save-png").click()
    png_path = folder / f"{stem}.png"
    until(lambda: png_path.exists() and png_path.stat().st_size > 1000, timeout=TIMEOUT)
    time.sleep(0.3)
    png = _png_pixels(png_path.read_bytes())
    frame = pixels(dash_duo, [(0, 0)])
    size = frame["size"]
    colours = plotly_colours(expected)
    tq, tk = expected.shape
    hits = 0
    for i in range(tq):
        for j in range(tk):  # each cell's centre in the saved image (the page's plot area; cells ≥ 20 px wide)
            x = int(size["l"] + (j + 0.5) * size["w"] / tk)
            y = int(size["t"] + (i + 0.5) * size["h"] / tq)
            hits += int(np.abs(png[y, x, :3] - colours[i, j, :3]).max() <= 2)
    assert hits >= 0.9 * tq * tk, f"only {hits} of {tq * tk} cells have their colour in the PNG"

    # the modebar's camera saves the same matrix (not Plotly's frame without its cells), named after the example
    dash_duo.driver.execute_script(
        "document.querySelector('#attn-matrix .modebar-btn[data-attr=\"attnviz-save-matrix\"],"
        " #attn-matrix .modebar-btn[data-title=\"Download plot as a png\"]').dispatchEvent("
        "new MouseEvent('click', {bubbles: true}));")
    camera = folder / f"{BERT_RUN}_ex2_matrix.png"
    until(lambda: camera.exists() and camera.stat().st_size > 1000, timeout=TIMEOUT,
          msg=f"no {camera.name} in {sorted(p.name for p in folder.iterdir())}")
    time.sleep(0.3)
    shot = _png_pixels(camera.read_bytes())
    assert shot.shape[0] > png.shape[0]  # scale 2, as the Python config asks
    scale = shot.shape[0] / png.shape[0]
    i, j = tq // 2, tk // 2
    x, y = int(scale * (size["l"] + (j + 0.5) * size["w"] / tk)), int(scale * (size["t"] + (i + 0.5) * size["h"] / tq))
    assert np.abs(shot[y, x, :3] - colours[i, j, :3]).max() <= 2
