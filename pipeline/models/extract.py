"""Run a loaded model on examples and collect attention, optional captures and metrics (torch side).

This is the one code path used by ``attnviz precompute`` and by the dashboard's playground.
"""

from __future__ import annotations

import threading
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch

from attnviz.pipeline import token_classes as tc
from attnviz.pipeline.metrics import VALUE_WEIGHTED_PREFIX, attention_metrics
from attnviz.pipeline.models import norms as value_norms
from attnviz.pipeline.models import taps
from attnviz.pipeline.models.loading import LoadedModel
from attnviz.pipeline.precompute.inputs import InputExample
from attnviz.pipeline.records import SIDE_OF_KIND, ExampleResult, TokenSequence

#: Characters of a line kept before tokenizing: a guard against pathological lines (flagged as truncated).
CHARS_PER_TOKEN_LIMIT = 40
_TORCH_DTYPES = {"float16": torch.float16, "float32": torch.float32}
#: Serializes the one tracing of a model's attention sites when several threads run batches of it.
_DISCOVERY_LOCK = threading.Lock()

#: Default module-name suffixes (inside one layer) of the Q/K/V projections, by transformers model_type.
QKV_SUFFIXES: dict[str, dict[str, str]] = {
    "bert": {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value"},
    "roberta": {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value"},
    "albert": {"query": "attention.query", "key": "attention.key", "value": "attention.value"},
    "distilbert": {"query": "attention.q_lin", "key": "attention.k_lin", "value": "attention.v_lin"},
    "gpt2": {"fused": "attn.c_attn"},
    "bart": {"query": "q_proj", "key": "k_proj", "value": "v_proj"},
    "marian": {"query": "q_proj", "key": "k_proj", "value": "v_proj"},
    "mbart": {"query": "q_proj", "key": "k_proj", "value": "v_proj"},
}


@dataclass
class EncodedExample:
    """Token ids of one example, ready for batching."""

    example: InputExample
    source_ids: list[int]
    target_ids: list[int] | None  #: decoder input ids (teacher forcing) for encoder-decoder models
    truncated: bool

    @property
    def size(self) -> int:
        return len(self.source_ids) + len(self.target_ids or [])


@dataclass
class TokenClassifier:
    """Token strings and ``attnviz.pipeline.token_classes`` flags from the tokenizer, cached per token id."""

    lm: LoadedModel
    _flags: dict[int, int] = field(default_factory=dict)
    _strings: dict[int, str] = field(default_factory=dict)
    _specials: tuple[set[int], set[int], set[int]] | None = None

    def flags(self, ids: Sequence[int]) -> np.ndarray:
        """``[len(ids)]`` uint8 flags of the tokens."""
        cache = self._flags
        missing = sorted({i for i in ids if i not in cache})
        if missing:
            self._classify(missing)
        return np.array([cache[i] for i in ids], dtype=np.uint8)

    def strings(self, ids: Sequence[int]) -> list[str]:
        """The tokenizer's token strings (``convert_ids_to_tokens``)."""
        cache = self._strings
        missing = sorted({i for i in ids if i not in cache})
        if missing:
            cache.update(zip(missing, self.lm.tokenizer.convert_ids_to_tokens(missing), strict=True))
        return [cache[i] for i in ids]

    def learn(self, ids: Iterable[int]) -> None:
        """Read the flags and strings of these token ids now (e.g. every id of an input while it is prepared), so
        that computing batches later finds them cached."""
        unique = sorted(set(ids))
        self.flags(unique)
        self.strings(unique)

    def _classify(self, token_ids: list[int]) -> None:
        """Flags of new token ids: special / CLS-BOS / SEP-EOS from the tokenizer's ids, punctuation when the
        token's own text (decoded alone, spaces stripped) is all Unicode punctuation."""
        tok = self.lm.tokenizer
        special, cls_bos, sep_eos = self._special_ids()
        for token_id, token in zip(token_ids, self.strings(token_ids), strict=True):
            f = tc.SPECIAL if token_id in special else 0
            if token_id in cls_bos:
                f |= tc.CLS_OR_BOS
            if token_id in sep_eos:
                f |= tc.SEP_OR_EOS
            if token_id not in special and _is_punctuation(tok.convert_tokens_to_string([token])):
                f |= tc.PUNCTUATION
            self._flags[token_id] = f

    def _special_ids(self) -> tuple[set[int], set[int], set[int]]:
        """(special, CLS/BOS, SEP/EOS) token ids, read from the tokenizer once."""
        if self._specials is None:
            tok = self.lm.tokenizer
            self._specials = (set(tok.all_special_ids), {tok.cls_token_id, tok.bos_token_id} - {None},
                              {tok.sep_token_id, tok.eos_token_id} - {None})
        return self._specials


def _is_punctuation(text: str) -> bool:
    text = text.strip()
    return bool(text) and all(unicodedata.category(ch).startswith("P") for ch in text)


def encode(lm: LoadedModel, example: InputExample, max_length: int | None = None) -> EncodedExample:
    """Tokenize one example (truncating to the model's limit and flagging it)."""
    tok = lm.tokenizer
    limit = min(max_length or lm.max_length, lm.max_length)
    truncated = False
    if example.token_ids is not None:
        ids = list(example.token_ids)
    else:
        text = example.text
        if len(text) > limit * CHARS_PER_TOKEN_LIMIT:
            text, truncated = text[: limit * CHARS_PER_TOKEN_LIMIT], True
        ids = tok(text, add_special_tokens=True)["input_ids"]
    if len(ids) > limit:
        truncated = True
        if example.token_ids is None:
            ids = tok(text, add_special_tokens=True, truncation=True, max_length=limit)["input_ids"]
        # The tokenizer keeps its special tokens even past max_length; the limit holds whatever it returns.
        ids = ids[:limit]
    target_ids = None
    if lm.family == "encoder-decoder":
        start = lm.config.decoder_start_token_id
        tgt = tok(text_target=example.target, add_special_tokens=False)["input_ids"] if example.target else []
        target_ids = [start, *tgt]
        if len(target_ids) > limit:
            target_ids, truncated = target_ids[:limit], True
    return EncodedExample(example, ids, target_ids, truncated)


def length_batches(encoded: Sequence[EncodedExample], batch_size: int) -> Iterator[list[EncodedExample]]:
    """Batches of examples of similar length (sorted by length, stable), so padding wastes little."""
    order = sorted(range(len(encoded)), key=lambda k: (encoded[k].size, k))
    for lo in range(0, len(order), batch_size):
        yield [encoded[k] for k in order[lo:lo + batch_size]]


def _pad(seqs: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for n, s in enumerate(seqs):
        ids[n, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[n, : len(s)] = 1
    return ids, mask


class _QKVRecorder:
    """Forward hooks on the Q/K/V projections; outputs are kept per attention kind in call (= layer) order."""

    def __init__(self, lm: LoadedModel) -> None:
        self.lm = lm
        spec = lm.info.qkv_modules.model_dump(exclude_none=True) if lm.info.qkv_modules else \
            QKV_SUFFIXES.get(lm.config.model_type)
        if not spec:
            raise ValueError(f"model {lm.info.name!r} ({lm.config.model_type}): Q/K/V module names unknown; "
                             "set qkv_modules in its model_info file")
        self.records: dict[str, dict[str, list[torch.Tensor]]] = {}
        self.handles = []
        base = cast(torch.nn.Module, lm.model.base_model)
        for name, module in base.named_modules():
            for role, suffix in spec.items():
                if name == suffix or name.endswith("." + suffix):
                    kind = self._kind_of(name)
                    self.handles.append(module.register_forward_hook(self._hook(kind, role)))

    def _kind_of(self, name: str) -> str:
        if self.lm.family != "encoder-decoder":
            return "self"
        if "encoder_attn" in name or "EncDecAttention" in name:
            return "cross"
        return "decoder" if name.startswith("decoder.") or ".decoder." in name else "self"

    def _hook(self, kind: str, role: str):  # noqa: ANN202 - torch hook signature
        owner = threading.get_ident()

        def hook(_module: torch.nn.Module, _inputs: object, output: torch.Tensor) -> None:
            if threading.get_ident() == owner:  # not another thread's forward pass of the same model
                self.records.setdefault(kind, {}).setdefault(role, []).append(output.detach())
        return hook

    def stacked(self, kind: str, heads: int, rows: Sequence[int] | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Q, K, V of a kind as [B, L, H, T, d] float32 arrays on the host; ``rows``: only these batch rows
        cross from the model's device (the others are left out: [len(rows), ...])."""
        rec = self.records[kind]
        if "fused" in rec:
            parts = [torch.stack([t.chunk(3, dim=-1)[n] for t in rec["fused"]], 1) for n in range(3)]
        else:
            parts = [torch.stack(rec[r], 1) for r in ("query", "key", "value")]
        out = []
        for p in parts:  # [B, L, T, H*d] -> [B, L, H, T, d]
            if rows is not None:
                p = p[torch.as_tensor(list(rows), dtype=torch.long, device=p.device)]
            b, layers, t, hd = p.shape
            out.append(p.reshape(b, layers, t, heads, hd // heads).permute(0, 1, 3, 2, 4).float().cpu().numpy())
        return out[0], out[1], out[2]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@dataclass
class BatchOutput:
    """What one forward pass returned, before metrics and per-example slicing (see :func:`collect_batch`).

    Tensors stay on the model's device; only the masks (and Q/K/V, of the rows asked for) are host arrays."""

    attentions: dict[str, tuple[torch.Tensor, ...]]  #: kind -> per-layer [B, H, Tq, Tk]
    hidden: dict[str, tuple[torch.Tensor, ...]]  #: side -> per-layer [B, T, D] (empty without hidden capture)
    masks: dict[str, np.ndarray]  #: side -> [B, T] bool
    qkv: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  #: kind -> Q, K, V [len(qkv_rows), L, H, T, d]
    qkv_rows: list[int] = field(default_factory=list)  #: the batch rows ``qkv`` holds, in order
    #: kind -> ‖f_h(x_j)‖ ``[B, L, H, Tk]`` on the model's device (``--capture norms``; every row: their metrics
    #: are stored for every example)
    norms: dict[str, torch.Tensor] = field(default_factory=dict)


def forward_batch(lm: LoadedModel, batch: Sequence[EncodedExample], *, capture: Sequence[str] = ("attention",),
                  full: bool = False, keep: Sequence[bool] | None = None) -> BatchOutput:
    """The eager forward pass of one padded batch (right padding), with attention and the asked captures.

    Unless hidden states or embeddings are captured (or ``full``), the pass stops right after the model's last
    attention (:mod:`attnviz.pipeline.models.taps`): nothing computed later changes an attention weight.
    ``keep``: which examples keep their raw tensors (default all); Q/K/V are recorded only for those, and a
    batch that keeps none captures nothing but attention (for its metrics) and may stop early.
    """
    tok = lm.tokenizer
    encdec = lm.family == "encoder-decoder"
    rows = list(range(len(batch))) if keep is None else [n for n, k in enumerate(keep) if k]
    if not rows:  # nothing kept: only what the metrics need
        capture = ("attention", "norms") if "norms" in capture else ("attention",)
    want_hidden = "hidden" in capture or "embeddings" in capture
    src_ids, src_mask = _pad([e.source_ids for e in batch], tok.pad_token_id)
    dev = lm.device
    kwargs: dict[str, Any] = {"input_ids": src_ids.to(dev), "attention_mask": src_mask.to(dev)}
    masks = {"source": src_mask.bool().numpy()}
    if encdec:
        tgt_ids, tgt_mask = _pad([e.target_ids or [] for e in batch], tok.pad_token_id)
        kwargs.update(decoder_input_ids=tgt_ids.to(dev), decoder_attention_mask=tgt_mask.to(dev))
        masks["target"] = tgt_mask.bool().numpy()
    if encdec or lm.family == "decoder":
        kwargs["use_cache"] = False
    hidden_t: dict[str, tuple[torch.Tensor, ...]] = {}

    base = cast(torch.nn.Module, lm.model.base_model)

    def run() -> dict[str, tuple[torch.Tensor, ...]]:
        out = base(**kwargs, output_attentions=True, output_hidden_states=want_hidden)
        if encdec:
            hidden_t.update(source=out.encoder_hidden_states, target=out.decoder_hidden_states)
            return {"self": out.encoder_attentions, "decoder": out.decoder_attentions,
                    "cross": out.cross_attentions}
        hidden_t.update(source=out.hidden_states)
        return {"self": out.attentions}

    stop_early = not (want_hidden or full)
    if stop_early and not taps.is_traced(base):
        with _DISCOVERY_LOCK, torch.inference_mode():  # once per model, before any capture hook is attached
            if not taps.is_traced(base):  # another thread's batch may have traced it meanwhile
                taps.discover(base, run)
    sites = taps.known_sites(base) if stop_early else None
    recorder = _QKVRecorder(lm) if "qkv" in capture else None
    norm_recorder = value_norms.ValueNormRecorder(lm) if "norms" in capture else None
    try:
        with torch.inference_mode():
            attn_t = taps.forward_until_last_attention(sites, run) if sites is not None else run()
    finally:
        if recorder:
            recorder.remove()
        if norm_recorder:
            norm_recorder.remove()
    shape = lm.shape()
    subset = None if len(rows) == len(batch) else rows
    qkv = {kind: recorder.stacked(kind, shape[kind][1], subset) for kind in attn_t} if recorder else {}
    norms = {kind: value_norms.stacked_norms(norm_recorder.records, kind) for kind in attn_t} if norm_recorder else {}
    return BatchOutput(dict(attn_t), hidden_t if want_hidden else {}, masks, qkv, rows if recorder else [], norms)


def run_batch(lm: LoadedModel, batch: Sequence[EncodedExample], *, capture: Sequence[str] = ("attention",),
              store_dtype: str = "float16", classifier: TokenClassifier | None = None) -> list[ExampleResult]:
    """One eager forward pass over a batch; returns one ExampleResult per example (input order kept).

    Metrics are computed from float32 attention before arrays are cast to ``store_dtype``.
    """
    out = forward_batch(lm, batch, capture=capture)
    return collect_batch(lm, batch, out, capture=capture, store_dtype=store_dtype, classifier=classifier)


def metrics_on_device(lm: LoadedModel) -> bool:
    """Whether a batch's metrics are computed with torch where the model runs
    (:func:`attnviz.pipeline.models.torch_metrics.attention_metrics_torch`): on any accelerator, so that only the
    metric arrays and the kept slices cross to the host. On the CPU the numpy implementation
    (:func:`attnviz.pipeline.metrics.attention_metrics`) is used: 2-3x faster there than torch at 30-45 tokens
    (batches of 32, 2 threads; torch was 1.4x faster at 12 tokens, where both take a few milliseconds)."""
    return lm.device.type != "cpu"


def collect_batch(lm: LoadedModel, batch: Sequence[EncodedExample], out: BatchOutput, *,
                  capture: Sequence[str] = ("attention",), store_dtype: str = "float16",
                  classifier: TokenClassifier | None = None, keep: Sequence[bool] | None = None,
                  torch_metrics: bool | None = None) -> list[ExampleResult]:
    """Metrics (from float32) and per-example slices of one forward pass; arrays cast to ``store_dtype``.

    ``keep``: which examples keep their raw attention, Q/K/V, hidden states and embeddings (default all); the
    others get empty arrays (``ExampleResult.kept`` False) and only their metrics and tokens are stored.
    ``torch_metrics``: compute the metrics with torch on the model's device (default: :func:`metrics_on_device`).
    """
    classifier = classifier or TokenClassifier(lm)
    encdec = lm.family == "encoder-decoder"
    keep = [True] * len(batch) if keep is None else [bool(k) for k in keep]
    kept_rows = [n for n, k in enumerate(keep) if k]
    on_device = metrics_on_device(lm) if torch_metrics is None else torch_metrics
    attn_t, hidden_t, masks = out.attentions, out.hidden, out.masks
    qkv_at = {n: k for k, n in enumerate(out.qkv_rows)}

    flags = {"source": [classifier.flags(e.source_ids) for e in batch]}
    if encdec:
        flags["target"] = [classifier.flags(e.target_ids or []) for e in batch]

    dtype = np.dtype(store_dtype)
    kinds_attn: dict[str, np.ndarray] = {}
    kinds_metrics: dict[str, dict[str, np.ndarray]] = {}
    kinds_norms: dict[str, np.ndarray] = {}  #: kind -> [B_kept, L, H, Tq, Tk] value-weighted norms
    shapes: dict[str, tuple[int, int]] = {}
    for kind, layers in attn_t.items():
        shapes[kind] = (len(layers), layers[0].shape[1])
        q_side, k_side = ("target", "source") if kind == "cross" else (SIDE_OF_KIND[kind],) * 2
        key_flags = np.zeros(masks[k_side].shape, dtype=np.uint8)
        key_ids = np.full(masks[k_side].shape, -1, dtype=np.int64)  # padding: never read (not a valid key)
        for n, (fl, enc) in enumerate(zip(flags[k_side], batch, strict=True)):
            key_flags[n, : len(fl)] = fl
            ids_n = enc.source_ids if k_side == "source" else (enc.target_ids or [])
            key_ids[n, : len(ids_n)] = ids_n
        causal, self_attention = (kind == "decoder" or lm.family == "decoder"), kind != "cross"
        if on_device:
            from attnviz.pipeline.models.torch_metrics import attention_metrics_torch

            found = attention_metrics_torch(torch.stack(layers, 1), masks[q_side], masks[k_side], key_flags,
                                            causal=causal, self_attention=self_attention, key_ids=key_ids)
            kinds_metrics[kind] = {name: values.cpu().numpy() for name, values in found.items()}
        else:
            # One layer at a time, on the model's own float32 output (no [B, L, H, Tq, Tk] copy): the same numbers
            # as the whole batch at once, 2-3x faster (the chunks of examples stay in the cache).
            per_layer = [attention_metrics(layer.float().numpy()[:, None], masks[q_side], masks[k_side], key_flags,
                                           causal=causal, self_attention=self_attention, key_ids=key_ids)
                         for layer in layers]
            kinds_metrics[kind] = {name: np.concatenate([m[name] for m in per_layer], axis=1)
                                   for name in per_layer[0]}
        if kind in out.norms:
            kinds_metrics[kind].update(_value_weighted_metrics(layers, out.norms[kind], masks[q_side], masks[k_side],
                                                               key_flags, key_ids, causal=causal,
                                                               self_attention=self_attention))
            if kept_rows:
                rows_t = None if len(kept_rows) == len(batch) else torch.as_tensor(kept_rows)
                kinds_norms[kind] = np.stack([
                    value_norms.value_weighted(layer if rows_t is None else layer[rows_t.to(layer.device)],
                                               (out.norms[kind] if rows_t is None
                                                else out.norms[kind][rows_t.to(layer.device)])[:, li])
                    .cpu().numpy().astype(dtype) for li, layer in enumerate(layers)], 1)
        if not kept_rows:
            continue
        # Only the kept rows cross to the host, each layer cast to the store's dtype where the model runs (torch's
        # float16 cast is ~10x numpy's astype on the CPU), then stacked: [B_kept, L, H, Tq, Tk].
        rows = None if len(kept_rows) == len(batch) else torch.as_tensor(kept_rows, device=layers[0].device)
        first = layers[0]
        kept = torch.empty((len(kept_rows), len(layers), *first.shape[1:]), device=first.device,
                           dtype=torch.float32 if dtype == np.float32 else _TORCH_DTYPES[dtype.name])
        for li, layer in enumerate(layers):
            kept[:, li].copy_(layer if rows is None else layer[rows])  # cast while copying: one pass
        kinds_attn[kind] = kept.cpu().numpy()

    attn_at = {n: k for k, n in enumerate(kept_rows)}
    results = []
    for n, enc in enumerate(batch):
        lengths = {"source": len(enc.source_ids), "target": len(enc.target_ids or [])}
        attention, metrics, qkv_n, norms_n = {}, {}, {}, {}
        for kind in attn_t:
            layers_heads = shapes[kind]
            tq, tk = (lengths["target"], lengths["source"]) if kind == "cross" else (lengths[SIDE_OF_KIND[kind]],) * 2
            metrics[kind] = {name: values[n] for name, values in kinds_metrics[kind].items()}
            if keep[n]:
                attention[kind] = kinds_attn[kind][attn_at[n], :, :, :tq, :tk]  # a view (the writer copies once)
            else:
                attention[kind] = np.zeros((*layers_heads, 0, 0), dtype=dtype)
            if kind in out.norms:
                norms_n[kind] = (kinds_norms[kind][attn_at[n], :, :, :tq, :tk] if keep[n]
                                 else np.zeros((*layers_heads, 0, 0), dtype=dtype))
            if "qkv" in capture:
                if keep[n]:
                    q, k, v = out.qkv[kind]
                    r = qkv_at[n]
                    qkv_n[kind] = (q[r, :, :, :tq].astype(dtype), k[r, :, :, :tk].astype(dtype),
                                   v[r, :, :, :tk].astype(dtype))
                else:
                    empty = np.zeros((*layers_heads, 0, 0), dtype=dtype)
                    qkv_n[kind] = (empty, empty, empty)
        hidden, embeddings = {}, {}
        for side in (("source", "target") if encdec else ("source",)):
            if not ("hidden" in capture or "embeddings" in capture):
                break
            t = lengths[side]
            if keep[n]:
                stack = torch.stack(hidden_t[side], 0)[:, n, :t].float().cpu().numpy()  # [L+1, T, D]
            else:
                stack = np.zeros((1, 0, 0), dtype=np.float32)
            if "hidden" in capture:
                hidden[side] = stack.astype(dtype)
            if "embeddings" in capture:
                embeddings[side] = (stack[0].astype(dtype), stack[-1].astype(dtype))
        ex = enc.example
        source = TokenSequence(np.asarray(enc.source_ids, dtype=np.int32), classifier.strings(enc.source_ids),
                               flags["source"][n])
        target = None
        if encdec:
            target = TokenSequence(np.asarray(enc.target_ids, dtype=np.int32),
                                   classifier.strings(enc.target_ids or []), flags["target"][n])
        results.append(ExampleResult(
            input_index=ex.index, text=ex.text, source=source, attention=attention, metrics=metrics,
            truncated=enc.truncated, target_text=ex.target, target=target, label=ex.label, meta=ex.meta,
            qkv=qkv_n, hidden=hidden, embeddings=embeddings, kept=keep[n], norms=norms_n))
    return results


def _value_weighted_metrics(layers: Sequence[torch.Tensor], norms: torch.Tensor, query_mask: np.ndarray,
                            key_mask: np.ndarray, key_flags: np.ndarray, key_ids: np.ndarray, *, causal: bool,
                            self_attention: bool) -> dict[str, np.ndarray]:
    """The per-head metrics (``vw_<name>``, ``[B, L, H]``) of the row-normalized value-weighted norms
    ``ñ_ij = α_ij ‖f(x_j)‖ / Σ_k α_ik ‖f(x_k)‖`` (:func:`attnviz.pipeline.models.norms.normalize_rows`), one layer
    at a time, with the numpy metrics of the attention weights."""
    per_layer = []
    for li, layer in enumerate(layers):
        weighted = value_norms.value_weighted(layer, norms[:, li]).cpu().numpy()[:, None]
        normalized = value_norms.normalize_rows(weighted, query_mask, key_mask, causal=causal)
        per_layer.append(attention_metrics(normalized, query_mask, key_mask, key_flags, causal=causal,
                                           self_attention=self_attention, key_ids=key_ids))
    return {VALUE_WEIGHTED_PREFIX + name: np.concatenate([m[name] for m in per_layer], axis=1)
            for name in per_layer[0]}


def extract(lm: LoadedModel, examples: Sequence[InputExample], *, batch_size: int = 16,
            max_length: int | None = None, capture: Sequence[str] = ("attention",),
            store_dtype: str = "float16") -> list[ExampleResult]:
    """Tokenize, batch by length, run and collect results for ``examples`` (returned in input order)."""
    classifier = TokenClassifier(lm)
    encoded = [encode(lm, ex, max_length) for ex in examples]
    results: list[ExampleResult] = []
    for batch in length_batches(encoded, batch_size):
        results.extend(run_batch(lm, batch, capture=capture, store_dtype=store_dtype, classifier=classifier))
    return sorted(results, key=lambda r: r.input_index)
