"""The pure parts of issue 15's dashboard changes: the URL fragment of the Corpus tab and the Playground, a copied
link's Playground job, probabilities as percentages, the figures' titles, dendrogram, pattern marks and offset
ticks, the default run and its redirect. (The browser round trips are in ``tests/test_shareable_state.py``.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
from scipy.cluster import hierarchy
from scipy.spatial.distance import squareform

from attnviz.dashboard.corpus import figures as cf
from attnviz.dashboard.figjson import TOOLBAR_PX, clear_of_toolbar, figure, subtitled
from attnviz.dashboard.playground.controls import (
    JOB_KEYS,
    model_infos,
    pending_of,
    predict_block,
    restore_request,
    restored_view,
)
from attnviz.dashboard.playground.panels import fmt_prob
from attnviz.dashboard.urlstate import (
    CorpusWish,
    corpus_fragment,
    corpus_wish,
    format_fragment,
    parse_state,
    playground_wish,
)
from attnviz.pipeline.statistics.similarity import cluster_order, cluster_tree

REPO = Path(__file__).resolve().parent.parent


def test_corpus_fragment_round_trip_and_tolerance() -> None:
    wish = CorpusWish(present=True, run_b="pair b", kind="self", metric="mass_prev", agg="median", length=(3, 9),
                      truncated="no", fields=(("source", ("alpha", "b&c")),), head=(1, 2))
    fragment = format_fragment(corpus_fragment(wish))
    assert fragment.startswith("#corpus.b=pair+b&")
    assert corpus_wish(fragment) == wish
    assert corpus_wish(fragment.lstrip("#")) == wish
    # the Example tab's query string is untouched by the fragment, and the other tab's entries are ignored
    assert parse_state("?run=x&layer=2").layer == 2
    assert corpus_wish("#pg.model=minilm") == CorpusWish()
    bad = corpus_wish("#corpus.length=9-3&corpus.head=a.b&corpus.truncated=maybe&corpus.f.=x&corpus.agg=")
    assert bad.present and bad.length is None and bad.head is None and bad.truncated is None
    assert bad.fields == () and bad.agg is None
    assert corpus_wish(None) == CorpusWish() and corpus_wish("#") == CorpusWish()


def test_playground_link_becomes_the_controls_and_its_job() -> None:
    infos = model_infos()
    wish = playground_wish("#corpus.b=x&pg.model=gpt2-random&pg.layers=2&pg.heads=4&pg.hidden=64&pg.seed=3"
                           "&pg.task=lm&pg.input=typed&pg.text=Le+caf%C3%A9&pg.gen_n=5&pg.mode=sample&pg.temp=0.7"
                           "&pg.result=predict&pg.kind=self&pg.layer=1&pg.head=mean&pg.step=2&pg.unknown=1")
    assert "unknown" not in wish and wish["text"] == "Le café"
    request = restore_request(wish, infos)
    values = dict(zip(JOB_KEYS, request["values"], strict=True))
    assert values["model"] == "gpt2-random" and (values["layers"], values["heads"], values["hidden"]) == (2, 4, 64)
    assert values["seed"] == 3 and values["task"] == "lm" and values["text"] == "Le café"
    assert values["gen_n"] == 5 and values["mode"] == "sample" and values["temp"] == 0.7
    assert request["op"] == "predict" and request["note"] == ""
    assert request["view"] == {"kind": "self", "layer": 1, "head": "mean", "step": 2}
    assert pending_of(request) is request
    # a trained model keeps its own configuration; a task the model cannot run falls back to its default
    trained = dict(zip(JOB_KEYS, restore_request({"model": "minilm", "layers": "9", "task": "lm"}, infos)["values"],
                       strict=True))
    assert trained["layers"] is None and trained["task"] == "single"
    # an unknown model: the defaults, no job, and a note
    unknown = restore_request({"model": "nope", "result": "run"}, infos)
    assert unknown["op"] is None and "'nope'" in unknown["note"]
    with pytest.raises(ValueError, match="pending job"):
        pending_of({"values": [1], "op": "run"})


def test_a_links_view_is_kept_only_where_the_result_has_it() -> None:
    view = {"kind": "cross", "layer": 5, "head": "3", "step": 9}
    assert restored_view(view, ["self"], {"self": (2, 4)}, (0, 6)) == {"head": 3}
    assert restored_view(view, ["self", "cross"], {"cross": (6, 8)}, (0, 10)) == {"kind": "cross", "layer": 5,
                                                                                 "head": 3, "step": 9}
    assert restored_view(None, ["self"], {}, None) == {}


def test_predict_is_blocked_only_for_models_that_cannot_predict() -> None:
    assert "no masked-language-model head" in predict_block("minilm", None)
    assert predict_block("bert-random", None) == "" and predict_block("gpt2-random", None) == ""
    assert predict_block("bert-base-uncased", None) == ""  # a hub model: not known offline, left enabled
    summary = {"model": "bert-base-uncased", "has_lm_head": False}
    assert "no masked-language-model head" in predict_block("bert-base-uncased", summary)


def test_probabilities_are_percentages_without_exponents() -> None:
    assert [fmt_prob(p) for p in (0.127, 1.27e-4, 6.48e-5, 1e-9, 0.0, 1.0, float("nan"))] == [
        "12.7%", "0.0127%", "0.00648%", "< 0.0001%", "0%", "100%", "–"]


def test_titles_are_placed_below_the_toolbar_band() -> None:
    fig = clear_of_toolbar(figure([], title=subtitled("A: Entropy (mean)", "run-a"), height=300,
                                  margin={"t": 40}))
    title = fig["layout"]["title"]
    assert title["yref"] == "container" and title["yanchor"] == "top" and title["pad"]["t"] == TOOLBAR_PX
    assert fig["layout"]["margin"]["t"] >= TOOLBAR_PX + 2 * 20  # two lines
    assert fig["layout"]["height"] == 300 + fig["layout"]["margin"]["t"] - 40  # the plot keeps its height
    assert clear_of_toolbar(figure([], height=200))["layout"]["height"] == 200  # no title: unchanged
    go.Figure(fig)  # valid plotly


def test_similarity_map_has_the_dendrogram_of_its_order() -> None:
    rng = np.random.default_rng(3)
    points = rng.random((8, 3))
    distance = np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1))
    tree = cluster_tree(distance)
    assert tree is not None and (tree.order == cluster_order(distance)).all()
    # independent: scipy's own dendrogram of the same average linkage
    z = hierarchy.linkage(squareform(distance, checks=False), method="average", optimal_ordering=True)
    assert hierarchy.dendrogram(z, no_plot=True)["leaves"] == tree.order.tolist()
    fig = cf.similarity_figure(distance, cluster_order(distance), 4, title="A: head similarity", subtitle="run")
    go.Figure(fig)
    heat, lines = fig["data"]
    assert heat["x"] == [cf.head_name(int(c) // 4, int(c) % 4) for c in tree.order]
    xs = np.array(cf_decode(lines["x"]))
    leaves = xs[np.isfinite(xs) & (np.array(cf_decode(lines["y"])) == 0)]
    assert sorted(set(np.round(leaves, 6))) == list(range(8))  # every leaf over its column
    assert fig["layout"]["xaxis2"]["range"] == [-0.5, 7.5]
    assert cf.similarity_shapes(heat["x"], (1, 2))[0]["yref"] == "y domain"


def cf_decode(spec: object) -> np.ndarray:
    from attnviz.dashboard.figjson import decode

    return decode(spec)


def test_pattern_cells_are_short_and_offset_ticks_do_not_crowd() -> None:
    labels = np.array([["broad"] * 12, ["first", "previous", "next", "self", "sep", "punct", "heterogeneous",
                                        "broad", "broad", "broad", "broad", "broad"]], dtype=object)
    fig = cf.pattern_figure(labels, title="A: head patterns", subtitle="run")
    go.Figure(fig)
    assert max(len(t) for row in fig["data"][0]["text"] for t in row) <= 3
    assert fig["data"][0]["customdata"][1][0] == "first token / [CLS] sink"  # the hover names it in full
    for k in (4, 8, 16, 32, 100):
        fig = cf.relpos_figure([("A", np.zeros(2 * k + 1), "#000")], k, title="t")
        step = fig["layout"]["xaxis"]["dtick"]
        assert 2 * k / step <= 10 and step >= 1


def test_preferred_run_and_the_redirect_of_a_page_without_run(tmp_path: Path) -> None:
    from attnviz.dashboard.app import create_app
    from attnviz.dashboard.data import preferred_run
    from attnviz.pipeline.precompute.local import precompute
    from attnviz.pipeline.precompute.options import PrecomputeOptions
    from attnviz.pipeline.store import StoreReader

    store = tmp_path / "s.h5"
    common = dict(input=str(REPO / "data/demo.jsonl"), store=store, limit=2, threads=1, capture="attention",
                  analyze=False)
    precompute(PrecomputeOptions(model="bert-random", run="a-random", overrides={"num_hidden_layers": 1,
                                 "num_attention_heads": 2, "hidden_size": 32, "intermediate_size": 64}, **common))
    client = create_app(store).server.test_client()
    assert client.get("/").status_code == 200  # the first run is already the preferred one: no redirect
    precompute(PrecomputeOptions(model="minilm", run="b-trained", **common))
    assert preferred_run(StoreReader(store)) == "b-trained"
    resp = client.get("/?tab=corpus")
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/?tab=corpus&run=b-trained")
    assert client.get("/?run=a-random").status_code == 200  # a run asked for is shown


def test_long_messages_are_wrapped_to_fit_a_narrow_figure() -> None:
    from attnviz.dashboard.corpus.views import MESSAGE_WRAP, grid_message
    from attnviz.dashboard.messages import message_figure

    text = grid_message((6, 12), (3, 8))
    fig = message_figure(text, wrap=MESSAGE_WRAP)
    lines = fig["layout"]["annotations"][0]["text"].split("<br>")
    assert len(lines) > 1 and max(len(line) for line in lines) <= MESSAGE_WRAP
    assert " ".join(lines) == text and fig["layout"]["meta"]["message"] == text
    assert message_figure(text)["layout"]["annotations"][0]["text"] == text  # not asked: one line, as before
