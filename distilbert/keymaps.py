"""Checkpoint key names: each family's Hugging Face spelling <-> our module names, as literal template maps.

Our module names are DistilBERT's keys under `encoder.`; every other spelling is one template below.
No torch here: the PyTorch loader (checkpoint.py) and the Keras loader (keras.py) both read these maps.
"""

from __future__ import annotations

import re
from typing import Any

from .tasks import TASKS

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
HEAD_KEYS = re.compile(
    "^(" + "|".join(sorted({re.escape(k) for task in TASKS.values() for k in task.head_keys})) + r")\."
)


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
