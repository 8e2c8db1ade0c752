"""``attnviz train-demo``: train a small GPT-2 here, on the bundled corpora, on CPU, recording its attention.

Offline, the only pretrained weights are MiniLM's, so every GPT-2-family run shows random attention. This trains
one: GPT-2 architecture (2 layers × 4 heads × 64 by default) with the real GPT-2 BPE, restricted to the tokens the
training text uses (every corpus sentence is tokenized exactly as GPT-2 tokenizes it; other text falls back to
smaller GPT-2 tokens, down to single bytes), so that its output layer is small enough for a CPU. It learns to
continue English sentences of ``data/english_sentences.txt``; half of its training sequences repeat a sentence
(``s <|endoftext|> s``), the in-context copying that induction heads serve.

The ``transformers.Trainer`` runs with :class:`~attnviz.pipeline.training.callback.AttnvizCallback`, which records
two series every ``every`` steps: ``train-demo`` (probe: random token sequences repeated twice, for the induction
and duplicate-token scores) and ``train-demo-text`` (probe: sentences of ``data/demo.jsonl``). The final model
(weights + tokenizer) is saved under ``data/models/train-demo/model``, the folder the shipped model_info entry
``train-demo`` names, so every tab can use it.

Resumable: the Trainer saves a checkpoint every ``save_every`` steps under ``data/models/train-demo/checkpoints``;
a killed ``train-demo`` run again resumes from it (and its series continue). A finished one is not run again
unless ``force``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attnviz.pipeline.precompute.inputs import InputError

#: Where the demo keeps its model and checkpoints (ignored by git); the model_info entry names ``<this>/model``.
DEFAULT_OUT = Path("data/models/train-demo")
#: The text it learns from, and its two probes.
CORPUS = Path("data/english_sentences.txt")
#: Marker written last into the final model's folder: the settings and the summary of the training.
MARKER = "attnviz-train-demo.json"


@dataclass(frozen=True)
class DemoSettings:
    """What ``attnviz train-demo`` trains and records (the defaults: ~290 CPU seconds of one thread, 1,200 steps of
    ~0.22 s and 26 recordings of ~0.4 s, measured with ``bench/training.py``; README, "How long make demo-store
    takes")."""

    steps: int = 1200  #: optimizer steps
    every: int = 100  #: record the series every N steps
    save_every: int = 200  #: save a Trainer checkpoint (resume point) every N steps
    layers: int = 2
    heads: int = 4
    hidden: int = 64
    context: int = 64  #: tokens per training sequence (and the model's positions)
    batch_size: int = 16
    learning_rate: float = 2e-3
    warmup_steps: int = 50
    repeat_fraction: float = 0.5  #: share of training sequences that repeat a sentence
    seed: int = 0
    series: str = "train-demo"
    probe: str = "random:length=24,count=32,seed=0,repeat=2"
    text_series: str = "train-demo-text"
    text_probe: str = "data/demo.jsonl"
    text_probe_limit: int = 48
    corpus: str = str(CORPUS)
    model_info: str = "train-demo"

    def check(self) -> None:
        """Refuse settings that cannot train (one line naming the option)."""
        for name in ("steps", "every", "save_every", "layers", "heads", "hidden", "context", "batch_size"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(self, name)})")
        if self.hidden % self.heads:
            raise InputError(f"--hidden {self.hidden} must be a multiple of --heads {self.heads}")
        if not 0 <= self.repeat_fraction <= 1:
            raise InputError(f"repeat fraction must be between 0 and 1 (got {self.repeat_fraction})")
        if self.context < 8:
            raise InputError(f"--context must be at least 8 tokens (got {self.context})")


@dataclass
class DemoSummary:
    """What one ``train-demo`` command did."""

    model_dir: Path
    steps: int
    seconds: float  #: wall time of this command
    train_seconds: float  #: time in ``Trainer.train`` (0 when nothing was trained)
    final_loss: float | None
    recorded: dict[str, list[int]] = field(default_factory=dict)  #: series -> recorded steps
    skipped: bool = False  #: already trained (nothing done)

    def line(self) -> str:
        if self.skipped:
            return (f"train-demo: already trained ({self.model_dir}, {self.steps} steps); --force trains it again")
        series = ", ".join(f"{name!r} {len(steps)} checkpoints" for name, steps in self.recorded.items())
        loss = f"{self.final_loss:.3f}" if self.final_loss is not None else "?"
        return (f"train-demo: {self.steps} steps in {self.train_seconds:.0f} s (whole command {self.seconds:.0f} s), "
                f"final loss {loss}; series {series}; model saved to {self.model_dir}")


# ----------------------------------------------------------------------------------------------------------
# Vocabulary: GPT-2 BPE restricted to the corpus
# ----------------------------------------------------------------------------------------------------------


def restricted_bpe(texts: list[str], folder: Path) -> Any:
    """The GPT-2 BPE tokenizer restricted to what ``texts`` use, written to ``folder`` and returned.

    The vocabulary keeps every token GPT-2 makes of ``texts``, every token the merges that build them pass
    through, the 256 single-byte tokens and ``<|endoftext|>``; the merges keep those whose parts and result are
    all kept, in GPT-2's order. BPE then makes exactly GPT-2's tokens of ``texts`` (a merge that never applied to
    them cannot change them), and any other text still encodes, in smaller GPT-2 tokens.
    """
    import transformers

    from attnviz.pipeline.models.loading import gpt2_bpe_files

    vocab_file, merges_file = gpt2_bpe_files()
    full = transformers.GPT2Tokenizer(vocab=str(vocab_file), merges=str(merges_file))
    encoder: dict[str, int] = json.loads(vocab_file.read_text(encoding="utf-8"))
    merges = [tuple(line.split()) for line in merges_file.read_text(encoding="utf-8").splitlines()
              if line and not line.startswith("#version")]
    used = {t for text in texts for t in full.convert_ids_to_tokens(full(text)["input_ids"])}
    by_id = {i: t for t, i in encoder.items()}
    keep = used | {by_id[i] for i in range(256)} | {"<|endoftext|>"}
    for a, b in reversed(merges):  # every merge's parts come from earlier merges: one backward pass closes it
        if a + b in keep:
            keep.update((a, b))
    vocab = {t: k for k, t in enumerate(sorted(keep, key=lambda t: encoder[t]))}
    kept = [f"{a} {b}" for a, b in merges if a + b in keep and a in keep and b in keep]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(kept) + "\n", encoding="utf-8")
    tok = transformers.GPT2Tokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"))
    tok.pad_token = tok.eos_token
    return tok


# ----------------------------------------------------------------------------------------------------------
# Training data
# ----------------------------------------------------------------------------------------------------------


class DemoDataset:
    """Training sequences of ``context`` tokens, each fixed by its index (reproducible, resumable): a window of
    the corpus's token stream (sentences separated by ``<|endoftext|>``) or, for a ``repeat_fraction`` of the
    indices, sentences each followed by a copy of itself (``s <eos> s <eos> t <eos> t …``)."""

    def __init__(self, sentences: list[list[int]], eos: int, settings: DemoSettings, size: int) -> None:
        self.sentences = [np.asarray(s, dtype=np.int64) for s in sentences if s]
        self.stream = np.concatenate([np.append(s, eos) for s in self.sentences])
        self.eos, self.settings, self.size = eos, settings, size

    def __len__(self) -> int:
        return self.size

    def sequence(self, index: int) -> np.ndarray:
        """The ``index``-th training sequence."""
        s = self.settings
        rng = np.random.default_rng([s.seed, index])
        t = s.context
        if rng.random() < s.repeat_fraction:
            parts: list[Any] = []
            total = 0
            while total < t:
                sent = self.sentences[int(rng.integers(len(self.sentences)))]
                parts += [sent, [self.eos], sent, [self.eos]]
                total += 2 * len(sent) + 2
            return np.concatenate(parts)[:t]
        start = int(rng.integers(0, len(self.stream) - t))
        return self.stream[start:start + t]

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        ids = torch.as_tensor(self.sequence(index))
        return {"input_ids": ids, "labels": ids.clone()}


# ----------------------------------------------------------------------------------------------------------
# The Trainer (also used by bench/training.py)
# ----------------------------------------------------------------------------------------------------------


def demo_data(settings: DemoSettings, tokenizer_folder: Path) -> tuple[Any, DemoDataset]:
    """The restricted tokenizer (written to ``tokenizer_folder``) and the training sequences of ``settings``."""
    texts = Path(settings.corpus).read_text(encoding="utf-8").splitlines()
    tokenizer = restricted_bpe(texts, tokenizer_folder)
    sentences = [tokenizer(text)["input_ids"] for text in texts if text.strip()]
    return tokenizer, DemoDataset(sentences, tokenizer.eos_token_id, settings,
                                  size=settings.steps * settings.batch_size)


def demo_callbacks(settings: DemoSettings, store: str | os.PathLike, tokenizer: Any, *,
                   on_record: Callable[[Any], None] | None = None) -> list[Any]:
    """The two recording callbacks of the demo: the random repeated probe and the text probe."""
    from attnviz.pipeline.training.callback import AttnvizCallback
    from attnviz.pipeline.training.probe import Probe

    s = settings
    return [
        AttnvizCallback(store, Probe(s.probe), every=s.every, series=s.series, tokenizer=tokenizer,
                        model_info=s.model_info, on_record=on_record),
        AttnvizCallback(store, Probe(s.text_probe, limit=s.text_probe_limit, max_length=s.context), every=s.every,
                        series=s.text_series, tokenizer=tokenizer, model_info=s.model_info, on_record=on_record),
    ]


def demo_trainer(settings: DemoSettings, tokenizer: Any, dataset: DemoDataset, checkpoints: Path,
                 callbacks: list[Any]) -> Any:
    """A ``transformers.Trainer`` of a fresh (seeded) demo model on ``dataset``, saving its checkpoints under
    ``checkpoints``, with ``callbacks`` (none: training without recording)."""
    import torch
    import transformers

    s = settings
    config = transformers.GPT2Config(vocab_size=len(tokenizer), n_positions=s.context, n_embd=s.hidden,
                                     n_layer=s.layers, n_head=s.heads, bos_token_id=tokenizer.eos_token_id,
                                     eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
    torch.manual_seed(s.seed)
    model = transformers.GPT2LMHeadModel(config)
    model.config._attn_implementation = "eager"
    args = transformers.TrainingArguments(
        output_dir=str(checkpoints), max_steps=s.steps, per_device_train_batch_size=s.batch_size,
        learning_rate=s.learning_rate, warmup_steps=s.warmup_steps, lr_scheduler_type="cosine", weight_decay=0.01,
        logging_steps=max(1, s.every // 5), save_steps=s.save_every, save_total_limit=1, report_to=[],
        use_cpu=True, disable_tqdm=True, dataloader_num_workers=0, seed=s.seed, data_seed=s.seed)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                   callbacks=callbacks)
    trainer.remove_callback(transformers.PrinterCallback)  # the demo says what it records, not every log line
    return trainer


# ----------------------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------------------


def _latest_checkpoint(folder: Path) -> Path | None:
    """The Trainer's latest complete checkpoint (it writes ``trainer_state.json`` last: a folder without it was
    being saved when the command was killed, and cannot be resumed from)."""
    found = sorted((p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()
                    and (p / "trainer_state.json").exists()), key=lambda p: int(p.name.split("-")[-1]))
    return found[-1] if found else None


def _drop_series(store: Path, names: list[str]) -> None:
    """Remove every checkpoint run of the named series (a new training of the demo starts them again)."""
    from attnviz.pipeline.store import StoreWriter, series_checkpoints

    if not store.exists():
        return
    writer = StoreWriter(store)
    for name in names:
        for c in series_checkpoints(writer.runs(), name, complete_only=False):
            writer.delete_run(c.run)


def _finished(model_dir: Path, settings: DemoSettings) -> dict[str, Any] | None:
    marker = model_dir / MARKER
    if not marker.exists():
        return None
    try:
        done = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return done if done.get("settings") == asdict(settings) else None


def train_demo(store: str | os.PathLike, *, out: str | os.PathLike = DEFAULT_OUT,
               settings: DemoSettings | None = None, force: bool = False, threads: int | None = None,
               say: Callable[[str], None] | None = None) -> DemoSummary:
    """Train the demo model, record its series into ``store`` and save it under ``out/model`` (see module doc).

    Nothing is done when ``out/model`` holds a model trained with the same settings and both series are
    complete, unless ``force`` (which also starts the two series again).
    """
    import torch
    import transformers

    from attnviz.pipeline.store import StoreWriter, series_checkpoints

    t0 = time.perf_counter()
    s = settings or DemoSettings()
    s.check()
    say = say or (lambda _text: None)
    store, out = Path(store), Path(out)
    model_dir, checkpoints = out / "model", out / "checkpoints"
    StoreWriter(store)  # a bad store is refused before any training
    corpus = Path(s.corpus)
    if not corpus.is_file():
        raise InputError(f"training text {corpus} does not exist: run train-demo from the attnviz folder "
                         "(it reads data/english_sentences.txt)")
    done = _finished(model_dir, s)
    if done and not force:
        runs = StoreWriter(store).runs()
        recorded = {n: [c.step for c in series_checkpoints(runs, n)] for n in (s.series, s.text_series)}
        if all(s.steps in steps for steps in recorded.values()):
            return DemoSummary(model_dir, s.steps, time.perf_counter() - t0, 0.0, done.get("final_loss"), recorded,
                               skipped=True)
    if force:
        shutil.rmtree(out, ignore_errors=True)
    resume = _latest_checkpoint(checkpoints)
    if resume is None:
        _drop_series(store, [s.series, s.text_series])  # no checkpoint to continue from: the series start again
    if threads:
        torch.set_num_threads(threads)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    tokenizer, dataset = demo_data(s, out / "tokenizer")

    def told(summary: Any) -> None:
        say(summary.line())

    trainer = demo_trainer(s, tokenizer, dataset, checkpoints,
                           demo_callbacks(s, store, tokenizer, on_record=told))
    model = trainer.model
    say(f"train-demo: {s.layers} layers x {s.heads} heads x {s.hidden}, vocabulary {len(tokenizer)}, "
        f"{s.steps} steps of {s.batch_size} x {s.context} tokens"
        + (f", resuming from {resume.name}" if resume else ""))
    t_train = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    train_seconds = time.perf_counter() - t_train
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    final_loss = float(losses[-1]) if losses else float(result.training_loss)

    staging = out / "model.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / MARKER).write_text(json.dumps({"settings": asdict(s), "final_loss": final_loss,
                                              "train_seconds": train_seconds}, indent=1), encoding="utf-8")
    shutil.rmtree(model_dir, ignore_errors=True)
    os.replace(staging, model_dir)
    runs = StoreWriter(store).runs()
    recorded = {n: [c.step for c in series_checkpoints(runs, n)] for n in (s.series, s.text_series)}
    return DemoSummary(model_dir, s.steps, time.perf_counter() - t0, train_seconds, final_loss, recorded)


__all__ = ["DEFAULT_OUT", "DemoDataset", "DemoSettings", "DemoSummary", "demo_callbacks", "demo_data", "demo_trainer",
           "restricted_bpe", "train_demo"]
