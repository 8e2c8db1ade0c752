"""The playground's server side never unpickles nor imports torch, and a result the worker writes (arrays +
JSON) reads back bit for bit. No model, no torch."""

from __future__ import annotations

import ast
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from attnviz.pipeline.playground import client, records
from attnviz.pipeline.playground.protocol import MAX_MESSAGE_BYTES, Connection, ProtocolError
from attnviz.pipeline.playground.records import (
    Generation,
    GenerationStep,
    InputRequest,
    MaskedPosition,
    MaskedPrediction,
    ModelChoice,
    PlaygroundError,
    PlaygroundResult,
    TokenProb,
)
from attnviz.pipeline.records import ExampleResult, TokenSequence

REPO = Path(__file__).resolve().parent.parent
#: Modules of the server side: nothing in them may import these (or anything below them).
FORBIDDEN = ("pickle", "cPickle", "_pickle", "dill", "cloudpickle", "multiprocessing.connection", "torch")


def _imports(path: Path) -> list[str]:
    """Every module ``path`` imports (``from a import b`` gives ``a`` and ``a.b``), at any depth of the file."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
    return names


def _server_side() -> list[Path]:
    return [*sorted((REPO / "dashboard").rglob("*.py")),
            *(REPO / "pipeline" / "playground" / f for f in ("client.py", "records.py", "protocol.py"))]


def test_server_side_imports_neither_pickle_nor_multiprocessing_connection_nor_torch() -> None:
    files = _server_side()
    assert len(files) > 20 and all(f.exists() for f in files)
    offenders = [f"{p.relative_to(REPO)}: import {name}" for p in files for name in _imports(p)
                 if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)
                 or name in ("multiprocessing", "attnviz.pipeline.playground.engine",
                             "attnviz.pipeline.playground.worker")]
    assert offenders == []


def test_the_scan_sees_what_it_looks_for(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from multiprocessing.connection import Client\n    import pickle as p\n"
                   "    import torch.nn\n")
    assert {"multiprocessing.connection", "pickle", "torch.nn"} <= set(_imports(bad))


def _tokens(n: int, rng: np.random.Generator, prefix: str) -> TokenSequence:
    return TokenSequence(ids=rng.integers(0, 50_000, n).astype(np.int32), strings=[f"{prefix}{i}✓" for i in range(n)],
                         flags=rng.integers(0, 8, n).astype(np.uint8))


def _result() -> PlaygroundResult:
    """An encoder-decoder-shaped result with every kind of array and both kinds of prediction."""
    rng = np.random.default_rng(0)
    src, tgt = _tokens(5, rng, "s"), _tokens(4, rng, "t")
    attention = {"self": rng.random((2, 3, 5, 5), dtype=np.float32), "decoder": rng.random((2, 3, 4, 4)),
                 "cross": rng.random((2, 3, 4, 5), dtype=np.float32)}
    attention["self"][0, 0, 0, 0] = np.float32(1e-45)  # a subnormal survives
    metrics = {k: {"entropy": rng.random((2, 3), dtype=np.float32), "max": rng.random((2, 3))} for k in attention}
    qkv = {"self": tuple(rng.random((2, 3, 5, 4), dtype=np.float32) for _ in range(3))}
    example = ExampleResult(
        input_index=0, text="Das Haus ist groß.", source=src, attention=attention, metrics=metrics, truncated=True,
        target_text="The house", target=tgt, label="x", meta={"source": "playground", "overrides": {"d_model": 64},
                                                              "seed": 3, "masked_positions": [1, 2], "t": 0.1},
        qkv=qkv, hidden={"source": rng.random((3, 5, 8), dtype=np.float32)},
        embeddings={"source": (rng.random((5, 2)), rng.random((5, 2))), "target": (rng.random((4, 2)),
                                                                                    rng.random((4, 2)))})
    tp = [TokenProb(i, f"Ġw{i}", f" w{i}", 1 / (i + 3)) for i in range(3)]
    generation = Generation(side="target", prompt_length=2, steps=[GenerationStep(2, tp[0], 0.25, tp),
                                                                    GenerationStep(3, tp[1], 1e-300, tp[::-1])],
                            text=" w0 w1", prompt_text="The", greedy=False, temperature=0.7, seed=5,
                            stopped_at_eos=True)
    masked = MaskedPrediction([MaskedPosition(1, None, tp), MaskedPosition(3, "##ing", tp[:1])], True)
    return PlaygroundResult(
        id=records.new_result_id(), choice=ModelChoice("seq2seq-random", layers=2, heads=3, hidden=None, seed=4),
        request=InputRequest(task="translation", text="Das Haus", second="The house"), display_name="S2S",
        family="encoder-decoder", random_weights=True, has_lm_head=True, shape={"self": (2, 3), "cross": (2, 3)},
        max_length=512, overrides={"encoder_layers": 2, "decoder_layers": 2}, example=example,
        generation=generation, masked=masked, seconds=1.2345678901234567)


def _arrays(ex: ExampleResult) -> dict[str, np.ndarray]:
    out = {"source.ids": ex.source.ids, "source.flags": ex.source.flags}
    if ex.target is not None:
        out |= {"target.ids": ex.target.ids, "target.flags": ex.target.flags}
    out |= {f"attention.{k}": a for k, a in ex.attention.items()}
    out |= {f"metrics.{k}.{m}": a for k, ms in ex.metrics.items() for m, a in ms.items()}
    out |= {f"qkv.{k}.{i}": a for k, t in ex.qkv.items() for i, a in enumerate(t)}
    out |= {f"hidden.{k}": a for k, a in ex.hidden.items()}
    out |= {f"embeddings.{k}.{i}": a for k, t in ex.embeddings.items() for i, a in enumerate(t)}
    return out


def _plain(result: PlaygroundResult) -> dict:
    """Every field but the arrays, as plain values (dict order kept as lists of keys)."""
    d = asdict(result)
    ex = d.pop("example")
    keep = {k: v for k, v in ex.items() if k not in ("source", "target", "attention", "metrics", "qkv", "hidden",
                                                     "embeddings")}
    keep["strings"] = (result.example.source.strings,
                       None if result.example.target is None else result.example.target.strings)
    keep["orders"] = [list(result.example.attention), {k: list(v) for k, v in result.example.metrics.items()},
                      list(result.example.qkv), list(result.example.hidden), list(result.example.embeddings)]
    return {**d, "example": keep}


def test_a_result_written_by_the_worker_reads_back_equal_on_the_client_side(tmp_path: Path) -> None:
    result = _result()
    records.save_result(tmp_path, result)  # what the worker calls (engine.save_result_files)
    files = sorted(p.name for p in (tmp_path / "results").iterdir())
    assert files == [f"{result.id}.json", f"{result.id}.npz"]  # no temp file left behind
    back = client.read_result(tmp_path, result.id)  # what the server process calls
    assert _plain(back) == _plain(result)
    assert back.shape == result.shape and isinstance(back.shape["self"], tuple)
    a, b = _arrays(result.example), _arrays(back.example)
    assert list(a) == list(b)
    for key in a:
        assert b[key].dtype == a[key].dtype and b[key].shape == a[key].shape, key
        assert b[key].tobytes() == a[key].tobytes(), key  # bit for bit
    assert back.summary() == result.summary()
    json.loads((tmp_path / "results" / f"{result.id}.json").read_text())  # plain JSON


def test_result_files_are_checked(tmp_path: Path) -> None:
    result = _result()
    path = records.save_result(tmp_path, result)
    with pytest.raises(PlaygroundError, match="unknown playground result"):
        client.read_result(tmp_path, "../../etc/passwd")
    with pytest.raises(PlaygroundError, match="no longer available"):
        client.read_result(tmp_path, "0" * 32)
    fields = json.loads(path.read_text())
    path.write_text(json.dumps({**fields, "choice": {"name": "x", "evil": 1}}))
    with pytest.raises(PlaygroundError, match="is not a playground result"):
        client.read_result(tmp_path, result.id)
    path.write_text("not json")
    with pytest.raises(PlaygroundError, match="not a readable playground result"):
        client.read_result(tmp_path, result.id)
    records.save_result(tmp_path, result)
    np.save(path.with_suffix(".npz").open("wb"), np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(PlaygroundError, match="not a readable playground result"):  # never unpickled
        client.read_result(tmp_path, result.id)


def test_old_results_are_pruned(tmp_path: Path) -> None:
    result = _result()
    ids = []
    for _ in range(4):
        result.id = records.new_result_id()
        records.save_result(tmp_path, result)
        ids.append(result.id)
    assert records.prune_results(tmp_path, keep=2) == 2
    assert sorted(p.stem for p in (tmp_path / "results").glob("*.json")) == sorted(ids[2:])
    assert sorted(p.stem for p in (tmp_path / "results").glob("*.npz")) == sorted(ids[2:])


def test_messages_are_json_with_limits() -> None:
    import socket

    a, b = socket.socketpair()
    left, right = Connection(a), Connection(b)
    left.send(["progress", 0.5, "ünïcode"])
    assert right.poll(1.0) and right.recv() == ["progress", 0.5, "ünïcode"]
    right.limit = MAX_MESSAGE_BYTES
    a.sendall(len(b"\x80not json").to_bytes(4, "big") + b"\x80not json")
    with pytest.raises(ProtocolError, match="not JSON"):
        right.recv()
    left.close()
    with pytest.raises(EOFError):
        right.recv()
    right.close()
    a, b = socket.socketpair()
    with Connection(a) as left, Connection(b) as right:
        left.send({"op": "x" * 2000})  # over the limit before the handshake
        with pytest.raises(ProtocolError, match="over the limit"):
            right.recv()


def test_the_handshake_needs_the_key() -> None:
    import socket
    import threading

    for server_key, client_key, ok in ((b"k" * 32, b"k" * 32, True), (b"k" * 32, b"x" * 32, False)):
        a, b = socket.socketpair()
        server, cli = Connection(a), Connection(b)
        outcome: list[object] = []

        def serve(conn: Connection = server, key: bytes = server_key, out: list = outcome) -> None:
            try:
                conn.accept_handshake(key)
                out.append("ok")
            except (OSError, EOFError) as exc:
                out.append(exc)
            finally:
                conn.close()

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            cli.offer_handshake(client_key)
            client_ok = True
        except (OSError, EOFError):
            client_ok = False
        thread.join(5)
        cli.close()
        assert client_ok is ok and (outcome == ["ok"]) is ok


def test_every_playground_id_is_a_constant_of_ids_py() -> None:
    folder = REPO / "dashboard" / "playground"
    literals = [f"{p.name}: {n.value}" for p in sorted(folder.glob("*.py")) if p.name != "ids.py"
                for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.Constant)
                and isinstance(n.value, str) and n.value.startswith("pg-")]
    assert literals == []
