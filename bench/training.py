"""Training with attention recording ÷ training without it, at the demo's settings, side by side in one run.

Both arms are the ``transformers.Trainer`` of ``attnviz train-demo`` (same seed, data, model, threads); the
"recording" arm adds the demo's two ``AttnvizCallback`` (random repeated probe and text probe, every
``--every`` steps, into a fresh store each time). The arms alternate (``--repeats`` pairs) so that the machine's
drift hits both; each pair gives one ratio. Printed: seconds per arm, the ratio
``time without ÷ time with`` (target ≥ 0.95: recording costs at most 5% of the training time) as the median of
the adjacent pairs and over the total times, and what one recording costs; both in wall-clock time and in the
process's CPU time (user + system, all threads), which other jobs on a shared machine disturb much less; and
the load average before and after.

Usage: python bench/training.py [--steps 400] [--every 100] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from attnviz.pipeline.training.demo import DemoSettings, demo_callbacks, demo_data, demo_trainer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def train_once(settings: DemoSettings, folder: Path, *, record: bool) -> tuple[float, float, list[float]]:
    """Wall and CPU seconds in ``Trainer.train`` for one arm, and the wall seconds of each recording (empty
    without)."""
    tokenizer, dataset = demo_data(settings, folder / "tokenizer")
    seconds: list[float] = []
    callbacks = demo_callbacks(settings, folder / "s.h5", tokenizer, on_record=lambda s: seconds.append(s.seconds)) \
        if record else []
    trainer = demo_trainer(settings, tokenizer, dataset, folder / "checkpoints", callbacks)
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.train()
    return time.perf_counter() - t0, time.process_time() - c0, seconds


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    defaults = DemoSettings()
    parser.add_argument("--steps", type=int, default=400, help="optimizer steps per arm")
    parser.add_argument("--every", type=int, default=defaults.every, help="record every N steps (the demo's)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating pairs")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.chdir(ROOT)  # the demo's corpus and text probe are relative to the repository
    settings = dataclasses.replace(defaults, steps=args.steps, every=args.every, save_every=10**9)
    plain, recorded, ratios, costs = [], [], [], []
    cpu_plain, cpu_recorded, cpu_ratios = [], [], []
    load_before = _load()
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.repeats):
            order = (False, True) if k % 2 == 0 else (True, False)
            pair, cpu = {}, {}
            for record in order:
                folder = Path(tmp) / f"{k}-{'rec' if record else 'plain'}"
                pair[record], cpu[record], seconds = train_once(settings, folder, record=record)
                costs += seconds
            plain.append(pair[False])
            recorded.append(pair[True])
            ratios.append(pair[False] / pair[True])
            cpu_plain.append(cpu[False])
            cpu_recorded.append(cpu[True])
            cpu_ratios.append(cpu[False] / cpu[True])
            print(f"pair {k + 1}: without {pair[False]:.1f} s (CPU {cpu[False]:.1f} s), with {pair[True]:.1f} s "
                  f"(CPU {cpu[True]:.1f} s), ratio {ratios[-1]:.3f} (CPU {cpu_ratios[-1]:.3f}); load {_load()}",
                  flush=True)
    n_records = 2 * (args.steps // args.every + 1)
    print()
    print(f"demo settings: {settings.layers} layers x {settings.heads} heads x {settings.hidden}, context "
          f"{settings.context}, batch {settings.batch_size}, {args.steps} steps, 2 series recorded every "
          f"{args.every} steps ({n_records} recordings per arm), {args.threads} threads; load average (1, 5, 15 min) "
          f"{load_before} before, {_load()} after")
    print("| measure | without recording | with recording | ratio (without ÷ with) |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| training time, median of {args.repeats} | {statistics.median(plain):.1f} s | "
          f"{statistics.median(recorded):.1f} s | {statistics.median(ratios):.3f} (adjacent pairs) |")
    print(f"| training time, total | {sum(plain):.1f} s | {sum(recorded):.1f} s | {sum(plain) / sum(recorded):.3f} |")
    print(f"| CPU time, median of {args.repeats} | {statistics.median(cpu_plain):.1f} s | "
          f"{statistics.median(cpu_recorded):.1f} s | {statistics.median(cpu_ratios):.3f} (adjacent pairs) |")
    print(f"| CPU time, total | {sum(cpu_plain):.1f} s | {sum(cpu_recorded):.1f} s | "
          f"{sum(cpu_plain) / sum(cpu_recorded):.3f} |")
    print(f"| one recording (one probe, one checkpoint) | | median {statistics.median(costs):.3f} s, max "
          f"{max(costs):.3f} s | |")
    for label, values in (("wall-clock", ratios), ("CPU", cpu_ratios)):
        print(f"target ({label}): ratio >= 0.95 -> {'met' if statistics.median(values) >= 0.95 else 'NOT met'}")


if __name__ == "__main__":
    main()
