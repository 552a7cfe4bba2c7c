"""Where a model lives: local folders, hub ids (downloaded once into the Hugging Face cache), its files.

No torch here: the ONNX Runtime path resolves models through this module alone, and what it asks the
hub for depends on what the caller will run, so a torch-free install never downloads PyTorch weights.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import UserError
from .precisions import ONNX_FILES, canonical

TORCH_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                      "pytorch_model.bin.index.json")
METADATA = ["*.json", "*.txt"]  # config, tokenizer files, sentence-transformers module settings
# What each kind of caller needs from a hub repository. PyTorch weights only ever for "torch".
PATTERNS = {
    "torch": METADATA + ["*.safetensors"],
    "onnx": METADATA + ["*.onnx", "*.onnx_data", "onnx/*.onnx", "onnx/*.onnx_data"],
    "tokenizer": ["*.json", "vocab.txt"],
}
PYTORCH_BIN = ["pytorch_model.bin*"]  # repositories from before safetensors


def resolve(model: str | os.PathLike, need: str = "torch", precision: str | None = None) -> Path:
    """A local folder as it is, or a hub id downloaded (once) into the Hugging Face cache.

    need: "torch" (safetensors, else pytorch_model.bin), "onnx" (graphs, in the root or onnx/) or
    "tokenizer" (config and tokenizer files only). With need="onnx", `precision` downloads that graph alone
    (and its weights file), not every variant a repository ships.
    """
    if need not in PATTERNS:
        raise ValueError(f"need must be one of {sorted(PATTERNS)}")
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    text = str(model)
    if path.exists():
        raise UserError(f"{text} is a file, not a model folder; pass the folder that holds config.json")
    looks_local = text.startswith((".", "/", "~")) or os.sep in text.strip("/") and text.count("/") > 1
    if looks_local or not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", text):
        raise UserError(f"model folder {text} does not exist; pass a folder with config.json and weights, or a hub id")
    folder = _download(text, onnx_patterns(precision) if need == "onnx" and precision is not None else PATTERNS[need])
    if need == "torch" and not has_torch_weights(folder):
        folder = _download(text, PATTERNS[need] + PYTORCH_BIN)
    return folder


def _download(repo_id: str, patterns: list[str]) -> Path:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        raise UserError("huggingface_hub is not installed; pass a local model folder") from None
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except (RepositoryNotFoundError, GatedRepoError):
        raise UserError(f"no model {repo_id!r} on the Hugging Face Hub (or it is private); check the id") from None
    except LocalEntryNotFoundError:
        name = repo_id.split("/")[-1]
        raise UserError(
            f"cannot download {repo_id!r}: the Hugging Face Hub is not reachable from here and it is not in the "
            f"local cache; on a machine with network run `hf download {repo_id} --local-dir {name}`, "
            f"copy that folder here and pass its path instead (--model ./{name})"
        ) from None
    except OSError as e:
        raise UserError(f"cannot download {repo_id!r} ({type(e).__name__}: {e}); pass a local model folder instead") from None


def onnx_patterns(precision: str) -> list[str]:
    """What running one precision's graph reads: config and tokenizer files, the graph and its weights file(s)."""
    name = ONNX_FILES[canonical(precision)]
    return METADATA + [f"{where}{name}{tail}" for where in ("", "onnx/") for tail in ("", "_data", "_data_*")]


def has_torch_weights(folder: Path) -> bool:
    return any((folder / name).is_file() for name in TORCH_WEIGHT_FILES)


def locate_onnx(folder: Path, precision: str = "fp32") -> Path | None:
    """The graph for `precision` in the folder's onnx/ subfolder (our exports and the hub's ONNX repositories
    keep it there), or in the folder itself (exports made before the hub layout, Optimum's)."""
    name = ONNX_FILES[canonical(precision)]
    return next((p for p in (folder / "onnx" / name, folder / name) if p.is_file()), None)


def folder_of(graph: Path) -> Path:
    """The model folder (config.json, tokenizer) of a graph file, in either layout."""
    graph = Path(graph)
    return graph.parent.parent if graph.parent.name == "onnx" and not (graph.parent / "config.json").is_file() else graph.parent


def onnx_precisions(folder: Path) -> list[str]:
    """The precisions whose graph the folder holds, in the table's order."""
    return [p for p in ONNX_FILES if locate_onnx(folder, p) is not None]


def has_onnx(folder: Path) -> bool:
    return bool(onnx_precisions(folder))
