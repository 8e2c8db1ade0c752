"""URL query string <-> ViewState: round trips, defaults, malformed values, links into the Example tab."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from attnviz.dashboard.urlstate import ViewState, example_href, format_state, parse_state

STATES = [
    ViewState(),
    ViewState(tab="corpus", run="minilm--demo", example=17, layer=5, head=11, step=9, kind="self", attn="raw"),
    ViewState(tab="example", run="seq2seq-random--demo_pairs", example=0, layer=2, head=None, step=3,
              kind="cross", attn="raw"),
    ViewState(tab="playground", run="a.b_c+d-e", example=123456, layer=0, head=None, step=0, kind="decoder",
              attn="rollout"),
]


@pytest.mark.parametrize("state", STATES)
def test_round_trip(state: ViewState) -> None:
    search = format_state(state)
    assert search.startswith("?")
    back = parse_state(search)
    assert back == state
    assert back.error is None


def test_defaults_from_empty_and_missing() -> None:
    for search in ("", "?", None, "?unknown=1"):
        state = parse_state(search)
        assert state == ViewState()
        assert (state.tab, state.example, state.layer, state.head, state.step, state.kind, state.attn) == (
            "example", 0, 0, 0, 0, "self", "raw")


def test_head_mean_and_all() -> None:
    assert parse_state("?head=mean").head is None
    assert parse_state("?head=all").head is None
    assert parse_state("?head=MEAN").head is None
    assert parse_query(format_state(ViewState(head=None)))["head"] == ["mean"]


def parse_query(search: str) -> dict[str, list[str]]:
    return parse_qs(search.lstrip("?"))


@pytest.mark.parametrize("search, field, default, fragment", [
    ("?layer=abc", "layer", 0, "layer 'abc' is not a whole number"),
    ("?example=1.5", "example", 0, "example '1.5' is not a whole number"),
    ("?example=-3", "example", 0, "example -3 is negative"),
    ("?head=x7", "head", 0, "head 'x7' is not a whole number"),
    ("?step=%20", "step", 0, None),
    ("?kind=sideways", "kind", "self", "unknown attention kind 'sideways'"),
    ("?attn=blur", "attn", "raw", "unknown attn mode 'blur'"),
    ("?tab=settings", "tab", "example", "unknown tab 'settings'"),
])
def test_malformed_values_fall_back_with_a_message(search, field, default, fragment) -> None:
    state = parse_state(search)
    assert getattr(state, field) == default
    if fragment is None:
        assert state.error is None  # a blank value is simply absent
    else:
        assert fragment in state.error
        assert "\n" not in state.error


def test_good_values_survive_next_to_bad_ones() -> None:
    state = parse_state("?run=r1&example=99999&layer=abc&head=3&kind=cross")
    assert (state.run, state.example, state.layer, state.head, state.kind) == ("r1", 99999, 0, 3, "cross")
    assert state.error == "layer 'abc' is not a whole number: showing layer 0"


def test_several_errors_are_joined() -> None:
    state = parse_state("?layer=a&head=b")
    assert len(state.errors) == 2
    assert "; " in state.error


def test_run_names_are_url_encoded() -> None:
    state = ViewState(run="weird run&name=1")
    search = format_state(state)
    assert "&name=1&" not in search
    assert parse_state(search).run == "weird run&name=1"


def test_to_dict_from_dict_round_trip() -> None:
    for state in STATES:
        assert ViewState.from_dict(state.to_dict()) == state
    assert ViewState.from_dict(None) == ViewState()
    assert ViewState.from_dict({"layer": "oops"}).layer == 0


def test_example_href_links_into_the_example_tab() -> None:
    href = example_href("minilm--demo", 42, layer=3, head=7, kind="self")
    parts = urlsplit(href)
    assert parts.path == "/"
    state = parse_state(parts.query)
    assert (state.tab, state.run, state.example, state.layer, state.head, state.kind) == (
        "example", "minilm--demo", 42, 3, 7, "self")
    plain = parse_state(urlsplit(example_href("r", 5)).query)
    assert (plain.example, plain.layer, plain.head, plain.kind) == (5, 0, 0, "self")


def test_format_with_changes() -> None:
    base = ViewState(run="r", example=1)
    assert parse_state(format_state(base, example=2, head=None)) == ViewState(run="r", example=2, head=None)


def test_example_href_keeps_the_page_store() -> None:
    href = example_href("r", 5, layer=1, head=2, store="other store.h5")
    query = parse_qs(urlsplit(href).query)
    assert query["store"] == ["other store.h5"]
    state = parse_state(urlsplit(href).query)
    assert (state.tab, state.run, state.example, state.layer, state.head) == ("example", "r", 5, 1, 2)
    assert not state.errors  # the app's parser ignores store= (the page reads it)
    assert "store" not in parse_qs(urlsplit(example_href("r", 5)).query)
