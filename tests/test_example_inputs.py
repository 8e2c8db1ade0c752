"""The Example tab's input side without a browser: the window line, the window buttons' target
(``sync.step_window``) on a store made by the real pipeline with ``--long-inputs window``, and the Input tab."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnviz.dashboard.example import panels
from attnviz.dashboard.example.data import ExampleSummary
from attnviz.dashboard.example.sync import step_window
from attnviz.dashboard.example.tokens import display_tokens, raw_labels
from attnviz.dashboard.urlstate import ViewState
from attnviz.pipeline.store import ExampleWindows, StoreReader

SHORT = "A short one."
LONG = ("Attention maps are easier to read when the text is short, but reviewers paste whole paragraphs into the "
        "tool, and a model that accepts only sixteen tokens must look at them window by window.")
RUN = "windows"


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> StoreReader:
    from attnviz.pipeline.precompute.local import precompute
    from attnviz.pipeline.precompute.options import PrecomputeOptions

    root = tmp_path_factory.mktemp("inputs")
    texts = root / "texts.txt"
    texts.write_text(f"{SHORT}\n{LONG}\n{SHORT}\n", encoding="utf-8")
    store = root / "store.h5"
    precompute(PrecomputeOptions(model="gpt2-random", input=str(texts), store=store, run=RUN, threads=1,
                                 overrides={"n_layer": 1, "n_head": 2, "n_embd": 32}, max_length=16,
                                 long_inputs="window:8", capture="attention", analyze=False))
    return StoreReader(Path(store))


def test_window_line_names_the_window_and_its_ends() -> None:
    assert panels.window_line(ExampleWindows(0, (4,), 0, (0,), 1)) == ("", True, True, True)
    windows = ExampleWindows(1, (1, 2, 3), 0, (0, 8, 16), 3)
    assert panels.window_line(windows) == ("window 1 of 3", False, True, False)
    middle = ExampleWindows(1, (1, 2, 3), 1, (0, 8, 16), 3)
    assert panels.window_line(middle) == ("window 2 of 3", False, False, False)
    last_written = ExampleWindows(1, (1, 2), 1, (0, 8), 4)  # a run still being written
    assert panels.window_line(last_written) == ("window 2 of 4 (2 written)", False, False, True)


def test_window_buttons_go_to_the_linked_windows(reader: StoreReader) -> None:
    n = reader.num_examples(RUN)
    texts = list(reader.examples(RUN).text)
    assert texts[0] == SHORT and texts[-1] == SHORT and n >= 5  # the long text made at least three windows
    members = reader.windows(RUN, 1).examples
    assert members == tuple(range(1, n - 1))
    state = ViewState(run=RUN, example=members[0], layer=0, head=1)
    visited = [state.example]
    while (following := step_window(reader, state, forward=True)) != state:
        assert following.layer == 0 and following.head == 1  # only the example changes
        state = following
        visited.append(state.example)
    assert tuple(visited) == members  # every window in text order, then it stays on the last
    assert step_window(reader, state.with_changes(example=members[1]), forward=False).example == members[0]
    assert step_window(reader, state.with_changes(example=members[0]), forward=False).example == members[0]
    short = state.with_changes(example=0)  # no window: the buttons change nothing
    assert step_window(reader, short, forward=True) == short
    assert step_window(reader, state.with_changes(example=n + 5), forward=True).example == n + 5
    assert step_window(reader, state.with_changes(run="nope"), forward=True).run == "nope"


def test_input_panel_shows_the_text_tokens_and_their_raw_form(reader: StoreReader) -> None:
    i = reader.windows(RUN, 1).examples[1]
    table = reader.examples(RUN)
    summary = ExampleSummary(table, i, random_weights=True, mantissa_bits=None, n_tokens=int(table.n_tokens[i]),
                             n_target_tokens=0)
    tokens = reader.tokens(RUN, i)
    panel = panels.input_panel(summary, {"source": (display_tokens(tokens), raw_labels(tokens))},
                               reader.windows(RUN, i))
    chips = [c for c in _walk(panel) if "attnviz-token" in (getattr(c, "className", "") or "")]
    assert [c.title for c in chips] == [f"token {k}: raw {r}" for k, r in enumerate(raw_labels(tokens))]
    text = " ".join(str(c) for c in _walk(panel) if isinstance(c, str))
    assert "Window 2 of" in text and f"token {reader.windows(RUN, i).token_starts[1]} of the text" in text


def _walk(component):
    """Every component and string in a Dash component tree."""
    yield component
    children = getattr(component, "children", None)
    if children is None:
        return
    for child in children if isinstance(children, list | tuple) else [children]:
        yield from _walk(child)
