"""Pure logic of the Playground tab's controls (no Dash callbacks, no I/O but the model_info files): the model
list and its selection, the time-step slider, the view state, and the checks of what the browser sends back."""

from __future__ import annotations

import os
from typing import Any

from attnviz.dashboard.callback_inputs import InputRefusedError
from attnviz.dashboard.playground import ids
from attnviz.dashboard.urlstate import ViewState
from attnviz.pipeline.models.info import ModelInfo, ModelInfoError, get_model_info, known_models
from attnviz.pipeline.playground.records import RESULT_RUN, TASK_OF_INFO_TASK
from attnviz.pipeline.records import KIND_SIDES

#: The controls whose change makes the translation task pick a model by its languages.
_LANGUAGE_TRIGGERS = (ids.TASK, ids.SRC_LANG, ids.TGT_LANG)
#: Tasks each model family can run.
_ALLOWED_TASKS = {"encoder": ("single", "pair"), "decoder": ("lm", "single", "pair"),
                  "encoder-decoder": ("translation", "single", "lm")}


# --------------------------------------------------------------------------------------------------------
# Model list (model_info files; no torch)
# --------------------------------------------------------------------------------------------------------


def model_infos() -> dict[str, ModelInfo]:
    """Every valid model_info entry by name (invalid files are skipped; the CLI reports them)."""
    out = {}
    for name in known_models():
        try:
            out[name] = get_model_info(name)
        except ModelInfoError:
            continue
    return out


def model_options(infos: dict[str, ModelInfo]) -> list[dict[str, str]]:
    """Dropdown options: every entry, random ones labelled "(random weights)", hub ones "(needs internet)"."""
    return [{"label": info.display_name + (" (needs internet)" if info.source.kind == "hub" else ""), "value": name}
            for name, info in infos.items()]


def default_model(infos: dict[str, ModelInfo]) -> str | None:
    """The model selected at first: a random-weight decoder (it works offline), else the first entry."""
    for name, info in infos.items():
        if info.random_weights and info.family == "decoder":
            return name
    return next(iter(infos), None)


def language_options(infos: dict[str, ModelInfo]) -> tuple[list[str], list[str]]:
    """Source and target languages of the translation entries."""
    src = sorted({i.languages.source for i in infos.values() if i.languages})
    tgt = sorted({i.languages.target for i in infos.values() if i.languages})
    return src, tgt


def translation_model(infos: dict[str, ModelInfo], source: str | None, target: str | None,
                      current: str | None, *, offline: bool) -> str | None:
    """The translation entry matching the languages: the current model if it matches, else one that works
    offline when the hub is unreachable (``offline``), else the first match; None when none matches."""
    matches = [n for n, i in infos.items() if i.languages and "translation" in i.tasks
               and i.languages.source == source and i.languages.target == target]
    if not matches:
        return None
    if current in matches:
        return current
    if offline:
        local = [n for n in matches if infos[n].source.kind != "hub"]
        if local:
            return local[0]
    return matches[0]


def select_model(infos: dict[str, ModelInfo], model: str | None, task: str | None, source: str | None,
                 target: str | None, trigger: str | None) -> tuple[str | None, str | None, str]:
    """Reconcile the model, task and language selectors after one of them changed: a new model brings its
    default task (unless the current one suits it); the translation task or new languages pick the matching
    translation model. Returns (model, task, warning)."""
    info = infos.get(model or "")
    translation = trigger in _LANGUAGE_TRIGGERS and task == "translation"
    if translation and (trigger != ids.TASK or info is None or info.family != "encoder-decoder"):
        match = translation_model(infos, source, target, model, offline=_offline())
        if match is None:
            return model, "translation", (f"no translation model for {source} → {target}: add a model_info entry "
                                          "with those languages")
        return match, "translation", ""
    if info is None:
        return model, task or "single", ""
    allowed = _ALLOWED_TASKS[info.family]
    default = TASK_OF_INFO_TASK[info.tasks[0]]
    if trigger in (None, ids.MODEL):
        return model, task if task == "pair" and task in allowed else default, ""
    return model, task if task in allowed or trigger == ids.TASK else default, ""


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def random_weights(model: str | None) -> bool:
    """True when ``model`` names a random-weight model_info entry."""
    try:
        return get_model_info(model or "").random_weights
    except ModelInfoError:
        return False


def choice_args(model: str, layers: Any, heads: Any, hidden: Any, seed: Any) -> dict[str, Any]:
    """The ModelChoice fields for the worker; the configuration only for random-weight models (a trained
    model's fields are disabled in the page and ignored here)."""
    if not random_weights(model):
        return {"name": model}
    return {"name": model, "layers": as_int(layers), "heads": as_int(heads), "hidden": as_int(hidden),
            "seed": as_int(seed)}


# --------------------------------------------------------------------------------------------------------
# Values the browser sends back
# --------------------------------------------------------------------------------------------------------


def as_int(value: Any, default: int | None = None) -> int | None:
    """``value`` as an int (a number field's value), else ``default``."""
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def result_summary_of(data: Any) -> dict[str, Any] | None:
    """The ``pg-result`` store's summary (see ``PlaygroundResult.summary``) as a callback received it: None when
    empty; InputRefusedError (the app answers 400) when it lacks what the callbacks read (the server wrote it,
    so a client crafted it)."""
    if not data:
        return None
    gen = data.get("generation") if isinstance(data, dict) else None
    ok = (isinstance(data, dict) and isinstance(data.get("id"), str) and isinstance(data.get("kinds"), list)
          and bool(data["kinds"]) and all(isinstance(k, str) for k in data["kinds"])
          and _is_int(data.get("n_source")) and _is_int(data.get("n_target"))
          and (gen is None or (isinstance(gen, dict) and isinstance(gen.get("side"), str)
                               and _is_int(gen.get("prompt_length")) and _is_int(gen.get("steps")))))
    if not ok:
        raise InputRefusedError("the playground result is not a result summary")
    return data


def added_of(data: Any) -> dict[str, Any] | None:
    """The ``pg-added`` store (what the add job returned) as a callback received it: None when empty, else an
    object (InputRefusedError otherwise)."""
    if not data:
        return None
    if not isinstance(data, dict):
        raise InputRefusedError("the added-example note must be an object")
    return data


def step_range(summary: dict, kind: str) -> tuple[int, int, dict[int, str], int]:
    """(min, max, marks, default) of the time-step slider: every query position of ``kind``, or for a generated
    result the query positions that predicted each generated token (marked with the step number)."""
    q_side = KIND_SIDES.get(kind, ("source", "source"))[0]
    n = summary["n_target"] if q_side == "target" else summary["n_source"]
    gen = summary.get("generation")
    if gen and gen["side"] == q_side and gen["steps"]:
        lo = gen["prompt_length"] - 1
        hi = lo + gen["steps"] - 1
        marks = {lo + k: str(k + 1) for k in range(gen["steps"])}
        return lo, hi, marks, lo
    return 0, max(0, n - 1), {}, 0


def view_state(kind: str, layer: Any, head: Any, step: Any) -> ViewState:
    """The Example tab's selection for a playground result (run ``playground``, example 0)."""
    return ViewState(tab="playground", run=RESULT_RUN, example=0, layer=as_int(layer, 0) or 0,
                     head=None if head in (None, "mean") else as_int(head, 0), step=as_int(step, 0) or 0, kind=kind)


def layer_options(n: int) -> list[dict]:
    """Options of the layer dropdown."""
    return [{"label": f"layer {i}", "value": i} for i in range(n)]


def head_options(n: int) -> list[dict]:
    """Options of the head dropdown: the mean of all heads, then each head."""
    return [{"label": "mean of all heads", "value": "mean"}] + [{"label": f"head {h}", "value": h}
                                                                 for h in range(n)]
