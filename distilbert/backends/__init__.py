"""Backends run the network on numpy arrays; pipelines are written against this interface alone.

A backend has `config`, `task` and `folder`, and one method:

    run(input_ids, attention_mask, token_type_ids=None, logits_at=None) -> dict[str, np.ndarray]

with int64 (B, T) inputs, and outputs named as Optimum names them (`last_hidden_state`, `logits`,
`start_logits`, `end_logits`). `logits_at`, a bool (B, T) array, asks a masked-LM backend for logits
at those positions only, as an (N, vocab) array in row order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from ..config import Config
from ..errors import UserError

BACKENDS = ("torch", "onnx")


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

    Natural: ONNX Runtime for int8, when PyTorch is not installed, or for a folder with model.onnx and no
    PyTorch weights; PyTorch otherwise.
    """
    if backend is not None and backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend is None:
        backend = _natural_backend(model, options.get("precision", "fp32"))
    if backend == "onnx":
        from .onnx import OnnxBackend

        return OnnxBackend.load(model, task, **options)
    try:
        from .torch import TorchBackend
    except ImportError:
        raise UserError(
            "the torch backend needs PyTorch: install the torch extra (pip install 'distilbert[torch]'), "
            "or export the model to ONNX and use the onnx backend"
        ) from None
    return TorchBackend.load(model, task, **options)


def _natural_backend(model: str | Path, precision: str) -> str:
    import importlib.util

    from ..checkpoint import resolve

    if precision == "int8" or importlib.util.find_spec("torch") is None:
        return "onnx"
    from .onnx import locate

    folder = resolve(model)
    return "onnx" if not _has_torch_weights(folder) and locate(folder) is not None else "torch"


def _has_torch_weights(folder: Path) -> bool:
    from ..checkpoint import WEIGHT_FILES

    return any((folder / name).is_file() for name in WEIGHT_FILES)
