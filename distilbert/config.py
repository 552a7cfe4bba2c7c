"""Model configuration: one dataclass for both families, round-tripping Hugging Face `config.json`.

DistilBERT and BERT are the same post-LayerNorm encoder; they differ only in field names and in a few
switches (token types, sinusoidal positions, the pooler). Inside the package we use DistilBERT's names
(`dim`, `n_layers`, `n_heads`, `hidden_dim`); each family's `config.json` names are one literal map.
No torch here: the ONNX runtime path reads configs too.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError

ACTIVATIONS = ("gelu", "relu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "silu", "swish", "tanh")
FAMILIES = ("distilbert", "bert")

# our field -> the family's config.json key. Fields a family lacks are absent from its map.
FIELD_NAMES: dict[str, dict[str, str]] = {
    "distilbert": {
        "vocab_size": "vocab_size",
        "dim": "dim",
        "n_layers": "n_layers",
        "n_heads": "n_heads",
        "hidden_dim": "hidden_dim",
        "max_position_embeddings": "max_position_embeddings",
        "sinusoidal_pos_embds": "sinusoidal_pos_embds",
        "activation": "activation",
        "dropout": "dropout",
        "attention_dropout": "attention_dropout",
        "classifier_dropout": "seq_classif_dropout",
        "qa_dropout": "qa_dropout",
        "initializer_range": "initializer_range",
        "pad_token_id": "pad_token_id",
    },
    "bert": {
        "vocab_size": "vocab_size",
        "dim": "hidden_size",
        "n_layers": "num_hidden_layers",
        "n_heads": "num_attention_heads",
        "hidden_dim": "intermediate_size",
        "max_position_embeddings": "max_position_embeddings",
        "type_vocab_size": "type_vocab_size",
        "activation": "hidden_act",
        "dropout": "hidden_dropout_prob",
        "attention_dropout": "attention_probs_dropout_prob",
        "classifier_dropout": "classifier_dropout",
        "layer_norm_eps": "layer_norm_eps",
        "initializer_range": "initializer_range",
        "pad_token_id": "pad_token_id",
    },
}

# Hugging Face's DistilBERT hard-codes eps 1e-12 (modeling_distilbert.py) and has no config field for it.
DISTILBERT_LAYER_NORM_EPS = 1e-12
DISTILBERT_CLASSIFIER_DROPOUT = 0.2


@dataclass
class Config:
    family: str = "distilbert"  # "distilbert" or "bert"
    vocab_size: int = 30522
    dim: int = 768
    n_layers: int = 6
    n_heads: int = 12
    hidden_dim: int = 3072  # feed-forward width, 4 * dim in both papers
    max_position_embeddings: int = 512
    type_vocab_size: int = 0  # BERT's segment embeddings; DistilBERT dropped them (paper, section 3)
    sinusoidal_pos_embds: bool = False
    activation: str = "gelu"
    layer_norm_eps: float = DISTILBERT_LAYER_NORM_EPS
    dropout: float = 0.1
    attention_dropout: float = 0.1
    classifier_dropout: float | None = None  # DistilBERT: seq_classif_dropout, 0.2 when not given; BERT: None = dropout
    qa_dropout: float = 0.1
    initializer_range: float = 0.02
    pad_token_id: int = 0
    id2label: dict[int, str] = field(default_factory=lambda: {0: "LABEL_0", 1: "LABEL_1"})
    architectures: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # unknown config.json fields, kept for the round trip

    def __post_init__(self) -> None:
        if self.family == "distilbert" and self.classifier_dropout is None:
            # transformers' DistilBertConfig default: its classifier reads seq_classif_dropout and cannot take null
            self.classifier_dropout = DISTILBERT_CLASSIFIER_DROPOUT
        self.validate()

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in self.id2label.items()}

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def validate(self) -> None:
        if self.family not in FAMILIES:
            raise UserError(f"unknown model family {self.family!r}: expected one of {', '.join(FAMILIES)}")
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "hidden_dim", "max_position_embeddings"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise UserError(f"config: {name} must be a positive integer, got {value!r}")
        if self.dim % self.n_heads:
            raise UserError(f"config: dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if self.activation not in ACTIVATIONS:
            raise UserError(f"config: unknown activation {self.activation!r}; expected one of {', '.join(ACTIVATIONS)}")
        if not isinstance(self.type_vocab_size, int) or self.type_vocab_size < 0:
            raise UserError(f"config: type_vocab_size must be >= 0, got {self.type_vocab_size!r}")
        if self.family == "distilbert" and self.type_vocab_size:
            raise UserError("config: DistilBERT has no token type embeddings (type_vocab_size must be 0)")
        if not (isinstance(self.layer_norm_eps, (int, float)) and 0 < self.layer_norm_eps < 1):
            raise UserError(f"config: layer_norm_eps must be in (0, 1), got {self.layer_norm_eps!r}")
        for name in ("dropout", "attention_dropout", "qa_dropout"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value < 1):
                raise UserError(f"config: {name} must be in [0, 1), got {value!r}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise UserError(f"config: pad_token_id {self.pad_token_id} is outside the vocabulary of {self.vocab_size}")
        position_type = self.extra.get("position_embedding_type", "absolute")
        if position_type != "absolute":
            raise UserError(f"config: position_embedding_type {position_type!r} is not supported (only 'absolute')")

    # --- config.json ---------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        data = dict(data)
        family = data.pop("model_type", None)
        if family is None:  # very old configs carry no model_type; the field names tell
            family = "distilbert" if "dim" in data else "bert" if "hidden_size" in data else None
        if family not in FAMILIES:
            raise UserError(
                f"config: model_type {family!r} is not supported; this package runs 'distilbert' and 'bert' checkpoints"
            )
        kwargs: dict[str, Any] = {"family": family}
        if family == "bert":  # BERT's defaults where its config.json leaves a field out
            kwargs.update(type_vocab_size=2, layer_norm_eps=1e-12)
        for ours, theirs in FIELD_NAMES[family].items():
            if theirs in data:
                kwargs[ours] = data.pop(theirs)
        if family == "distilbert" and "layer_norm_eps" in data:
            kwargs["layer_norm_eps"] = data.pop("layer_norm_eps")
        id2label = data.pop("id2label", None)
        label2id = data.pop("label2id", None)
        if id2label is not None:
            try:
                kwargs["id2label"] = {int(k): str(v) for k, v in id2label.items()}
            except (AttributeError, ValueError):
                raise UserError(f"config: id2label must map integer ids to labels, got {id2label!r}") from None
        elif label2id:
            kwargs["id2label"] = {int(v): str(k) for k, v in label2id.items()}
        elif "num_labels" in data:
            kwargs["id2label"] = {i: f"LABEL_{i}" for i in range(int(data.pop("num_labels")))}
        if "architectures" in data:
            kwargs["architectures"] = data.pop("architectures")
        kwargs["extra"] = data
        try:
            return cls(**kwargs)
        except TypeError as e:
            raise UserError(f"config: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model_type": self.family}
        if self.architectures is not None:
            out["architectures"] = list(self.architectures)
        for ours, theirs in FIELD_NAMES[self.family].items():
            out[theirs] = getattr(self, ours)
        if self.family == "distilbert" and self.layer_norm_eps != DISTILBERT_LAYER_NORM_EPS:
            out["layer_norm_eps"] = self.layer_norm_eps
        out["id2label"] = {str(i): label for i, label in self.id2label.items()}
        out["label2id"] = self.label2id
        out.update(self.extra)
        return out

    @classmethod
    def from_file(cls, path: str | Path) -> Config:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            weights = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", ".saving")
            if path.name == "config.json" and any((path.parent / name).exists() for name in weights):
                # checkpoint.save removes config.json first and renames the new one in last
                raise UserError(f"no config.json in {path.parent}, which holds weights: a save into it was "
                                "interrupted (or config.json was deleted); save the model again") from None
            raise UserError(f"no config.json in {path.parent}: not a model folder") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{path} is not valid JSON ({e}); the file is damaged, download or save it again") from None
        if not isinstance(data, dict):
            raise UserError(f"{path} must hold a JSON object")
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n", encoding="utf-8")

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    def parameter_count(self, with_pooler: bool = False) -> int:
        """Encoder parameters, computed from sizes alone (no weights needed)."""
        d, h = self.dim, self.hidden_dim
        embeddings = (self.vocab_size + self.max_position_embeddings + self.type_vocab_size) * d + 2 * d
        block = 4 * (d * d + d) + (d * h + h) + (h * d + d) + 4 * d
        pooler = d * d + d if with_pooler else 0
        return embeddings + self.n_layers * block + pooler



def sinusoidal_positions(n_pos: int, dim: int) -> np.ndarray:
    """Vaswani et al. (2017) section 3.5, laid out as modeling_distilbert.create_sinusoidal_embeddings.

    (n_pos, dim) float32, computed in float64. Here, beside the sizes, because the PyTorch and the Keras
    model both build their position table from it.
    """
    j = np.arange(dim)
    angles = np.arange(n_pos)[:, None] / np.power(10000, 2 * (j // 2) / dim)[None, :]  # (n_pos, dim), float64
    out = np.empty((n_pos, dim), dtype=np.float32)
    out[:, 0::2] = np.sin(angles[:, 0::2])
    out[:, 1::2] = np.cos(angles[:, 1::2])
    return out
