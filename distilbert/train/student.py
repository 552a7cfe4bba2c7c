"""A DistilBERT student from a BERT teacher (Sanh et al. 2019, section 3: "taking one layer out of two").

The teacher is a masked LM (the student is then distilled), or a bare encoder such as a sentence-transformers
model (the student is then fine-tuned, with distillation during fine-tuning if wanted).

Same width, half the layers by default ([0, 2, 4, 7, 9, 11] for 12, the released model's choice), word and
position embeddings, their LayerNorm, the chosen layers and the masked-LM head copied; token-type
embeddings and the pooler dropped.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import UserError


def default_layers(n_layers: int) -> list[int]:
    """Half the layers, evenly spread, first and last kept: 12 -> [0, 2, 4, 7, 9, 11]."""
    return [int(x) for x in np.round(np.linspace(0, n_layers - 1, max(1, n_layers // 2)))]


def init_student(teacher: str | os.PathLike, out: str | os.PathLike, layers: list[int] | None = None):
    import torch

    from ..checkpoint import load, save
    from ..model import build
    from ..tokenizer import Tokenizer

    from ..model import task_of

    net, config, folder = load(teacher)
    task = task_of(net)
    if task not in ("fill-mask", "feature-extraction"):
        raise UserError(f"teacher {folder} has no masked-LM head ({', '.join(config.architectures or [task])}); "
                        "a teacher must be a ...ForMaskedLM checkpoint (or a bare encoder, for a student to fine-tune)")
    layers = default_layers(config.n_layers) if layers is None else list(layers)
    if not layers or any(not 0 <= i < config.n_layers for i in layers) or len(set(layers)) != len(layers):
        raise UserError(f"layers {layers} must be distinct indices of the teacher's {config.n_layers} layers")
    student_config = config.replace(family="distilbert", n_layers=len(layers), type_vocab_size=0, architectures=None,
                                    classifier_dropout=0.2 if config.classifier_dropout is None else config.classifier_dropout,
                                    extra={k: v for k, v in config.extra.items() if k in ("transformers_version",)})
    student = build(student_config, task)  # a bare encoder's student is one too: fine-tune it (no pooler: DistilBERT's)
    t_state = net.state_dict()
    with torch.no_grad():
        for name, param in student.state_dict().items():
            source = name
            if name.startswith("encoder.transformer.layer."):
                i = int(name.split(".")[3])
                source = name.replace(f"layer.{i}.", f"layer.{layers[i]}.", 1)
            param.copy_(t_state[source])
    out = Path(out)
    save(student, out, task, Tokenizer.from_pretrained(folder))
    return student, layers


def new_model(out: str | os.PathLike, tokenizer: str | os.PathLike, family: str = "bert", dim: int = 256,
              n_layers: int = 4, n_heads: int = 4, hidden_dim: int | None = None, max_position_embeddings: int = 512,
              seed: int = 0):
    """A freshly initialised masked LM (BERT's initialisation) with `tokenizer`'s vocabulary, for pretraining."""
    import torch

    from ..checkpoint import save
    from ..hub import resolve
    from ..config import Config
    from ..model import build
    from ..tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained(resolve(tokenizer, need="tokenizer"))
    config = Config(family=family, vocab_size=tok.vocab_size, dim=dim, n_layers=n_layers, n_heads=n_heads,
                    hidden_dim=hidden_dim or 4 * dim, max_position_embeddings=max_position_embeddings,
                    type_vocab_size=2 if family == "bert" else 0, classifier_dropout=None if family == "bert" else 0.2)
    torch.manual_seed(seed)
    net = build(config, "fill-mask")
    save(net, out, "fill-mask", tok)
    return net
