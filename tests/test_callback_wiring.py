"""Every callback of the app can run in every state of the page without Dash's renderer throwing.

The Corpus, Playground and Training tabs are put in the page when first opened, and a few Example-tab graphs
when their panel first asks for them, so a component id may be missing from the page. Dash's renderer (the
``pruneCallbacks`` and ``fillVals`` of dash-renderer) leaves a callback out while none of its outputs is in the
page and skips it while none of its inputs is; but a callback with an output in the page and at least one input
there throws "A nonexistent object was used in an `Input` (or `State`) of a Dash callback" when any other of its
inputs or states is missing. The browser shows that as an error in its console, and ``attnviz serve --debug`` in
its error panel, at every such change (it did, at every tab change and every Example-tab step, before the
Training tab's callbacks kept their outputs in their own pane).

Checked here against the app's real callback list and layout, for every combination of opened tabs and filled
panels (``tests/test_tab_switch.py`` checks the same in the browser's console).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from attnviz.dashboard.app import LAZY_TABS, create_app, pane_id

#: Where a component is: None when it is in every page, else the id of the pane or panel that brings it.
Places = dict[str, str | None]


def component_places(layout: Any) -> Places:
    """Every string id of ``layout`` (every lazy tab filled) with the lazy tab pane it is in, or None."""
    panes = {pane_id(t) for t in LAZY_TABS}
    places: Places = {}

    def walk(component: Any, place: str | None) -> None:
        cid = getattr(component, "id", None)
        if isinstance(cid, str):
            places[cid] = place
            place = cid if cid in panes else place  # the pane is in every page; what is in it comes with it
        children = getattr(component, "children", None)
        for child in children if isinstance(children, list | tuple) else [children]:
            if hasattr(child, "to_plotly_json"):
                walk(child, place)

    walk(layout, None)
    return places


def outputs_of(callback: dict) -> list[str]:
    """The component ids of a callback's outputs (Dash's ``..id.prop...id.prop..`` string, ``@hash`` suffixes of
    duplicate outputs removed)."""
    if callback.get("no_output"):
        return []
    return [part.rsplit(".", 1)[0] for part in callback["output"].strip(".").split("...")]


def is_pattern(cid: str) -> bool:
    """A pattern-matching id (a JSON object): ALL matches no component without an error."""
    return cid.startswith("{")


def throwing_states(app: Any) -> list[str]:
    """``callback: missing id (opened groups)`` for every callback and page state in which the renderer throws."""
    places = component_places(app.validation_layout)
    referenced = {d["id"] for c in app._callback_list for d in c["inputs"] + c["state"]}
    referenced |= {cid for c in app._callback_list for cid in outputs_of(c)}
    # components that no layout holds are put in the page by a callback (the Example tab's Debugging and
    # Embeddings graphs): each is its own group, present or not
    for cid in referenced:
        if not is_pattern(cid) and cid not in places:
            places[cid] = "filled:" + cid
    groups = sorted({p for p in places.values() if p is not None})
    found = []
    for opened in itertools.product([False, True], repeat=len(groups)):
        present_groups = {g for g, o in zip(groups, opened, strict=True) if o}

        def present(cid: str, shown: set[str] = present_groups) -> bool:
            return places[cid] is None or places[cid] in shown

        for c in app._callback_list:
            outs = [o for o in outputs_of(c) if not is_pattern(o)]
            if outs and not any(present(o) for o in outs):
                continue  # left out: no output in the page
            inputs = [d for d in c["inputs"] if not is_pattern(d["id"]) and not d.get("allow_optional")]
            if not any(present(d["id"]) for d in inputs):
                continue  # never triggered: no input in the page
            states = [d for d in c["state"] if not is_pattern(d["id"]) and not d.get("allow_optional")]
            for d in inputs + states:
                if not present(d["id"]):
                    found.append(f"{c['output'][:80]}: {d['id']} missing with {sorted(present_groups)}")
    return found


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("wiring")
    return create_app(Path(folder) / "none.h5")  # the store is opened on first use: never here


def test_every_referenced_component_is_found(app: Any) -> None:
    places = component_places(app.validation_layout)
    assert {pane_id(t) for t in LAZY_TABS} <= set(places)
    assert places["tabs"] is None and places["view-state"] is None
    assert places["corpus-run-b"] == pane_id("corpus") and places["training-series"] == pane_id("training")
    assert places["training-compare"] is None  # the hand-off store is in every page


def test_no_callback_throws_in_any_state_of_the_page(app: Any) -> None:
    assert throwing_states(app) == []


def test_the_check_finds_a_callback_that_would_throw(tmp_path: Path) -> None:
    """The check itself: an output in every page, one input in every page and one in a lazy tab's pane."""
    from dash import Input, Output

    app = create_app(tmp_path / "none.h5")
    app.callback(Output("app-alert", "children", allow_duplicate=True), Input("tabs", "value"),
                 Input("training-series", "value"), prevent_initial_call=True)(lambda tab, series: "")
    found = throwing_states(app)
    assert found and all("training-series missing" in f for f in found)
    assert any("'training-pane'" not in f for f in found)
