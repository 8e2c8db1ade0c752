"""Precompute throughput, side by side in one run on the same model, sentences and threads.

Prints:
- pipeline examples/s ÷ a bare batched forward loop with no storage (the floor; target ≥ 0.85), and ÷ the
  forward the pipeline itself runs (stopped after the model's last attention), which shows what metrics and
  storage cost,
- pipeline ÷ a naive one-sentence-at-a-time extraction (forward per sentence, attention converted and written
  per example as float32 datasets; target ≥ 3),
- bytes per stored attention weight (target ≤ 1.1 for float16), for the default lossless float16 store and for
  a compact store with ``--mantissa-bits 5`` (with its measured maximum relative error).

Usage: python bench/precompute.py [--model minilm] [--n 512] [--threads 2] [--batch-size 32] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from attnviz.pipeline.models.extract import encode, forward_batch, length_batches  # noqa: E402
from attnviz.pipeline.models.loading import load_model  # noqa: E402
from attnviz.pipeline.precompute.inputs import read_inputs  # noqa: E402
from attnviz.pipeline.precompute.local import plan_shards, precompute  # noqa: E402
from attnviz.pipeline.precompute.options import (  # noqa: E402
    DEFAULT_MAX_SHARD_ELEMENTS,
    DEFAULT_SHARD_SIZE,
    PrecomputeOptions,  # noqa: E402
)
from attnviz.pipeline.store import StoreReader  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def bare_forward(lm, encoded, batch_size: int, *, full: bool = True) -> float:
    """The floor: the pipeline's own batches (length-sorted within each shard) through the model's whole eager
    forward with attention output; no metrics, no copies, nothing stored. ``full=False``: the forward the
    pipeline runs, which stops after the last attention (``attnviz.pipeline.models.taps``)."""
    t0 = time.perf_counter()
    for start, count in plan_shards(encoded, 1, DEFAULT_SHARD_SIZE, DEFAULT_MAX_SHARD_ELEMENTS):
        for batch in length_batches(encoded[start:start + count], batch_size):
            forward_batch(lm, batch, full=full)
    return time.perf_counter() - t0


def naive(lm, sentences: list[str], path: Path) -> float:
    """One sentence at a time: forward, attention to numpy float32, one dataset per example."""
    t0 = time.perf_counter()
    with h5py.File(path, "w") as f:
        for k, text in enumerate(sentences):
            ids = torch.tensor([lm.tokenizer(text)["input_ids"]])
            with torch.inference_mode():
                out = lm.model.base_model(input_ids=ids, output_attentions=True)
            attn = torch.stack(out.attentions, 0)[:, 0].numpy()
            f.create_dataset(f"ex{k}", data=attn.astype(np.float32))
    return time.perf_counter() - t0


def _attention_bytes(store: Path) -> int:
    """Bytes on disk of the self-attention datasets of every shard of a store."""
    total = 0
    for p in Path(f"{store}.d").rglob("*.h5"):
        with h5py.File(p, "r") as f:
            total += f["attention/self/data"].id.get_storage_size()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--input", default=str(ROOT / "data" / "english_sentences.txt"))
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=11,
                        help="floor and pipeline run alternately N times; best of N for each")
    parser.add_argument("--mantissa-bits", type=int, default=5, help="the compact store's --mantissa-bits")
    parser.add_argument("--naive-repeats", type=int, default=2, help="best of N for the (slow) naive extraction")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    examples = read_inputs(args.input).examples[: args.n]
    sentences = [e.text for e in examples]
    lm = load_model(args.model, threads=args.threads)
    encoded = [encode(lm, e) for e in examples]
    tokens = sum(len(e.source_ids) for e in encoded)
    tmp = Path(tempfile.mkdtemp(prefix="attnviz-bench-"))
    try:
        bare_forward(lm, encoded[:64], args.batch_size)  # warm-up
        bare_forward(lm, encoded[:64], args.batch_size, full=False)  # warm-up (and tracing the attention sites)
        times: dict[str, list[float]] = {"floor": [], "pipeline": [], "naive": [], "own_forward": []}
        store = tmp / "bench.h5"
        for rep in range(args.repeats):
            times["floor"].append(bare_forward(lm, encoded, args.batch_size))
            for p in tmp.glob("bench.h5*"):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
            marks: dict[str, float] = {}
            t0 = time.perf_counter()
            precompute(PrecomputeOptions(model=args.model, input=args.input, store=store, limit=args.n,
                                         batch_size=args.batch_size, threads=args.threads, capture="attention",
                                         analyze=False),  # the pipeline alone (the analysis is its own scan)
                       loaded=lm, on_start=lambda *_, m=marks: m.setdefault("start", time.perf_counter()))
            end = time.perf_counter()
            # Steady state: from the first batch to the last commit (model load + tokenizing reported apart).
            times["pipeline"].append(end - marks["start"])
            times.setdefault("setup", []).append(marks["start"] - t0)
            # Right after the pipeline, so that each pipeline run has both references as neighbours.
            times["own_forward"].append(bare_forward(lm, encoded, args.batch_size, full=False))
            if rep < args.naive_repeats:
                times["naive"].append(naive(lm, sentences, tmp / f"naive{rep}.h5"))
        best = {k: min(v) for k, v in times.items()}
        # Each pipeline run against the floor run just before it (and the stopped forward just after it): the
        # spread shows this machine's noise.
        pair_ratios = sorted(f / p for f, p in zip(times["floor"], times["pipeline"], strict=True))
        rate = {k: args.n / v for k, v in best.items() if k != "setup"}
        # The same sentences once more with --mantissa-bits (not timed): size and error against the full store.
        compact = tmp / "compact.h5"
        t0 = time.perf_counter()
        precompute(PrecomputeOptions(model=args.model, input=args.input, store=compact, limit=args.n,
                                     batch_size=args.batch_size, threads=args.threads, capture="attention",
                                     mantissa_bits=args.mantissa_bits, analyze=False), loaded=lm)
        compact_s = time.perf_counter() - t0
        weights, worst = 0, 0.0
        counts = np.zeros(1 << 16, dtype=np.int64)  # how often each float16 bit pattern is stored
        with StoreReader(store) as reader, StoreReader(compact) as reader_c:
            run = reader.runs()[0]
            layers, heads = reader.run_info(run).shape["self"]
            weights = int(sum(layers * heads * t * t for t in reader.examples(run).n_tokens))
            for i in range(reader.num_examples(run)):
                a16 = reader.attention(run, i).astype(np.float16)  # exactly the stored values
                counts += np.bincount(a16.view(np.uint16).ravel(), minlength=1 << 16)
                a = a16.astype(np.float64)
                normal = a >= 2.0**-14  # float16's normal range; below it the error is absolute (docs)
                err = np.abs(reader_c.attention(run, i).astype(np.float64) - a)[normal] / a[normal]
                worst = max(worst, float(err.max(initial=0.0)))
        size = {s: _attention_bytes(s) for s in (store, compact)}
        p = counts[counts > 0] / counts.sum()
        entropy_bytes = float(-(p * np.log2(p)).sum()) / 8  # order-0 entropy of the stored float16 values
        shard_bytes = sum(p.stat().st_size for p in Path(f"{store}.d").rglob("*.h5"))
        print(f"model {args.model}, {args.n} sentences, {tokens} tokens, threads {args.threads}, "
              f"batch {args.batch_size}, best of {args.repeats} (naive: {args.naive_repeats})")
        print(f"{'contender':<44}{'seconds':>10}{'examples/s':>12}")
        for key, label in (("floor", "bare batched forward (floor, no storage)"),
                           ("own_forward", "forward stopped after the last attention"),
                           ("pipeline", "attnviz precompute (compute+store)"),
                           ("naive", "naive one-at-a-time extraction")):
            print(f"{label:<44}{best[key]:>10.2f}{rate[key]:>12.1f}")
        print(f"(precompute set-up before the first batch: model load + tokenizing + plan: {best['setup']:.2f} s)")
        print(f"pipeline / floor  = {rate['pipeline'] / rate['floor']:.2f}   (target >= 0.85; best of {args.repeats} "
              f"each; adjacent pairs: median {statistics.median(pair_ratios):.2f}, "
              f"range {pair_ratios[0]:.2f}-{pair_ratios[-1]:.2f})")
        own_pairs = sorted(f / p for f, p in zip(times["own_forward"], times["pipeline"], strict=True))
        print(f"pipeline / the forward it runs (no storage) = {rate['pipeline'] / rate['own_forward']:.2f}   "
              f"(what metrics and storage cost; adjacent pairs: median {statistics.median(own_pairs):.2f})")
        print(f"pipeline / naive  = {rate['pipeline'] / rate['naive']:.2f}   (target >= 3)")
        print(f"bytes per stored attention weight (target <= 1.1 for float16):\n"
              f"  float16, every bit (default, lz4 + bit-shuffle): {size[store] / weights:.3f} "
              f"({size[store] / weights / 2:.2f} x raw float16; {shard_bytes / weights:.3f} with tokens, metrics, "
              f"offsets); order-0 entropy of these float16 values: {entropy_bytes:.3f} bytes (what a lossless "
              f"coder of independent values can reach)\n"
              f"  --mantissa-bits {args.mantissa_bits} (zstd + bit-shuffle): {size[compact] / weights:.3f}, "
              f"max relative error {worst:.4f} (bound {2.0 ** -(args.mantissa_bits + 1):.4f}), "
              f"{args.n / compact_s:.0f} examples/s incl. set-up")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
