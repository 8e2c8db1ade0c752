"""Precompute throughput, side by side in one run on the same model, sentences and threads, at two lengths.

For each sentence set (``--sets``: ``short``, the first N bundled WordNet sentences of ~11 tokens, and
``verses``, the first N bundled World English Bible verses of 15-45 tokens, median 28, where attention grows as
T² and storage and metrics cost more relative to the forward), prints:
- pipeline examples/s ÷ a bare batched forward loop with no storage (the floor; target ≥ 0.9, best of N and the
  median of adjacent pairs), and ÷ the forward the pipeline itself runs (stopped after the model's last
  attention, whole batches side by side as the pipeline arranges them: ``pipeline/precompute/batch_pool.py``),
  which shows what metrics and storage cost,
- pipeline ÷ a naive one-sentence-at-a-time extraction (forward per sentence, attention converted and written
  per example as float32 datasets; target ≥ 3; first set only),
- bytes per stored attention weight (target ≤ 1.1 for float16), for the default lossless float16 store and for
  a compact store with ``--mantissa-bits 5`` (with its measured maximum relative error; first set only),
- bytes per example on disk with ``--attention none`` (metrics, tokens and columns only) beside ``all``.
- the same contenders in CPU seconds of the whole process (user + system, all threads: torch's, the I/O
  thread's), best of N, and what they say: the pipeline's CPU ÷ the floor's, and where the pipeline's CPU goes
  beyond the forward it runs (metrics with ``--attention none``; storing raw attention: ``all`` − ``none``).
  On a machine shared with other jobs the CPU time moves much less than the wall-clock time (with ``--threads
  1`` it does not include torch's threads spinning while they wait for a core).

``--device`` runs the model (and the metrics) there (``cuda``: the floor and the pipeline are timed to the
device's completion).

Usage: python bench/precompute.py [--model minilm] [--sets short,verses] [--n 512] [--threads 2]
       [--batch-size 32] [--repeats 11] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from attnviz.pipeline.models.extract import encode, forward_batch, length_batches  # noqa: E402
from attnviz.pipeline.models.loading import LoadedModel, load_model  # noqa: E402
from attnviz.pipeline.precompute.batch_pool import worker_count  # noqa: E402
from attnviz.pipeline.precompute.inputs import InputExample, read_inputs  # noqa: E402
from attnviz.pipeline.precompute.local import plan_shards, precompute  # noqa: E402
from attnviz.pipeline.precompute.options import (  # noqa: E402
    DEFAULT_MAX_SHARD_ELEMENTS,
    DEFAULT_SHARD_SIZE,
    PrecomputeOptions,  # noqa: E402
)
from attnviz.pipeline.store import StoreReader  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SENTENCES = ROOT / "data" / "english_sentences.txt"
#: Where the World English Bible verses start in the bundled sentences (data/README.md), and their length range.
VERSES_FROM, VERSE_TOKENS = 2000, (15, 45)


def _sync(lm: LoadedModel) -> None:
    if lm.device.type == "cuda":
        torch.cuda.synchronize(lm.device)


def bare_forward(lm, encoded, batch_size: int, *, full: bool = True) -> float:
    """The floor: the pipeline's own batches (length-sorted within each shard) through the model's whole eager
    forward with attention output; no metrics, no copies, nothing stored. ``full=False``: the forward the
    pipeline runs, which stops after the last attention (``attnviz.pipeline.models.taps``)."""
    _sync(lm)
    t0 = time.perf_counter()
    for start, count in plan_shards(encoded, 1, DEFAULT_SHARD_SIZE, DEFAULT_MAX_SHARD_ELEMENTS):
        for batch in length_batches(encoded[start:start + count], batch_size):
            forward_batch(lm, batch, full=full)
    _sync(lm)
    return time.perf_counter() - t0


def pooled_forward(lm, encoded, batch_size: int) -> float:
    """The forward the pipeline runs, arranged as it runs it: stopped after the last attention, whole batches
    side by side (``attnviz.pipeline.precompute.batch_pool``: one batch per worker, torch's threads shared out);
    no metrics, no copies, nothing stored."""
    threads = torch.get_num_threads()
    longest = max(e.size for e in encoded)
    workers = worker_count(lm, threads, batch_size, longest)
    batches = [batch for start, count in plan_shards(encoded, 1, DEFAULT_SHARD_SIZE, DEFAULT_MAX_SHARD_ELEMENTS)
               for batch in reversed(list(length_batches(encoded[start:start + count], batch_size)))]
    _sync(lm)
    t0 = time.perf_counter()
    torch.set_num_threads(max(1, threads // workers))
    try:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda batch: forward_batch(lm, batch), batches))
    finally:
        torch.set_num_threads(threads)
    _sync(lm)
    return time.perf_counter() - t0


def naive(lm, sentences: list[str], path: Path) -> float:
    """One sentence at a time: forward, attention to numpy float32, one dataset per example."""
    t0 = time.perf_counter()
    with h5py.File(path, "w") as f:
        for k, text in enumerate(sentences):
            ids = torch.tensor([lm.tokenizer(text)["input_ids"]], device=lm.device)
            with torch.inference_mode():
                out = lm.model.base_model(input_ids=ids, output_attentions=True)
            attn = torch.stack(out.attentions, 0)[:, 0].float().cpu().numpy()
            f.create_dataset(f"ex{k}", data=attn.astype(np.float32))
    return time.perf_counter() - t0


def _attention_bytes(store: Path) -> int:
    """Bytes on disk of the self-attention datasets of every shard of a store."""
    total = 0
    for p in Path(f"{store}.d").rglob("*.h5"):
        with h5py.File(p, "r") as f:
            total += f["attention/self/data"].id.get_storage_size()
    return total


def sentence_set(name: str, lm: LoadedModel, n: int) -> list[str]:
    """The first ``n`` sentences of a set: ``short`` (WordNet examples) or ``verses`` (15-45 tokens)."""
    lines = read_inputs(SENTENCES).examples
    if name == "short":
        return [e.text for e in lines[:n]]
    if name == "verses":
        lo, hi = VERSE_TOKENS
        verses = [e.text for e in lines[VERSES_FROM:] if lo <= len(lm.tokenizer(e.text)["input_ids"]) <= hi]
        return verses[:n]
    raise SystemExit(f"unknown set {name!r}: use short or verses")


def _store_bytes(store: Path) -> int:
    return sum(p.stat().st_size for p in [store, *Path(f"{store}.d").rglob("*.h5")])


def measure_set(name: str, lm: LoadedModel, args: argparse.Namespace, tmp: Path, first: bool) -> None:
    """Time the floor, the pipeline and its own forward alternately on one sentence set and print the ratios."""
    sentences = sentence_set(name, lm, args.n)
    n = len(sentences)
    path = tmp / f"{name}.txt"
    path.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    encoded = [encode(lm, InputExample(index=i, text=t)) for i, t in enumerate(sentences)]
    lengths = np.array([len(e.source_ids) for e in encoded])

    def options(store: Path, **extra: object) -> PrecomputeOptions:
        return PrecomputeOptions(model=args.model, input=path, store=store, batch_size=args.batch_size,
                                 threads=args.threads, capture="attention", device=args.device,
                                 analyze=False,  # the pipeline alone (the analysis is its own scan)
                                 **extra)  # type: ignore[arg-type]

    bare_forward(lm, encoded[:64], args.batch_size)  # warm-up
    bare_forward(lm, encoded[:64], args.batch_size, full=False)  # warm-up (and tracing the attention sites)
    pooled_forward(lm, encoded[:64], args.batch_size)  # warm-up
    times: dict[str, list[float]] = {"floor": [], "pipeline": [], "naive": [], "own_forward": [], "none": []}
    store, none_store = tmp / f"{name}.h5", tmp / f"{name}-none.h5"

    def timed(target: Path, **extra: object) -> tuple[float, float]:
        """(steady-state seconds: first batch to last commit, set-up seconds) of one precompute."""
        for p in tmp.glob(f"{target.name}*"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        marks: dict[str, float] = {}
        t0 = time.perf_counter()
        precompute(options(target, **extra), loaded=lm,
                   on_start=lambda *_, m=marks: m.setdefault("start", time.perf_counter()))
        _sync(lm)
        return time.perf_counter() - marks["start"], marks["start"] - t0

    cpu: dict[str, list[float]] = {"floor": [], "pipeline": [], "own_forward": [], "none": []}

    def cpu_of(key: str, run, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        c0 = time.process_time()
        value = run(*a, **kw)
        cpu[key].append(time.process_time() - c0)  # a precompute's includes its set-up (~0.01-0.02 s of CPU)
        return value

    for rep in range(args.repeats):
        times["floor"].append(cpu_of("floor", bare_forward, lm, encoded, args.batch_size))
        steady, setup = cpu_of("pipeline", timed, store)
        times["pipeline"].append(steady)
        times.setdefault("setup", []).append(setup)
        # Right after the pipeline, so that each pipeline run has both references as neighbours.
        times["own_forward"].append(cpu_of("own_forward", pooled_forward, lm, encoded, args.batch_size))
        times["none"].append(cpu_of("none", timed, none_store, attention="none")[0])  # metrics, tokens, columns
        if first and rep < args.naive_repeats:
            times["naive"].append(naive(lm, sentences, tmp / f"naive{rep}.h5"))
    best = {k: min(v) for k, v in times.items() if v}
    pair_ratios = sorted(f / p for f, p in zip(times["floor"], times["pipeline"], strict=True))
    own_pairs = sorted(f / p for f, p in zip(times["own_forward"], times["pipeline"], strict=True))
    rate = {k: n / v for k, v in best.items() if k != "setup"}
    # Bytes per example: every example's attention (all) against metrics, tokens and columns only (none).
    per_example = {"all": _store_bytes(store) / n, "none": _store_bytes(none_store) / n}

    print(f"\n== {name}: {n} sentences, {int(lengths.sum())} tokens (median {int(np.median(lengths))}, "
          f"p90 {int(np.percentile(lengths, 90))}, max {int(lengths.max())}), model {args.model} on "
          f"{lm.device}, threads {args.threads}, batch {args.batch_size}, best of {args.repeats}")
    print(f"{'contender':<44}{'seconds':>10}{'examples/s':>12}")
    for key, label in (("floor", "bare batched forward (floor, no storage)"),
                       ("own_forward", "the forward it runs (stopped, side by side)"),
                       ("pipeline", "attnviz precompute (compute+store)"),
                       ("none", "attnviz precompute --attention none"),
                       ("naive", "naive one-at-a-time extraction")):
        if key in best:
            print(f"{label:<44}{best[key]:>10.2f}{rate[key]:>12.1f}")
    print(f"(precompute set-up before the first batch: model load + tokenizing + plan: {best['setup']:.2f} s)")
    print(f"pipeline / floor  = {rate['pipeline'] / rate['floor']:.2f}   (target >= 0.9; best of {args.repeats} "
          f"each; adjacent pairs: median {statistics.median(pair_ratios):.2f}, "
          f"range {pair_ratios[0]:.2f}-{pair_ratios[-1]:.2f})")
    print(f"pipeline / the forward it runs (no storage) = {rate['pipeline'] / rate['own_forward']:.2f}   "
          f"(what metrics and storage cost; adjacent pairs: median {statistics.median(own_pairs):.2f})")
    none_pairs = sorted(f / p for f, p in zip(times["floor"], times["none"], strict=True))
    print(f"pipeline --attention none / floor = {rate['none'] / rate['floor']:.2f}   (metrics for every example, "
          f"no raw attention; adjacent pairs: median {statistics.median(none_pairs):.2f})")
    c = {k: min(v) for k, v in cpu.items()}
    cpu_pairs = sorted(f / p for f, p in zip(cpu["floor"], cpu["pipeline"], strict=True))
    print(f"CPU seconds, best of {args.repeats} (process, all threads): floor {c['floor']:.2f}, the forward "
          f"it runs {c['own_forward']:.2f}, pipeline {c['pipeline']:.2f}, --attention none "
          f"{c['none']:.2f}; load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"pipeline / floor in CPU time = {c['floor'] / c['pipeline']:.2f}   (adjacent pairs: median "
          f"{statistics.median(cpu_pairs):.2f}); beyond the forward it runs, the pipeline spends "
          f"{c['pipeline'] - c['own_forward']:.2f} CPU s: metrics, tokens and columns "
          f"{c['none'] - c['own_forward']:.2f}"
          f", raw attention (copy, compress, write) {c['pipeline'] - c['none']:.2f}")
    if "naive" in rate:
        print(f"pipeline / naive  = {rate['pipeline'] / rate['naive']:.2f}   (target >= 3)")
    print(f"bytes per example on disk: --attention all {per_example['all']:.0f}, --attention none "
          f"{per_example['none']:.0f} ({per_example['all'] / per_example['none']:.1f}x smaller; metrics, tokens, "
          f"texts and columns only)")
    if first:
        _compact_store(lm, args, options, store, n)


def _compact_store(lm: LoadedModel, args: argparse.Namespace, options, store: Path, n: int) -> None:  # noqa: ANN001
    """The same sentences once more with --mantissa-bits (not timed): size and error against the full store."""
    compact = store.with_name("compact.h5")
    t0 = time.perf_counter()
    precompute(options(compact, mantissa_bits=args.mantissa_bits), loaded=lm)
    compact_s = time.perf_counter() - t0
    worst = 0.0
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
    print(f"bytes per stored attention weight (target <= 1.1 for float16):\n"
          f"  float16, every bit (default, lz4 + bit-shuffle): {size[store] / weights:.3f} "
          f"({size[store] / weights / 2:.2f} x raw float16; {shard_bytes / weights:.3f} with tokens, metrics, "
          f"offsets); order-0 entropy of these float16 values: {entropy_bytes:.3f} bytes (what a lossless "
          f"coder of independent values can reach)\n"
          f"  --mantissa-bits {args.mantissa_bits} (zstd + bit-shuffle): {size[compact] / weights:.3f}, "
          f"max relative error {worst:.4f} (bound {2.0 ** -(args.mantissa_bits + 1):.4f}), "
          f"{n / compact_s:.0f} examples/s incl. set-up")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--sets", default="short,verses", help="comma list of short, verses")
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=11,
                        help="floor and pipeline run alternately N times; best of N for each")
    parser.add_argument("--mantissa-bits", type=int, default=5, help="the compact store's --mantissa-bits")
    parser.add_argument("--naive-repeats", type=int, default=2, help="best of N for the (slow) naive extraction")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:N or mps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lm = load_model(args.model, threads=args.threads, device=args.device)
    tmp = Path(tempfile.mkdtemp(prefix="attnviz-bench-"))
    try:
        for k, name in enumerate(s.strip() for s in args.sets.split(",")):
            measure_set(name, lm, args, tmp, first=k == 0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
