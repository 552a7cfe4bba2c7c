"""The model the workers open: a folder every node sees by its path, or its files sent through Ray's object store
(`ship`), unpacked once per node."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from .. import tasks


@dataclass(frozen=True)
class ShippedModel:
    """A model folder sent through Ray's object store: its files, unpacked once per node."""

    name: str
    digest: str
    files: Any  # ObjectRef of {relative path: bytes}

    def folder(self) -> Path:
        target = Path(tempfile.gettempdir()) / "distilbert-ray" / f"{self.name}-{self.digest[:16]}"
        if (target / "config.json").is_file():
            return target
        staging = target.with_name(f".{target.name}.{os.getpid()}")
        for relative, data in ray.get(self.files).items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        try:
            os.replace(staging, target)  # whole or not at all; another actor on this node may have won
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
        return target


def ship(folder: str | Path) -> ShippedModel:
    """Put every file of a local model folder into the object store (one copy; each node fetches it once)."""
    folder = Path(folder)
    files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    digest = hashlib.sha256()
    for relative, data in files.items():
        digest.update(relative.encode() + b"\0" + hashlib.sha256(data).digest())
    return ShippedModel(folder.name, digest.hexdigest(), ray.put(files))


def prepare(model: str, task: str, backend: str | None, precision: str) -> str:
    """The folder the workers open: an exported folder as it is; a PyTorch checkpoint exported once, here,
    rather than by every actor at the same time (backends.export_cache)."""
    from ..backends.choice import locate
    from ..backends.export_cache import cached_export

    choice, folder = locate(model, backend, precision, task=tasks.get(task).name)
    if choice.export or choice.cached:
        folder = cached_export(folder, tasks.get(task).name, choice.graph, create=True)
    return str(folder)
