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
from ..precisions import PRECISIONS, canonical  # noqa: F401  (PRECISIONS: re-exported for the CLI's choices)
from .choice import BACKENDS, Choice, choose, locate  # noqa: F401  (re-exported)


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
    """Open `model` (a folder or hub id) with the named backend, or the natural one for it (choice.choose says
    which); the onnx and openvino backends on a PyTorch checkpoint export it once into the cache (export_cache.py)."""
    from .export_cache import cached_export

    options["precision"] = canonical(options.get("precision"))
    choice, folder = locate(model, backend, options["precision"], compile=bool(options.get("compile")), task=task)
    if choice.backend == "torch":
        return _torch(folder, task, options)
    options.pop("compile", None)  # refused by choose for every other backend
    if choice.backend == "keras":  # TensorFlow is an optional extra and slow to import: only when asked for
        return _keras(model, task, options)
    if choice.export or choice.cached:
        folder = cached_export(folder, task, choice.graph, create=True)
    if choice.backend == "openvino":  # an optional extra: only when asked for
        return _openvino(folder, task, options)
    return _onnx(folder, task, options)


def _onnx(folder, task, options):
    from .onnx import OnnxBackend

    return OnnxBackend.load(folder, task, **options)


def _openvino(folder, task, options):
    from .openvino import OpenVinoBackend

    return OpenVinoBackend.load(folder, task, **options)


def _keras(model, task, options):
    from .keras import KerasBackend

    return KerasBackend.load(model, task, **options)


def _torch(model, task, options):
    from .torch import TorchBackend

    return TorchBackend.load(model, task, **options)
