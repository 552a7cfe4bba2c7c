"""Which backend runs a model: one pure function of what is known, and the look-up that learns it.

`choose` decides from facts alone (the backend and precision asked for, whether PyTorch is installed, whether
the folder holds PyTorch weights, which ONNX graphs it has, which are cached); `locate` learns those facts for
a folder or hub id, downloading no more than the choice needs. Every entry point (pipelines, the server, Ray,
evaluate, bias, attention) goes through them. What each backend runs is precisions.SUPPORTED; which ONNX graph
the backends that read graphs (onnx, openvino) need for it is precisions.GRAPHS.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..precisions import GRAPHS, SUPPORTED, backends_for, canonical, graph_for

BACKENDS = tuple(SUPPORTED)
NEEDS_TORCH = ("torch",)  # backends that run PyTorch weights in this process (keras reads them without torch)
RUNTIMES = {"torch": "PyTorch (the torch backend)", "onnx": "ONNX Runtime (the onnx backend)",
            "keras": "Keras on TensorFlow (the keras backend)", "openvino": "OpenVINO (the openvino backend)"}


def torch_available() -> bool:
    """Whether PyTorch can be imported here (without importing it: that takes seconds)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # an import hook that refuses it, or a half-removed install
        return False


@dataclass(frozen=True)
class Choice:
    backend: str
    precision: str
    export: bool = False  # a PyTorch checkpoint to export to ONNX (once, into the cache) before running
    cached: bool = False  # its cached export already has the graph

    @property
    def graph(self) -> str | None:
        """The precision of the ONNX graph the backend reads (None: it reads PyTorch weights)."""
        return graph_for(self.backend, self.precision) if self.backend in GRAPHS else None


def choose(backend: str | None, precision: str | None, *, torch_installed: bool, torch_weights: bool,
           graphs: Collection[str] = (), cached: Collection[str] = (), compile: bool = False) -> Choice:
    """The backend for a model, from facts alone; a one-line UserError where none can run it.

    Natural (backend None): PyTorch for fp32 and bf16 on a PyTorch checkpoint, or its cached ONNX export where
    one exists (unless compile, which is PyTorch's); ONNX Runtime for a folder of graphs alone, for the ONNX
    precisions, and wherever PyTorch is not installed. OpenVINO only when named. A backend that reads ONNX graphs
    (onnx, openvino) runs a checkpoint from its export: cached, or made once (PyTorch exports it).
    """
    if backend is not None and backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    precision = canonical(precision)
    if backend is not None and precision not in SUPPORTED[backend]:
        raise UserError(f"precision {precision!r} is not available with the {backend} backend (it runs "
                        f"{', '.join(SUPPORTED[backend])}); {precision} runs on "
                        + " or ".join(RUNTIMES.get(b, f"the {b} backend") for b in backends_for(precision)))
    if backend is None:
        if precision not in SUPPORTED["onnx"]:
            backend = "torch"  # bf16: PyTorch's alone
        elif compile:  # PyTorch's too, where there is a checkpoint for it and the precision is one PyTorch runs
            backend = "torch" if precision in SUPPORTED["torch"] and (torch_weights or not graphs) else "onnx"
        elif torch_installed and torch_weights:  # a checkpoint: PyTorch, or its cached export; ONNX precisions export
            backend = "onnx" if precision in cached or precision not in SUPPORTED["torch"] else "torch"
        elif graphs or not torch_installed:
            backend = "onnx"
        else:  # neither weights nor graphs: PyTorch's loader says what is missing
            backend = "torch" if precision in SUPPORTED["torch"] else "onnx"
    if compile and backend != "torch":
        raise UserError(f"compile is for the torch backend, not the {backend} backend (a PyTorch checkpoint can be "
                        "compiled, an ONNX export cannot): choose the torch backend, or leave compile out")
    if backend in NEEDS_TORCH:
        if not torch_installed:
            raise UserError(f"the torch backend{' (for bf16)' if precision == 'bf16' else ''} needs PyTorch: install "
                            "the torch extra (pip install 'distilbert[torch]'), or export the model to ONNX and use "
                            f"the {'openvino' if precision == 'bf16' else 'onnx'} backend")
        if not torch_weights and graphs:
            raise UserError(f"this model holds ONNX graphs ({', '.join(graphs)}) and no PyTorch weights, so "
                            f"{precision} on PyTorch cannot run it; choose one of the precisions it has")
        return Choice("torch", precision)
    graph = graph_for(backend, precision) if backend in GRAPHS else None
    if graph is not None and graph not in graphs:  # the checkpoint's export: cached, or to be made
        if graph in cached:
            return Choice(backend, precision, cached=True)
        if torch_weights and torch_installed:
            return Choice(backend, precision, export=True)
    return Choice(backend, precision)


def locate(model: str | Path, backend: str | None = None, precision: str | None = None,
           compile: bool = False, task: str | None = None) -> tuple[Choice, Path]:
    """The choice for `model` and the folder to open (or to export from) with it. A hub id is downloaded for
    what is run: its PyTorch weights, or the one graph of the precision asked for."""
    from .. import hub
    from .export_cache import cached_precisions

    precision = canonical(precision)
    torch_installed = torch_available()
    choose(backend, precision, torch_installed=torch_installed, torch_weights=True,
           compile=compile and backend is not None)
    # (that refused a bad backend, precision or compile, or PyTorch's precision without PyTorch, before anything
    # is downloaded)
    graph = graph_for(backend, precision)  # the ONNX graph to fetch, if one is read
    if Path(model).expanduser().is_dir():  # a local folder: every fact at hand
        folder = hub.resolve(model)
        weights, graphs = hub.has_torch_weights(folder), hub.onnx_precisions(folder)
    elif backend in ("torch", "keras") or (backend is None and torch_installed and precision in SUPPORTED["torch"]):
        folder = hub.resolve(model, need="torch")
        weights, graphs = hub.has_torch_weights(folder), []
        if not weights and backend is None:  # a repository of ONNX graphs alone
            folder = hub.resolve(model, need="onnx", precision=graph)
            graphs = hub.onnx_precisions(folder)
    else:  # the onnx or openvino backend, or an ONNX precision: the one graph; the weights only if it must be exported
        folder = hub.resolve(model, need="onnx", precision=graph)
        weights, graphs = hub.has_torch_weights(folder), hub.onnx_precisions(folder)
        if graph not in graphs and torch_installed and not weights:
            source = hub.resolve(model, need="torch")
            if hub.has_torch_weights(source):
                folder, weights = source, True
    cached = cached_precisions(folder, task) if weights and torch_installed else []
    choice = choose(backend, precision, torch_installed=torch_installed, torch_weights=weights, graphs=graphs,
                    cached=cached, compile=compile)
    return choice, folder
