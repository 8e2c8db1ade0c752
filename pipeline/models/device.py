"""Where a model runs (``--device auto|cpu|cuda[:N]|mps``) and in which dtype (``--model-dtype``).

:func:`resolve_device` turns the option into a ``torch.device`` that exists on this machine, or refuses with one
line naming what is missing and what to use instead; :func:`pin_device` gives each dask worker of a machine with
several GPUs its own one. Options are validated for their spelling without torch
(:class:`attnviz.pipeline.precompute.options.PrecomputeOptions`); this module imports torch.
"""

from __future__ import annotations

import re

import torch

from attnviz.pipeline.precompute.inputs import InputError

#: ``--model-dtype`` name -> torch dtype.
MODEL_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16,
                                        "bfloat16": torch.bfloat16}
_CUDA = re.compile(r"^cuda(?::(\d+))?$")


class DeviceError(InputError):
    """A ``--device`` this machine does not have (one line: what is missing, what to use)."""


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def cuda_count() -> int:
    """CUDA devices torch sees here (0 without a GPU or with a CPU-only torch build)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _no_cuda_reason() -> str:
    if torch.version.cuda is None:
        return f"this torch {torch.__version__} is built without CUDA"
    return "torch sees no CUDA device (driver, CUDA_VISIBLE_DEVICES?)"


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """The torch device ``spec`` names, checked against this machine.

    ``auto``: the first CUDA device, else Apple's MPS, else the CPU. ``cuda`` is ``cuda:0``. A device that is
    absent raises :class:`DeviceError` with one line.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    text = str(spec).strip().lower()
    if text == "auto":
        if cuda_count():
            return torch.device("cuda", 0)
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not _mps_available():
            raise DeviceError("--device mps: no Apple MPS device here: use --device cpu (or auto)")
        return torch.device("mps")
    m = _CUDA.match(text)
    if m is None:
        raise DeviceError(f"unknown --device {spec!r}: use auto, cpu, cuda, cuda:N or mps")
    index = int(m.group(1) or 0)
    count = cuda_count()
    if count == 0:
        raise DeviceError(f"--device {text}: no CUDA device here ({_no_cuda_reason()}): use --device cpu (or auto)")
    if index >= count:
        raise DeviceError(f"--device {text}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}: "
                          f"use one of them")
    return torch.device("cuda", index)


def pin_device(spec: str, ordinal: int, cuda_devices: int) -> str:
    """The device one dask worker uses when the run asks for ``spec``: with ``auto`` or ``cuda`` (no index) and
    several CUDA devices, worker ``ordinal`` takes ``cuda:(ordinal mod count)`` so that each device serves its
    own workers; any other ``spec`` (``cpu``, ``cuda:N``, ``mps``, one device) is used as it is."""
    text = spec.strip().lower()
    if text in ("auto", "cuda") and cuda_devices > 1:
        return f"cuda:{ordinal % cuda_devices}"
    return text


def model_dtype(name: str) -> torch.dtype:
    """The torch dtype of a ``--model-dtype`` name."""
    try:
        return MODEL_DTYPES[name]
    except KeyError:
        raise InputError(f"unknown --model-dtype {name!r}: use {', '.join(MODEL_DTYPES)}") from None


__all__ = ["MODEL_DTYPES", "DeviceError", "cuda_count", "model_dtype", "pin_device", "resolve_device"]
