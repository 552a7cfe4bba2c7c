"""Backends run the network on numpy arrays; pipelines are written against this interface alone.

A backend has `config`, `task` and `folder`, and one method:

    run(input_ids, attention_mask, token_type_ids=None, logits_at=None) -> dict[str, np.ndarray]

with int64 (B, T) inputs, and outputs named as Optimum names them (`last_hidden_state`, `logits`,
`start_logits`, `end_logits`). `logits_at`, a bool (B, T) array, asks a masked-LM backend for logits
at those positions only, as an (N, vocab) array in row order.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Protocol

import numpy as np

from ..config import Config
from ..errors import UserError

from ..precisions import PRECISIONS, SUPPORTED, backends_for, canonical

BACKENDS = tuple(SUPPORTED)


class Backend(Protocol):
    config: Config
    task: str
    folder: Path

    def run(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        token_type_ids: np.ndarray | None = None,
        logits_at: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]: ...


def load_backend(model: str | Path, task: str | None = None, backend: str | None = None, **options) -> Backend:
    """Open `model` (a folder or hub id) with the named backend, or the natural one for it.

    Natural: PyTorch for fp32 and bf16 on a PyTorch checkpoint (or its cached ONNX export, if one was made);
    ONNX Runtime for a folder or hub repository that holds only ONNX graphs, for the ONNX precisions (int8,
    fp16, q4, q4f16), and wherever PyTorch is not installed. The onnx backend on a PyTorch checkpoint
    exports it once into the cache (export_cache.py). A hub repository is downloaded for what is run: its
    PyTorch weights, or the one graph of the precision asked for.
    """
    if backend is not None and backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    from .. import hub
    from .export_cache import cached_export

    precision = options["precision"] = canonical(options.get("precision"))
    if backend is not None and precision not in SUPPORTED[backend]:
        raise UserError(f"precision {precision!r} is not available with the {backend} backend (it runs "
                        f"{', '.join(SUPPORTED[backend])}); {precision} runs on {' or '.join(backends_for(precision))}")
    if backend in ("onnx", "keras"):  # refused before the onnx backend exports a checkpoint (_onnx checks the rest)
        _torch_only(options, f"the {backend} backend")
    if backend == "keras":  # only when asked for: TensorFlow is an optional extra and slow to import
        return _keras(model, task, options)

    torch_installed = importlib.util.find_spec("torch") is not None
    if backend is None and torch_installed and precision in SUPPORTED["torch"]:
        folder = hub.resolve(model, need="torch")
        if hub.has_torch_weights(folder):
            # a cached export serves the checkpoint, unless it is to be compiled (PyTorch's)
            cached = (cached_export(folder, task, precision, create=False)
                      if precision in SUPPORTED["onnx"] and not options.get("compile") else None)
            return _onnx(cached, task, options) if cached is not None else _torch(folder, task, options)
        if folder == Path(model).expanduser() and not hub.has_onnx(folder):
            return _torch(folder, task, options)  # a local folder with no weights at all: its loader says so
        if precision == "bf16":  # no weights to hold in bfloat16: say what the folder is
            raise UserError(f"{model} holds no PyTorch weights, so bf16 (PyTorch's) cannot run it; choose one of "
                            "the ONNX precisions it has (--precision fp32, int8, ...)")
        backend = "onnx"  # an exported folder, or a hub repository of ONNX graphs alone
    if backend == "torch" or (backend is None and precision not in SUPPORTED["onnx"]):
        if not torch_installed:
            raise UserError(
                f"the torch backend{' (for bf16)' if precision == 'bf16' else ''} needs PyTorch: install the torch "
                "extra (pip install 'distilbert[torch]'), or export the model to ONNX and use the onnx backend"
            )
        return _torch(model, task, options)
    folder = hub.resolve(model, need="onnx", precision=precision)
    if hub.locate_onnx(folder, precision) is None and torch_installed:
        source = folder if hub.has_torch_weights(folder) else hub.resolve(model, need="torch")
        if hub.has_torch_weights(source):  # a PyTorch checkpoint: export it once, validated, into the cache
            folder = cached_export(source, task, precision, create=True)
    return _onnx(folder, task, options)


def _onnx(folder, task, options):
    from .onnx import OnnxBackend

    _torch_only(options, "the onnx backend")  # an exported folder, or no PyTorch
    return OnnxBackend.load(folder, task, **options)


def _keras(model, task, options):
    from .keras import KerasBackend

    return KerasBackend.load(model, task, **options)


def _torch(model, task, options):
    from .torch import TorchBackend

    return TorchBackend.load(model, task, **options)


def _torch_only(options: dict, where: str) -> None:
    if options.pop("compile", False):
        raise UserError(f"compile is for the torch backend, not {where} (a PyTorch checkpoint can be compiled, "
                        "an ONNX export cannot): choose the torch backend, or leave compile out")
