"""PyTorch checkpoints in and out: safetensors (single or sharded) and pickle-free .bin, as our modules.

Key names are mapped by keymaps.py; where a model lives is hub.py. Loading fails loudly, naming every
missing, unexpected or mis-shaped key. Saving never leaves new weights beside an old config.json (see `save`).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import tasks
from .config import Config
from .errors import MissingHead, UserError
from .hub import TORCH_WEIGHT_FILES, resolve
from .keymaps import HEAD_KEYS, IGNORED_KEYS, to_hf_keys, to_our_keys

# What torch.load(weights_only=True) raises for a file that is not a readable checkpoint: truncated (RuntimeError
# from the zip reader, EOFError), not a pickle at all (KeyError, ValueError on a bad opcode), or one that would
# run code (UnpicklingError). A programming error of ours raises none of these from inside the load call.
UNREADABLE = (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, ValueError)

if TYPE_CHECKING:
    import torch

    from .model import _WithEncoder


# --- reading weights ----------------------------------------------------------------------------------


def read_state_dict(folder: Path, dtype: Any = None, framework: str = "pt") -> dict[str, Any]:
    """All tensors of a checkpoint folder: safetensors (single or sharded) or .bin without running pickled code.

    `dtype` casts floating-point tensors as they are read, one at a time, so a bf16 model never holds the
    whole fp32 checkpoint beside its bf16 copy. framework "np" gives numpy arrays and needs torch only
    for .bin files (the Keras loader reads through here).
    """
    if (folder / "model.safetensors").is_file():
        return _read_safetensors(folder / "model.safetensors", dtype, framework)
    if (folder / "model.safetensors.index.json").is_file():
        state: dict[str, Any] = {}
        for shard in _shards(folder / "model.safetensors.index.json"):
            state.update(_read_safetensors(folder / shard, dtype, framework))
        return state
    bins = [folder / "pytorch_model.bin"] if (folder / "pytorch_model.bin").is_file() else None
    if bins is None and (folder / "pytorch_model.bin.index.json").is_file():
        bins = [folder / shard for shard in _shards(folder / "pytorch_model.bin.index.json")]
    if bins is None:
        raise UserError(f"no weights in {folder}: expected model.safetensors or pytorch_model.bin (is the download complete?)")
    try:
        import torch
    except ImportError:
        raise UserError(f"{folder} has PyTorch .bin weights only, which need PyTorch to read: install the torch extra "
                        "(pip install 'distilbert[torch]'), or save the model as model.safetensors") from None
    state = {}
    for path in bins:
        try:
            # weights_only: tensors and plain containers only, no arbitrary code from the pickle
            shard = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise UserError(f"weight shard {path} is missing; download the model again") from None
        except UNREADABLE as e:
            raise UserError(f"{path} is not a readable PyTorch weights file ({type(e).__name__}); download it again") from None
        if framework == "np":
            shard = {k: (v.float() if v.dtype == torch.bfloat16 else v).numpy() for k, v in shard.items()}
        state.update((k, _cast(v, dtype)) for k, v in shard.items())
    return state


def _cast(tensor, dtype):
    if dtype is None:
        return tensor
    if isinstance(tensor, np.ndarray):
        return tensor.astype(dtype, copy=False) if np.issubdtype(tensor.dtype, np.floating) else tensor
    return tensor.to(dtype) if tensor.is_floating_point() else tensor


def _read_safetensors(path: Path, dtype: Any = None, framework: str = "pt") -> dict[str, Any]:
    from safetensors import SafetensorError, safe_open

    try:
        widened = _bf16_as_float32(path) if framework == "np" else {}
        with safe_open(path, framework=framework) as f:
            return {k: _cast(widened[k] if k in widened else f.get_tensor(k), dtype) for k in f.keys()}
    except FileNotFoundError:
        raise UserError(f"weight shard {path} is missing; download the model again") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path} is corrupted or truncated ({e}); download or save the model again") from None


def _bf16_as_float32(path: Path) -> dict[str, np.ndarray]:
    """The file's bfloat16 tensors widened to float32 (numpy has no bfloat16, so safetensors cannot give them)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        out = {}
        for key, entry in header.items():
            if key != "__metadata__" and entry["dtype"] == "BF16":
                start, end = entry["data_offsets"]
                f.seek(8 + n + start)
                raw = np.frombuffer(f.read(end - start), dtype="<u2")
                out[key] = (raw.astype(np.uint32) << 16).view(np.float32).reshape(entry["shape"])  # the upper 16 bits
    return out


def _shards(index: Path) -> list[str]:
    return sorted(set(_weight_map(index).values()))


def _weight_map(index: Path) -> dict[str, str]:
    """A shard index's key -> shard file."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not an object")
        return weight_map
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{index} is not a valid shard index ({e}); download the model again") from None


def natural_task(folder: Path, config: Config) -> str:
    """The task `load(folder)` gives when none is asked for, from `architectures`, else from the weight files'
    key names alone (safetensors headers or a shard index; a .bin file is read, where PyTorch is installed)."""
    named = tasks.infer(config)
    if named:
        return named
    return tasks.infer(config, keys=set(to_our_keys(config.family, dict.fromkeys(weight_keys(folder) or ()))))


def weight_keys(folder: Path) -> set[str] | None:
    """The checkpoint's key names, from the files `read_state_dict` would read; None where none can be read."""
    if (folder / "model.safetensors").is_file():
        return set(_safetensors_header(folder / "model.safetensors")) - {"__metadata__"}
    if (folder / "model.safetensors.index.json").is_file():
        return set(_weight_map(folder / "model.safetensors.index.json"))
    path = folder / "pytorch_model.bin"
    if path.is_file():
        try:
            import torch
        except ImportError:
            return None  # loading it needs PyTorch too, and says so
        try:
            return set(torch.load(path, map_location="cpu", weights_only=True))
        except UNREADABLE as e:
            raise UserError(f"{path} is not a readable PyTorch weights file ({type(e).__name__}); download it again") from None
    if (folder / "pytorch_model.bin.index.json").is_file():
        return set(_weight_map(folder / "pytorch_model.bin.index.json"))
    return None


def _safetensors_header(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
    except (ValueError, UnicodeDecodeError):
        header = None
    if not isinstance(header, dict):
        raise UserError(f"{path} is corrupted (unreadable header); download or save the model again")
    return header


def load(
    model: str | os.PathLike,
    task: str | None = None,
    allow_new_head: bool = False,
    dtype: Any = None,
) -> tuple[_WithEncoder, Config, Path]:
    """Load a checkpoint folder or hub id as our model for `task` (by default the head it was saved with).

    Every key must be accounted for: missing, unexpected and mis-shaped keys are an error listing them all.
    `allow_new_head` lets a head the checkpoint lacks start from fresh weights (for fine-tuning).
    """
    import torch

    from .model import MaskedLM, build

    folder = resolve(model)
    config = Config.from_file(folder / "config.json")
    raw = read_state_dict(folder, dtype)
    origin: dict[str, str] = {}
    state = to_our_keys(config.family, raw, origin)
    natural = tasks.infer(config, keys=set(state))
    task = tasks.get(task).name if task else natural
    with_pooler = task == "feature-extraction" and "encoder.pooler.dense.weight" in state
    with torch.device("meta"):  # a skeleton: no time spent initialising weights we are about to replace
        net = build(config, task, with_pooler, init=False)
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items() if k != "vocab_projector.weight"}
    fresh = check_keys(state, expected, origin, folder, task, natural, allow_new_head)
    loaded = {k: state[k] for k in expected if k in state}
    if fresh:
        net = build(config, task, with_pooler)  # the new head starts from BERT's initialisation
        net.load_state_dict(loaded, strict=False)
    else:
        net.load_state_dict(loaded, strict=False, assign=True)  # every key was checked above
        embeddings = net.encoder.embeddings  # the one buffer, not in checkpoints, is still on the meta device
        embeddings.position_ids = torch.arange(config.max_position_embeddings)[None]
    if isinstance(net, MaskedLM):
        net.vocab_projector.weight = net.encoder.embeddings.word_embeddings.weight  # re-tie after assign
    net = net.to(dtype or torch.float32).eval()
    return net, config, folder


def check_keys(state: dict[str, Any], expected: dict[str, tuple[int, ...]], origin: dict[str, str], folder: Path,
               task: str, natural: str, allow_new_head: bool = False) -> list[str]:
    """Every key of the checkpoint in `folder` accounted for, for a model of `task`: one error naming each
    missing, unexpected and mis-shaped key, or naming the head it has (`natural`) where only `task`'s is missing.

    state: our names -> tensors (anything with .shape); expected: the model's names -> shapes; origin: our
    names -> the checkpoint's, for the message. Returns the head keys the model lacks weights for, which
    `allow_new_head` lets start fresh. No torch here: the Keras loader checks its keys through this too.
    """
    missing = sorted(set(expected) - set(state))
    if allow_new_head:
        fresh = [k for k in missing if HEAD_KEYS.match(k)]
        missing = [k for k in missing if not HEAD_KEYS.match(k)]
    else:
        fresh = []
    unexpected = sorted(
        origin[k] for k in set(state) - set(expected) if not IGNORED_KEYS.match(k) and not HEAD_KEYS.match(k)
    )
    misshaped = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k])}"
        for k in set(state) & set(expected)
        if tuple(state[k].shape) != tuple(expected[k])
    )
    if missing and not allow_new_head and task != natural and all(HEAD_KEYS.match(k) for k in missing):
        raise tasks.head_mismatch(natural, task)
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected)}")
    if misshaped:
        problems.append(f"mis-shaped keys (checkpoint vs config.json): {', '.join(misshaped)}")
    if problems:
        message = f"{folder} does not match its config.json for {task}: " + "; ".join(problems)
        if missing and all(HEAD_KEYS.match(k) for k in missing):  # the task's head is what the weights lack
            raise MissingHead(message, natural, task)
        raise UserError(message)
    return fresh


def save(net: _WithEncoder, folder: str | os.PathLike, task: str, tokenizer: Any = None) -> Path:
    """Write config.json and model.safetensors as transformers writes them (and the tokenizer files).

    The folder may hold other files (a training run's log and checkpoint), so it is not swapped whole. What is
    guaranteed, whenever the save stops (an error, a full disk, a kill): the folder holds the old model whole,
    the new model whole, or no config.json. Every file is first written in full into `folder/.saving`; only
    then is the old config.json removed, the other files renamed into place one by one, and config.json
    renamed in last. A folder without config.json is no model to any loader; `Config.from_file` says that a
    save was interrupted where weights are left in it.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    config = net.config.replace(architectures=[tasks.architecture(net.config.family, task)])
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    tensors = to_hf_keys(config.family, task, state)
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / ".saving"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        save_file(tensors, staging / "model.safetensors", metadata={"format": "pt"})
        config.save(staging / "config.json")
        if tokenizer is not None:
            tokenizer.save(staging)
        install(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def install(source: Path, folder: Path) -> None:
    """Move a complete model's files from `source` into `folder` (on one file system), with `save`'s guarantee:
    the old config.json is removed first, then older weights in another format (they would be read before
    ours), then every file is renamed in, config.json last. Stopped anywhere, `folder` holds the old model
    whole, the new one whole, or no config.json; run again on what is left in `source`, it finishes the move."""
    (folder / "config.json").unlink(missing_ok=True)  # from here until the last rename, no model at all
    for stale in TORCH_WEIGHT_FILES:
        if stale != "model.safetensors":
            (folder / stale).unlink(missing_ok=True)
    for item in sorted(source.iterdir(), key=lambda p: p.name == "config.json"):  # config.json last
        os.replace(item, folder / item.name)
