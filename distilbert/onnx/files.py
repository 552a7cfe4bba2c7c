"""ONNX model files: the graph with its weights beside it, sizes, and JSON reports. Shared by export,
optimize and quantize (which import this module, not each other)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def save_model(proto, path: Path) -> None:
    """Save an ONNX model with its weights in `<name>_data` beside it, as Optimum does past 2 GB.

    Always, not only past 2 GB: ONNX Runtime maps such a file instead of copying the weights out of a
    parsed protobuf, so a session holds the weights once, not twice, at load (the README has the figures).
    """
    import onnx

    for stale in (path, data_file(path)):
        stale.unlink(missing_ok=True)
    onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data_file(path).name, size_threshold=1024)
    os.chmod(data_file(path), path.stat().st_mode & 0o777)  # onnx makes it owner-only; readable as the graph is


def data_file(path: Path) -> Path:
    return path.with_name(path.name + "_data")


def onnx_bytes(path: Path) -> int:
    """The size of a model: its graph and its weights."""
    return sum(p.stat().st_size for p in (path, data_file(path)) if p.is_file())


def write_report(out_dir: Path, name: str, report: dict) -> Path:
    path = Path(out_dir) / name
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return path
