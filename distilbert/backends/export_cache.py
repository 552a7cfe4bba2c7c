"""ONNX exports of PyTorch checkpoints, made once on first use and kept in a cache keyed by content.

As sentence-transformers does with backend="onnx": the first call exports the checkpoint (validated and
fused, as `distilbert export --optimize` does; with int8 when asked), says so in one line, and later
calls reuse it. The key is a SHA-256 of the checkpoint's config and weights, so an edited or retrained
checkpoint gets a fresh export and a moved copy finds the old one; a version of the exporter whose graphs
compute differently (GRAPHS) keeps its own. Digests are remembered by path, size
and modification time, so a lookup does not read the weights again.

The cache lives in $DISTILBERT_CACHE, else $XDG_CACHE_HOME/distilbert, else ~/.cache/distilbert.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

from .. import hub
from ..errors import UserError
from ..precisions import EXACT, ONNX_FILES, parse_list


# Bumped when exports change in what they compute, so that a cache made by an older version is not reused:
# 2: the classifier's and fill-mask's last feed-forward at the rows their head reads.
# 3: the hub's layout (graphs under onnx/), more precisions.
GRAPHS = 3


def cache_root() -> Path:
    if os.environ.get("DISTILBERT_CACHE"):
        return Path(os.environ["DISTILBERT_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "distilbert"


def cached_precisions(folder: Path, task: str | None) -> list[str]:
    """The precisions whose graph the cached export of this checkpoint (for `task`) holds; none if not exported."""
    target = _target(folder, task)
    return hub.onnx_precisions(target) if target.is_dir() else []


def _target(folder: Path, task: str | None) -> Path:
    return cache_root() / "onnx" / f"graphs-{GRAPHS}" / checkpoint_digest(folder)[:32] / (task or "default")


def cached_export(folder: Path, task: str | None, precision: str = "fp32", create: bool = False) -> Path | None:
    """The cached export of the checkpoint in `folder` for `task` (None: its own head), made if `create`.

    A precision the cached export lacks is added by exporting again with it and every precision it has."""
    target = _target(folder, task)
    precision = precision if precision in ONNX_FILES else EXACT
    if hub.locate_onnx(target, precision) is not None:
        return target
    if not create:
        return None
    have = hub.onnx_precisions(target) if target.is_dir() else []
    print(f"exporting {folder} to ONNX once ({', '.join(parse_list(have + [precision]))}, validated); it is kept in "
          f"{target}", file=sys.stderr)
    try:
        from ..onnx.export import export, write_report
    except ImportError as e:
        raise UserError(f"exporting to ONNX needs the torch extra ({e.name} is missing): pip install 'distilbert[torch]'") from None
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        report = export(folder, staging, task=task, optimize=True, precisions=have + [precision], log=lambda line: None)
        write_report(staging, "export_report.json", report)
        target.parent.mkdir(parents=True, exist_ok=True)
        old = target.with_name(f".{target.name}.{os.getpid()}.old")
        if target.exists():
            os.replace(target, old)
        os.replace(staging, target)  # whole or not at all: a killed export leaves no half folder behind
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def checkpoint_digest(folder: Path) -> str:
    """SHA-256 over every file loading the folder reads, remembered by (path, size, mtime): config.json, the
    weights (safetensors or .bin, single or every shard its index names), the tokenizer files, and a
    sentence-transformers folder's settings with each module's folder (1_Pooling, 2_Normalize, ...)."""
    names = {"config.json", "tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json",
             "added_tokens.json", "modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"}
    names.update(p.name for pattern in ("*.safetensors", "pytorch_model*.bin", "*.index.json") for p in folder.glob(pattern))
    for index in folder.glob("*.index.json"):  # shards under names of their own, as an index may give them
        try:
            names.update(v for v in json.loads(index.read_text(encoding="utf-8"))["weight_map"].values() if isinstance(v, str))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # loading says what is wrong with it; its bytes are hashed all the same
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        for module in modules:
            if isinstance(module, dict) and isinstance(module.get("path"), str) and module["path"]:
                names.update(p.relative_to(folder).as_posix() for p in (folder / module["path"]).rglob("*"))
    except (OSError, ValueError, TypeError):
        pass  # none, or unreadable: the pipeline says so when it reads it
    files = sorted((name, (folder / name).resolve()) for name in names if (folder / name).is_file())
    stamp = "|".join(f"{name}={p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for name, p in files)
    memo_file = cache_root() / "digests.json"
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    if stamp in memo:
        return memo[stamp]
    digest = hashlib.sha256()
    for name, path in files:
        digest.update(f"{name}\0{path.stat().st_size}\0".encode())
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
    memo[stamp] = digest.hexdigest()
    try:
        memo_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo_file.with_name(f"digests.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(memo))
        os.replace(tmp, memo_file)
    except OSError:
        pass  # a read-only cache still works, it only hashes again
    return memo[stamp]
