"""Hugging Face checkpoints in and out: folders, hub ids, key maps, safetensors and pickle-free .bin.

Our module names are DistilBERT's keys under `encoder.`; every other spelling is one literal template
map below. Loading fails loudly, naming every missing, unexpected or mis-shaped key.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Config
from .errors import UserError

if TYPE_CHECKING:
    import torch

    from .model import _WithEncoder

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")

# `architectures` in config.json -> our task. Checkpoints without it are recognised by their keys.
ARCHITECTURES = {
    "DistilBertModel": "feature-extraction",
    "BertModel": "feature-extraction",
    "DistilBertForMaskedLM": "fill-mask",
    "BertForMaskedLM": "fill-mask",
    "BertForPreTraining": "fill-mask",
    "DistilBertForSequenceClassification": "text-classification",
    "BertForSequenceClassification": "text-classification",
    "DistilBertForTokenClassification": "token-classification",
    "BertForTokenClassification": "token-classification",
    "DistilBertForQuestionAnswering": "question-answering",
    "BertForQuestionAnswering": "question-answering",
}
ARCHITECTURE_NAMES = {
    ("distilbert", "feature-extraction"): "DistilBertModel",
    ("bert", "feature-extraction"): "BertModel",
    ("distilbert", "fill-mask"): "DistilBertForMaskedLM",
    ("bert", "fill-mask"): "BertForMaskedLM",
    ("distilbert", "text-classification"): "DistilBertForSequenceClassification",
    ("bert", "text-classification"): "BertForSequenceClassification",
    ("distilbert", "token-classification"): "DistilBertForTokenClassification",
    ("bert", "token-classification"): "BertForTokenClassification",
    ("distilbert", "question-answering"): "DistilBertForQuestionAnswering",
    ("bert", "question-answering"): "BertForQuestionAnswering",
}

# Hugging Face key template -> our key template, per family. {i}: layer index, {p}: weight|bias.
# The body keys appear with the family prefix (`distilbert.`, `bert.`) in head models and without it in
# the bare model; both are accepted, and `save` writes what transformers writes.
KEY_MAPS: dict[str, dict[str, str]] = {
    "distilbert": {
        "embeddings.word_embeddings.weight": "encoder.embeddings.word_embeddings.weight",
        "embeddings.position_embeddings.weight": "encoder.embeddings.position_embeddings.weight",
        "embeddings.LayerNorm.{p}": "encoder.embeddings.LayerNorm.{p}",
        "transformer.layer.{i}.attention.q_lin.{p}": "encoder.transformer.layer.{i}.attention.q_lin.{p}",
        "transformer.layer.{i}.attention.k_lin.{p}": "encoder.transformer.layer.{i}.attention.k_lin.{p}",
        "transformer.layer.{i}.attention.v_lin.{p}": "encoder.transformer.layer.{i}.attention.v_lin.{p}",
        "transformer.layer.{i}.attention.out_lin.{p}": "encoder.transformer.layer.{i}.attention.out_lin.{p}",
        "transformer.layer.{i}.sa_layer_norm.{p}": "encoder.transformer.layer.{i}.sa_layer_norm.{p}",
        "transformer.layer.{i}.ffn.lin1.{p}": "encoder.transformer.layer.{i}.ffn.lin1.{p}",
        "transformer.layer.{i}.ffn.lin2.{p}": "encoder.transformer.layer.{i}.ffn.lin2.{p}",
        "transformer.layer.{i}.output_layer_norm.{p}": "encoder.transformer.layer.{i}.output_layer_norm.{p}",
    },
    "bert": {
        "embeddings.word_embeddings.weight": "encoder.embeddings.word_embeddings.weight",
        "embeddings.position_embeddings.weight": "encoder.embeddings.position_embeddings.weight",
        "embeddings.token_type_embeddings.weight": "encoder.embeddings.token_type_embeddings.weight",
        "embeddings.LayerNorm.{p}": "encoder.embeddings.LayerNorm.{p}",
        "encoder.layer.{i}.attention.self.query.{p}": "encoder.transformer.layer.{i}.attention.q_lin.{p}",
        "encoder.layer.{i}.attention.self.key.{p}": "encoder.transformer.layer.{i}.attention.k_lin.{p}",
        "encoder.layer.{i}.attention.self.value.{p}": "encoder.transformer.layer.{i}.attention.v_lin.{p}",
        "encoder.layer.{i}.attention.output.dense.{p}": "encoder.transformer.layer.{i}.attention.out_lin.{p}",
        "encoder.layer.{i}.attention.output.LayerNorm.{p}": "encoder.transformer.layer.{i}.sa_layer_norm.{p}",
        "encoder.layer.{i}.intermediate.dense.{p}": "encoder.transformer.layer.{i}.ffn.lin1.{p}",
        "encoder.layer.{i}.output.dense.{p}": "encoder.transformer.layer.{i}.ffn.lin2.{p}",
        "encoder.layer.{i}.output.LayerNorm.{p}": "encoder.transformer.layer.{i}.output_layer_norm.{p}",
        "pooler.dense.{p}": "encoder.pooler.dense.{p}",
    },
}
# Head keys sit outside the family prefix.
HEAD_KEY_MAPS: dict[str, dict[str, str]] = {
    "distilbert": {
        "vocab_transform.{p}": "vocab_transform.{p}",
        "vocab_layer_norm.{p}": "vocab_layer_norm.{p}",
        "vocab_projector.bias": "vocab_projector.bias",
        "pre_classifier.{p}": "pre_classifier.{p}",
        "classifier.{p}": "classifier.{p}",
        "qa_outputs.{p}": "qa_outputs.{p}",
    },
    "bert": {
        "cls.predictions.transform.dense.{p}": "vocab_transform.{p}",
        "cls.predictions.transform.LayerNorm.{p}": "vocab_layer_norm.{p}",
        "cls.predictions.bias": "vocab_projector.bias",
        "classifier.{p}": "classifier.{p}",
        "qa_outputs.{p}": "qa_outputs.{p}",
    },
}
# Keys that checkpoints carry and no model of ours uses: tied copies, buffers, BERT's NSP head.
IGNORED_KEYS = re.compile(
    r"(.*\.position_ids|vocab_projector\.weight|cls\.predictions\.decoder\.(weight|bias)|cls\.seq_relationship\..*)$"
)
# Our keys that belong to one head or another; a checkpoint of another head may carry them.
HEAD_KEYS = re.compile(r"^(vocab_transform|vocab_layer_norm|vocab_projector|pre_classifier|classifier|qa_outputs|encoder\.pooler)\.")


def _compile(template: str) -> re.Pattern[str]:
    pattern = re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{p\}", r"(?P<p>weight|bias)")
    return re.compile(pattern + "$")


_FORWARD = {
    family: [(_compile(theirs), ours) for theirs, ours in {**body, **HEAD_KEY_MAPS[family]}.items()]
    for family, body in KEY_MAPS.items()
}


def to_our_keys(family: str, state: dict[str, Any], origin: dict[str, str] | None = None) -> dict[str, Any]:
    """Checkpoint keys (any prefix, old gamma/beta names) -> our module names. Unknown keys pass through.

    `origin`, when given, is filled with our name -> the checkpoint's name, for error messages.
    """
    prefix = family + "."
    out: dict[str, Any] = {}
    for key, tensor in state.items():
        name = key[len(prefix) :] if key.startswith(prefix) else key
        name = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name))
        for pattern, ours in _FORWARD[family]:
            m = pattern.match(name)
            if m:
                name = ours.format(**m.groupdict())
                break
        else:
            name = key  # unmapped: reported as unexpected unless ignorable
        out[name] = tensor
        if origin is not None:
            origin[name] = key
    return out


def to_hf_keys(family: str, task: str, state: dict[str, Any]) -> dict[str, Any]:
    """Our module names -> the keys transformers writes for this family and head."""
    prefix = "" if task == "feature-extraction" else family + "."
    reverse = [(_compile(ours), theirs, True) for theirs, ours in KEY_MAPS[family].items()]
    reverse += [(_compile(ours), theirs, False) for theirs, ours in HEAD_KEY_MAPS[family].items()]
    out: dict[str, Any] = {}
    for key, tensor in state.items():
        if key == "vocab_projector.weight":
            continue  # tied to the word embeddings; transformers re-ties it on load
        for pattern, theirs, in_body in reverse:
            m = pattern.match(key)
            if m:
                out[(prefix if in_body else "") + theirs.format(**m.groupdict())] = tensor
                break
        else:
            raise AssertionError(f"no checkpoint name for {key}")
    return out


# --- where a model lives ----------------------------------------------------------------------------


def resolve(model: str | os.PathLike, allow_patterns: list[str] | None = None) -> Path:
    """A local folder as it is, or a hub id downloaded (once) into the Hugging Face cache."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    text = str(model)
    if path.exists():
        raise UserError(f"{text} is a file, not a model folder; pass the folder that holds config.json")
    looks_local = text.startswith((".", "/", "~")) or os.sep in text.strip("/") and text.count("/") > 1
    if looks_local or not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", text):
        raise UserError(f"model folder {text} does not exist; pass a folder with config.json and weights, or a hub id")
    return _download(text, allow_patterns)


def _download(repo_id: str, allow_patterns: list[str] | None) -> Path:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (
            GatedRepoError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
        )
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        raise UserError("huggingface_hub is not installed; pass a local model folder") from None
    patterns = allow_patterns or ["*.json", "*.txt", "*.safetensors"]
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=patterns))
        if not any((folder / name).exists() for name in WEIGHT_FILES) and not (folder / "model.onnx").exists():
            if "onnx/*" not in patterns:  # repositories from before safetensors ship only pytorch_model.bin
                folder = Path(snapshot_download(repo_id, allow_patterns=patterns + ["pytorch_model.bin*"]))
        return folder
    except (RepositoryNotFoundError, GatedRepoError):
        raise UserError(f"no model {repo_id!r} on the Hugging Face Hub (or it is private); check the id") from None
    except LocalEntryNotFoundError:
        raise UserError(
            f"cannot download {repo_id!r}: the Hugging Face Hub is not reachable from here and it is not in the "
            f"local cache; on a machine with network run `hf download {repo_id} --local-dir {repo_id.split('/')[-1]}`, "
            f"copy that folder here and pass its path instead (--model ./{repo_id.split('/')[-1]})"
        ) from None
    except OSError as e:
        raise UserError(f"cannot download {repo_id!r} ({type(e).__name__}: {e}); pass a local model folder instead") from None


# --- reading weights ----------------------------------------------------------------------------------


def read_state_dict(folder: Path, dtype: Any = None) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder: safetensors (single or sharded) or .bin without running pickled code.

    `dtype` casts floating-point tensors as they are read, one at a time, so a bf16 model never holds the
    whole fp32 checkpoint beside its bf16 copy.
    """
    import torch

    if (folder / "model.safetensors").is_file():
        return _read_safetensors(folder / "model.safetensors", dtype)
    if (folder / "model.safetensors.index.json").is_file():
        state: dict[str, torch.Tensor] = {}
        for shard in _shards(folder / "model.safetensors.index.json"):
            state.update(_read_safetensors(folder / shard, dtype))
        return state
    bins = [folder / "pytorch_model.bin"] if (folder / "pytorch_model.bin").is_file() else None
    if bins is None and (folder / "pytorch_model.bin.index.json").is_file():
        bins = [folder / shard for shard in _shards(folder / "pytorch_model.bin.index.json")]
    if bins is None:
        raise UserError(f"no weights in {folder}: expected model.safetensors or pytorch_model.bin (is the download complete?)")
    state = {}
    for path in bins:
        try:
            # weights_only: tensors and plain containers only, no arbitrary code from the pickle
            shard = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise UserError(f"weight shard {path} is missing; download the model again") from None
        except Exception as e:
            raise UserError(f"{path} is not a readable PyTorch weights file ({type(e).__name__}); download it again") from None
        state.update((k, _cast(v, dtype)) for k, v in shard.items())
    return state


def _cast(tensor, dtype):
    return tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor


def _read_safetensors(path: Path, dtype: Any = None) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as f:
            return {k: _cast(f.get_tensor(k), dtype) for k in f.keys()}
    except FileNotFoundError:
        raise UserError(f"weight shard {path} is missing; download the model again") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path} is corrupted or truncated ({e}); download or save the model again") from None


def _shards(index: Path) -> list[str]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return sorted(set(weight_map.values()))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"{index} is not a valid shard index ({e}); download the model again") from None


def infer_task(config: Config, keys: set[str]) -> str:
    """The head a checkpoint was saved with: `architectures` first, then the keys it carries."""
    for name in config.architectures or []:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    if "vocab_transform.weight" in keys:
        return "fill-mask"
    if "qa_outputs.weight" in keys:
        return "question-answering"
    if "classifier.weight" in keys:
        return "text-classification" if "pre_classifier.weight" in keys or config.family == "bert" else "token-classification"
    return "feature-extraction"


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

    from .model import HEADS, MaskedLM, build

    folder = resolve(model)
    config = Config.from_file(folder / "config.json")
    raw = read_state_dict(folder, dtype)
    origin: dict[str, str] = {}
    state = to_our_keys(config.family, raw, origin)
    task = task or infer_task(config, set(state))
    if task not in HEADS:
        raise UserError(f"unknown task {task!r}; expected one of {', '.join(HEADS)}")
    with_pooler = task == "feature-extraction" and "encoder.pooler.dense.weight" in state
    with torch.device("meta"):  # a skeleton: no time spent initialising weights we are about to replace
        net = build(config, task, with_pooler, init=False)
    expected = {k: v for k, v in net.state_dict().items() if k != "vocab_projector.weight"}
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
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected)}")
    if misshaped:
        problems.append(f"mis-shaped keys (checkpoint vs config.json): {', '.join(misshaped)}")
    if problems:
        raise UserError(f"{folder} does not match its config.json for {task}: " + "; ".join(problems))
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


def save(net: _WithEncoder, folder: str | os.PathLike, task: str, tokenizer: Any = None) -> Path:
    """Write config.json and model.safetensors as transformers writes them (and the tokenizer files)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = net.config.replace(architectures=[ARCHITECTURE_NAMES[(net.config.family, task)]])
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    tensors = to_hf_keys(config.family, task, state)
    # write-then-rename, so an interrupted save never leaves a half-written model.safetensors behind
    tmp = folder / "model.safetensors.tmp"
    save_file(tensors, tmp, metadata={"format": "pt"})
    os.replace(tmp, folder / "model.safetensors")
    config.save(folder / "config.json")
    if tokenizer is not None:
        tokenizer.save(folder)
    return folder
