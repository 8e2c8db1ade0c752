"""Pure logic of the Playground tab's controls (no Dash callbacks, no I/O but the model_info files): the model
list and its selection, the time-step slider, the view state, and the checks of what the browser sends back."""

from __future__ import annotations

import os
from typing import Any

from attnviz.dashboard.callback_inputs import InputRefusedError
from attnviz.dashboard.playground import ids
from attnviz.dashboard.urlstate import ViewState
from attnviz.pipeline.models.heads import prediction_head
from attnviz.pipeline.models.info import ModelInfo, ModelInfoError, get_model_info, known_models
from attnviz.pipeline.playground.records import RESULT_RUN, TASK_OF_INFO_TASK, TASKS, model_defaults
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


# --------------------------------------------------------------------------------------------------------
# A copied link: the URL fragment's pg.* entries (dashboard/urlstate.py) as the page's controls and its job
# --------------------------------------------------------------------------------------------------------

#: The job controls (``callbacks.JOB_STATES`` order) and the fragment key each is kept under.
JOB_KEYS: tuple[str, ...] = ("model", "layers", "heads", "hidden", "seed", "task", "input", "text", "second",
                             "length", "rseed", "gen_n", "mode", "temp", "gen_seed", "mask")
#: What each job control holds before anything is chosen (the layout's values).
JOB_DEFAULTS: dict[str, Any] = {"input": "typed", "text": "The quick brown fox jumps over the lazy dog.",
                                "second": "", "length": 12, "rseed": 0, "gen_n": 8, "mode": "greedy", "temp": 1.0,
                                "gen_seed": 0, "mask": None}
_FLOAT_KEYS = ("temp",)
_INT_KEYS = ("layers", "heads", "hidden", "seed", "length", "rseed", "gen_n", "gen_seed", "mask")


def _number(key: str, raw: str | None, default: Any) -> Any:
    if raw is None or raw == "":
        return default
    try:
        return float(raw) if key in _FLOAT_KEYS else int(raw)
    except ValueError:
        return default


def restore_request(wish: dict[str, str], infos: dict[str, ModelInfo]) -> dict[str, Any]:
    """What a link's Playground entries ask for (see :func:`attnviz.dashboard.urlstate.playground_wish`):
    ``values`` (every job control, in ``JOB_KEYS`` order: the link's, else the model's or the layout's
    defaults), the translation languages ``src``/``tgt``, ``op`` (``run``/``predict``: the result to compute again,
    or None), its ``view`` (kind, layer, head, step) and a ``note`` for what could not be restored ("" if none).
    Without entries (or an unknown model) the values are the page's defaults and there is no job."""
    note = ""
    model = wish.get("model")
    if model is not None and model not in infos:
        note = f"model {model!r} of this link is not in this installation's model_info: showing the default model"
    if model not in infos:
        model, wish = default_model(infos), {}
    info = infos.get(model or "")
    values: dict[str, Any] = {k: _number(k, wish.get(k), v) if k in _INT_KEYS or k in _FLOAT_KEYS
                              else wish.get(k, v) for k, v in JOB_DEFAULTS.items()}
    values["model"] = model
    task = wish.get("task")
    if info is not None:
        allowed = _ALLOWED_TASKS[info.family]
        default_task = TASK_OF_INFO_TASK[info.tasks[0]]
        task = task if task in allowed and task in TASKS else default_task
        d = model_defaults(info)
        for key, name in (("layers", "layers"), ("heads", "heads"), ("hidden", "hidden"), ("seed", "seed")):
            values[key] = _number(key, wish.get(key), d[name]) if info.random_weights else d[name]
    values["task"] = task or "single"
    if values["input"] not in ("typed", "random"):
        values["input"] = "typed"
    if values["mode"] not in ("greedy", "sample"):
        values["mode"] = "greedy"
    op = wish.get("result") if wish.get("result") in ("run", "predict") else None
    view = {"kind": wish.get("kind"), "layer": as_int(wish.get("layer")), "head": wish.get("head"),
            "step": as_int(wish.get("step"))}
    return {"values": [values[k] for k in JOB_KEYS], "src": wish.get("src"), "tgt": wish.get("tgt"), "op": op,
            "view": view, "note": note}


def pending_of(data: Any) -> dict[str, Any] | None:
    """The ``pg-pending`` store (a link's job, see :func:`restore_request`) as a callback received it: None when
    empty; InputRefusedError when it lacks what the callbacks read (the server wrote it, so a client crafted it)."""
    if not data:
        return None
    ok = (isinstance(data, dict) and isinstance(data.get("values"), list) and len(data["values"]) == len(JOB_KEYS)
          and data.get("op") in (None, "run", "predict")
          and (data.get("view") is None or isinstance(data.get("view"), dict)))
    if not ok:
        raise InputRefusedError("the playground's pending job is not a job request")
    return data


def restored_view(view: dict[str, Any] | None, kinds: list[str], shape: dict[str, Any], step_bounds: Any
                  ) -> dict[str, Any]:
    """The parts of a link's view (kind, layer, head, step) that a new result has: each checked against the
    result's kinds, its layers × heads and the time-step slider's ``(lo, hi)`` for the kind (left out if not)."""
    out: dict[str, Any] = {}
    if not view:
        return out
    kind = view.get("kind")
    if kind in kinds:
        out["kind"] = kind
    layers, heads = shape.get(out.get("kind", kinds[0]), (0, 0))
    layer = view.get("layer")
    if isinstance(layer, int) and 0 <= layer < layers:
        out["layer"] = layer
    head = view.get("head")
    number = as_int(head)
    if head == "mean":
        out["head"] = "mean"
    elif number is not None and 0 <= number < heads:
        out["head"] = number
    step = view.get("step")
    if isinstance(step, int) and step_bounds is not None and step_bounds[0] <= step <= step_bounds[1]:
        out["step"] = step
    return out


def predict_block(model: str | None, summary: dict | None) -> str:
    """Why "Predict output words" cannot run for ``model`` (the reason shown beside the disabled button), or ""
    when it can (or it is not known before the model runs: a hub model offline)."""
    try:
        info = get_model_info(model or "")
    except ModelInfoError:
        return ""
    if summary and summary.get("model") == info.name and summary.get("has_lm_head") is False:
        has_head: bool | None = False
    else:
        has_head = prediction_head(info)
    if has_head is not False:
        return ""
    if info.family == "encoder":
        return (f"{info.name} has no masked-language-model head (its checkpoint holds only the encoder), so it "
                "cannot predict masked words")
    return f"{info.name} has no language-model head, so it cannot predict words"
