"""The encoder and its heads in Keras 3, top to bottom like model.py, on the same checkpoints.

The same post-LayerNorm encoder as model.py (the comments there say why it is built as it is), in
keras.layers and keras.ops, so that TensorFlow users get the numbers PyTorch gives and can export a
SavedModel. Attribute names are model.py's module names, so our checkpoint names (keymaps.py) address the
Keras variables directly (`named_variables`); Keras' Dense keeps its kernel as (in, out), the transpose
of torch's Linear weight.

    model = distilbert.keras.from_pretrained("distilbert-base-uncased")
    output = model(tokenizer(text, return_tensors="tf"))  # output["last_hidden_state"]: a tf.Tensor

Mask convention, as everywhere in this package: attention_mask 1 = attend, 0 = padding. No torch here.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # read once, when keras is first imported

try:
    import keras
    from keras import layers, ops
except ImportError as e:  # pragma: no cover - the tf extra is not installed
    raise ImportError(f"distilbert.keras needs Keras 3 and TensorFlow ({e.name} is missing): "
                      "pip install 'distilbert[tf]'", name=e.name) from e

from . import tasks
from .tasks import CLS
from .checkpoint import check_keys, read_state_dict
from .config import Config, sinusoidal_positions
from .errors import UserError
from .hub import resolve
from .keymaps import to_our_keys

ACTIVATION_FUNCTIONS = {
    "gelu": lambda x: ops.gelu(x, approximate=False),  # exact erf GELU, as BERT's "gelu"
    "gelu_new": lambda x: ops.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: ops.gelu(x, approximate=True),
    "gelu_fast": lambda x: ops.gelu(x, approximate=True),
    "relu": ops.relu,
    "silu": ops.silu,
    "swish": ops.silu,
    "tanh": ops.tanh,
}
MASK_MIN = float(np.finfo(np.float32).min)  # the additive bias at padding (see Encoder in model.py)


def normal(config: Config) -> keras.initializers.Initializer:
    """BERT's initialisation of weights: N(0, initializer_range)."""
    return keras.initializers.RandomNormal(stddev=config.initializer_range)


def linear(config: Config, units: int, name: str) -> layers.Dense:
    return layers.Dense(units, kernel_initializer=normal(config), name=name)


def layer_norm(config: Config, name: str) -> layers.LayerNormalization:
    return layers.LayerNormalization(epsilon=config.layer_norm_eps, name=name)


class Embeddings(layers.Layer):
    def __init__(self, config: Config, **kwargs):
        super().__init__(**kwargs)
        self.word_embeddings = layers.Embedding(config.vocab_size, config.dim, embeddings_initializer=normal(config),
                                                name="word_embeddings")
        self.position_embeddings = layers.Embedding(config.max_position_embeddings, config.dim,
                                                    embeddings_initializer=normal(config), name="position_embeddings")
        if config.type_vocab_size:  # BERT only
            self.token_type_embeddings = layers.Embedding(config.type_vocab_size, config.dim,
                                                          embeddings_initializer=normal(config), name="token_type_embeddings")
        self.LayerNorm = layer_norm(config, "LayerNorm")
        self.dropout = layers.Dropout(config.dropout)

    def call(self, input_ids, token_type_ids=None, training=False):
        T = ops.shape(input_ids)[1]
        x = self.word_embeddings(input_ids) + ops.expand_dims(self.position_embeddings(ops.arange(T)), 0)  # (B, T, dim)
        if hasattr(self, "token_type_embeddings"):
            if token_type_ids is None:
                token_type_ids = ops.zeros_like(input_ids)
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x), training=training)


class MultiHeadSelfAttention(layers.Layer):
    def __init__(self, config: Config, **kwargs):
        super().__init__(**kwargs)
        self.n_heads = config.n_heads
        self.q_lin = linear(config, config.dim, "q_lin")
        self.k_lin = linear(config, config.dim, "k_lin")
        self.v_lin = linear(config, config.dim, "v_lin")
        self.out_lin = linear(config, config.dim, "out_lin")
        self.dropout = layers.Dropout(config.attention_dropout)

    def call(self, x, mask_bias, training=False):
        T, dim = ops.shape(x)[1], ops.shape(x)[2]
        nh, hs = self.n_heads, dim // self.n_heads

        def heads(y):
            return ops.transpose(ops.reshape(y, (-1, T, nh, hs)), (0, 2, 1, 3))  # (B, nh, T, hs)

        q, k, v = heads(self.q_lin(x)), heads(self.k_lin(x)), heads(self.v_lin(x))
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) / math.sqrt(hs) + mask_bias  # (B, nh, T, T)
        weights = ops.softmax(scores, axis=-1)
        y = ops.matmul(self.dropout(weights, training=training), v)  # (B, nh, T, hs)
        y = ops.reshape(ops.transpose(y, (0, 2, 1, 3)), (-1, T, dim))  # (B, T, dim)
        return self.out_lin(y), weights


class FFN(layers.Layer):
    def __init__(self, config: Config, **kwargs):
        super().__init__(**kwargs)
        self.lin1 = linear(config, config.hidden_dim, "lin1")
        self.lin2 = linear(config, config.dim, "lin2")
        self.activation = ACTIVATION_FUNCTIONS[config.activation]
        self.dropout = layers.Dropout(config.dropout)

    def call(self, x, training=False):
        return self.dropout(self.lin2(self.activation(self.lin1(x))), training=training)


class TransformerBlock(layers.Layer):
    """Post-LayerNorm block: x = LN(x + attention(x)); x = LN(x + ffn(x))."""

    def __init__(self, config: Config, **kwargs):
        super().__init__(**kwargs)
        self.attention = MultiHeadSelfAttention(config, name="attention")
        self.sa_layer_norm = layer_norm(config, "sa_layer_norm")
        self.ffn = FFN(config, name="ffn")
        self.output_layer_norm = layer_norm(config, "output_layer_norm")
        # BERT drops out the attention projection before the residual; DistilBERT does not.
        self.dropout = layers.Dropout(config.dropout if config.family == "bert" else 0.0)

    def call(self, x, mask_bias, training=False, keep=None):
        """keep: optional index into (B, T) (see Encoder); the feed-forward then runs on those rows alone."""
        a, weights = self.attention(x, mask_bias, training=training)
        x = self.sa_layer_norm(x + self.dropout(a, training=training))
        if keep is not None:  # the rows wanted, before the feed-forward, two thirds of the block's work
            x = x[:, 0] if isinstance(keep, str) else take_rows(x, keep)  # (B, dim) or (N, dim)
        x = self.output_layer_norm(x + self.ffn(x, training=training))
        return x, weights


def take_rows(x, at):
    """(B, T, dim) states at a bool (B, T) mask's positions: (N, dim), in row order."""
    rows = ops.nonzero(ops.reshape(at, (-1,)))[0]  # (N,) into the B * T positions
    return ops.take(ops.reshape(x, (-1, ops.shape(x)[-1])), rows, axis=0)


class Transformer(layers.Layer):
    def __init__(self, config: Config, **kwargs):
        super().__init__(**kwargs)
        self.layer = [TransformerBlock(config, name=f"layer_{i}") for i in range(config.n_layers)]


class Pooler(layers.Layer):
    """BERT's pooler: tanh(W h_[CLS] + b), trained on next-sentence prediction."""

    def __init__(self, config: Config, **kwargs):
        super().__init__(**kwargs)
        self.dense = linear(config, config.dim, "dense")

    def call(self, cls):
        """[CLS]'s final states (B, dim) -> (B, dim)."""
        return ops.tanh(self.dense(cls))


class Encoder(layers.Layer):
    """Embeddings and the stack of blocks. Returns a dict of named outputs (Optimum's names)."""

    def __init__(self, config: Config, with_pooler: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.embeddings = Embeddings(config, name="embeddings")
        self.transformer = Transformer(config, name="transformer")
        self.pooler = Pooler(config, name="pooler") if with_pooler else None

    def call(self, input_ids, attention_mask=None, token_type_ids=None, output_hidden_states=False,
             output_attentions=False, training=False, keep=None):
        """keep: as model.py's Encoder takes it (CLS or a bool (B, T) mask): the last feed-forward runs at those
        positions alone, and last_hidden_state is (N, dim). Not with output_hidden_states."""
        if keep is not None and output_hidden_states:
            raise ValueError("keep gives the final states of some positions only; output_hidden_states wants all")
        if isinstance(keep, str) and keep != CLS:
            raise ValueError(f"keep is {CLS!r} ([CLS] alone) or a bool (batch, length) mask, not {keep!r}")
        x = self.embeddings(input_ids, token_type_ids, training=training)  # (B, T, dim)
        if attention_mask is None:
            attention_mask = ops.ones_like(input_ids)
        T = ops.shape(input_ids)[1]
        mask_bias = (1.0 - ops.reshape(ops.cast(attention_mask, x.dtype), (-1, 1, 1, T))) * MASK_MIN  # (B, 1, 1, T)
        hidden_states, attentions = [x], []
        last = len(self.transformer.layer) - 1
        for i, block in enumerate(self.transformer.layer):
            x, weights = block(x, mask_bias, training=training, keep=keep if i == last else None)
            hidden_states.append(x)
            attentions.append(weights)
        out = {"last_hidden_state": x}
        if self.pooler is not None and (keep is None or isinstance(keep, str)):
            out["pooler_output"] = self.pooler(x[:, 0] if keep is None else x)
        if output_hidden_states:
            out["hidden_states"] = tuple(hidden_states)  # embeddings, then each layer: n_layers + 1
        if output_attentions:
            out["attentions"] = tuple(attentions)  # each (B, n_heads, T, T)
        return out


class _WithEncoder(keras.Model):
    """A head on top of the encoder; `self.encoder` holds the shared body.

    Called with input_ids (and attention_mask, token_type_ids), or with the tokenizer's dict of them as
    the model card does; token_type_ids are ignored by a model without token types (DistilBERT).
    """

    def __init__(self, config: Config, with_pooler: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.encoder = Encoder(config, with_pooler, name="encoder")

    def encode(self, input_ids, attention_mask=None, token_type_ids=None, training=False, **flags):
        if isinstance(input_ids, Mapping):
            inputs = input_ids
            input_ids = inputs["input_ids"]
            attention_mask = inputs.get("attention_mask", attention_mask)
            token_type_ids = inputs.get("token_type_ids", token_type_ids)
        return self.encoder(input_ids, attention_mask, token_type_ids, training=training, **flags)


class VocabProjector(layers.Layer):
    """The masked-LM output layer: its weight is the word-embedding matrix (tied); only the bias is its own."""

    def __init__(self, vocab_size: int, **kwargs):
        super().__init__(**kwargs)
        self.bias = self.add_weight(shape=(vocab_size,), initializer="zeros", name="bias")

    def call(self, h, word_embeddings):
        return ops.matmul(h, ops.transpose(word_embeddings)) + self.bias


class MaskedLM(_WithEncoder):
    """transform -> activation -> LayerNorm -> projector tied to the word embeddings."""

    def __init__(self, config: Config, **kwargs):
        super().__init__(config, **kwargs)
        self.activation = ACTIVATION_FUNCTIONS[config.activation]
        self.vocab_transform = linear(config, config.dim, "vocab_transform")
        self.vocab_layer_norm = layer_norm(config, "vocab_layer_norm")
        self.vocab_projector = VocabProjector(config.vocab_size, name="vocab_projector")

    def call(self, input_ids, attention_mask=None, token_type_ids=None, logits_at=None, logits_only=False,
             training=False, **flags):
        """logits_at: optional bool (B, T); then logits are (N, vocab) for just those positions, in row order.
        logits_only: the caller reads the logits alone; with logits_at, the last feed-forward then runs at those
        positions alone too, and last_hidden_state is left out (as model.py's MaskedLM).

        The head costs as much as half the encoder on short texts, and fill-mask needs it at [MASK] alone.
        """
        if logits_only and logits_at is not None and not flags.get("output_hidden_states"):
            out = self.encode(input_ids, attention_mask, token_type_ids, training=training, keep=logits_at, **flags)
            out["logits"] = self.vocab_logits(out.pop("last_hidden_state"))  # (N, vocab)
            return out
        out = self.encode(input_ids, attention_mask, token_type_ids, training=training, **flags)
        h = out["last_hidden_state"]
        if logits_at is not None:
            h = take_rows(h, logits_at)  # (N, dim)
        out["logits"] = self.vocab_logits(h)  # (B, T, vocab) or (N, vocab)
        return out

    def vocab_logits(self, h):
        """Hidden states (..., dim) -> vocabulary logits (..., vocab). (Keras' Model.predict is another thing.)"""
        h = self.vocab_layer_norm(self.activation(self.vocab_transform(h)))
        return self.vocab_projector(h, self.encoder.embeddings.word_embeddings.embeddings)


class SequenceClassifier(_WithEncoder):
    """DistilBERT: [CLS] -> pre_classifier -> ReLU -> classifier. BERT: pooler -> classifier."""

    def __init__(self, config: Config, **kwargs):
        super().__init__(config, with_pooler=config.family == "bert", **kwargs)
        if config.family == "distilbert":
            self.pre_classifier = linear(config, config.dim, "pre_classifier")
            p = config.classifier_dropout if config.classifier_dropout is not None else 0.2
        else:
            p = config.classifier_dropout if config.classifier_dropout is not None else config.dropout
        self.dropout = layers.Dropout(p)
        self.classifier = linear(config, config.num_labels, "classifier")

    def call(self, input_ids, attention_mask=None, token_type_ids=None, training=False, **flags):
        """Only [CLS]'s final states are read: the last feed-forward runs on that row alone, and
        last_hidden_state is left out (unless output_hidden_states asks for every layer's states)."""
        if flags.get("output_hidden_states"):
            out = self.encode(input_ids, attention_mask, token_type_ids, training=training, **flags)
            cls = out["last_hidden_state"][:, 0]
        else:
            out = self.encode(input_ids, attention_mask, token_type_ids, training=training, keep=CLS, **flags)
            cls = out.pop("last_hidden_state")  # (B, dim)
        if self.config.family == "distilbert":
            pooled = ops.relu(self.pre_classifier(cls))  # (B, dim)
        else:
            pooled = out["pooler_output"]
        out["logits"] = self.classifier(self.dropout(pooled, training=training))  # (B, num_labels)
        return out


class TokenClassifier(_WithEncoder):
    def __init__(self, config: Config, **kwargs):
        super().__init__(config, **kwargs)
        p = config.dropout
        if config.family == "bert" and config.classifier_dropout is not None:
            p = config.classifier_dropout
        self.dropout = layers.Dropout(p)
        self.classifier = linear(config, config.num_labels, "classifier")

    def call(self, input_ids, attention_mask=None, token_type_ids=None, training=False, **flags):
        out = self.encode(input_ids, attention_mask, token_type_ids, training=training, **flags)
        out["logits"] = self.classifier(self.dropout(out["last_hidden_state"], training=training))  # (B, T, num_labels)
        return out


class QuestionAnswering(_WithEncoder):
    def __init__(self, config: Config, **kwargs):
        super().__init__(config, **kwargs)
        self.dropout = layers.Dropout(config.qa_dropout if config.family == "distilbert" else 0.0)
        self.qa_outputs = linear(config, 2, "qa_outputs")

    def call(self, input_ids, attention_mask=None, token_type_ids=None, training=False, **flags):
        out = self.encode(input_ids, attention_mask, token_type_ids, training=training, **flags)
        logits = self.qa_outputs(self.dropout(out["last_hidden_state"], training=training))  # (B, T, 2)
        out["start_logits"], out["end_logits"] = logits[..., 0], logits[..., 1]  # (B, T) each
        return out


class FeatureExtractor(_WithEncoder):
    """The bare encoder (DistilBertModel / BertModel), with BERT's pooler when the checkpoint has one."""

    def call(self, input_ids, attention_mask=None, token_type_ids=None, training=False, **flags):
        return self.encode(input_ids, attention_mask, token_type_ids, training=training, **flags)


HEADS: dict[str, type[_WithEncoder]] = {
    "feature-extraction": FeatureExtractor,
    "fill-mask": MaskedLM,
    "text-classification": SequenceClassifier,
    "token-classification": TokenClassifier,
    "question-answering": QuestionAnswering,
}


def task_of(net: keras.Model) -> str:
    """The task a model of ours serves, from its head."""
    return next(task for task, cls in HEADS.items() if type(net) is cls)


def build(config: Config, task: str, with_pooler: bool = False) -> _WithEncoder:
    """A model for `task` with its variables made, initialised as BERT initialises (N(0, initializer_range),
    LayerNorm 1 and 0, the padding token's embedding 0, sinusoidal positions where the config says so)."""
    name = task.replace("-", "_")
    net = FeatureExtractor(config, with_pooler, name=name) if task == "feature-extraction" else HEADS[task](config, name=name)
    with warnings.catch_warnings():  # that layers without a build() method are built by this call: they are
        warnings.simplefilter("ignore", UserWarning)
        net(np.zeros((1, 2), dtype=np.int64))  # Keras makes variables on the first call
    embeddings = net.encoder.embeddings
    words = embeddings.word_embeddings.embeddings
    is_pad = ops.expand_dims(ops.arange(config.vocab_size) == config.pad_token_id, 1)
    words.assign(ops.where(is_pad, ops.zeros_like(words), words))
    if config.sinusoidal_pos_embds:
        embeddings.position_embeddings.embeddings.assign(sinusoidal_positions(config.max_position_embeddings, config.dim))
    return net


# --- checkpoints ----------------------------------------------------------------------------------------

# Keras variable -> our checkpoint name for it (model.py's), and whether the checkpoint holds it transposed.
VARIABLE_NAMES: dict[type, dict[str, tuple[str, bool]]] = {
    layers.Dense: {"kernel": ("weight", True), "bias": ("bias", False)},  # torch's Linear: (out, in)
    layers.LayerNormalization: {"gamma": ("weight", False), "beta": ("bias", False)},
    layers.Embedding: {"embeddings": ("weight", False)},
    VocabProjector: {"bias": ("bias", False)},  # its weight is the word embeddings' (tied)
}


def named_variables(layer: layers.Layer, prefix: str = "") -> dict[str, tuple[Any, bool]]:
    """Our checkpoint name -> (Keras variable, transposed?), by attribute names as torch names modules."""
    found = {prefix + ours: (getattr(layer, attr), transposed)
             for attr, (ours, transposed) in VARIABLE_NAMES.get(type(layer), {}).items()}
    for attr, value in vars(layer).items():
        if attr.startswith("_"):
            continue
        if isinstance(value, layers.Layer):
            found.update(named_variables(value, f"{prefix}{attr}."))
        elif isinstance(value, list):  # Transformer.layer
            for i, item in enumerate(value):
                if isinstance(item, layers.Layer):
                    found.update(named_variables(item, f"{prefix}{attr}.{i}."))
    return found


def load(model: str | os.PathLike, task: str | None = None, allow_new_head: bool = False) -> tuple[_WithEncoder, Config, Path]:
    """A checkpoint folder or hub id (safetensors, single or sharded) as our Keras model for `task` (by default
    the head it was saved with). Checked as checkpoint.load checks: missing, unexpected and mis-shaped keys
    are one error listing them all. `allow_new_head` lets a head the checkpoint lacks keep its fresh weights."""
    folder = resolve(model, need="torch")
    config = Config.from_file(folder / "config.json")
    origin: dict[str, str] = {}
    state = to_our_keys(config.family, read_state_dict(folder, np.float32, framework="np"), origin)
    natural = tasks.infer(config, keys=set(state))
    task = tasks.get(task).name if task else natural
    with_pooler = task == "feature-extraction" and "encoder.pooler.dense.weight" in state
    net = build(config, task, with_pooler)
    variables = named_variables(net)
    expected = {k: tuple(v.shape)[::-1] if transposed else tuple(v.shape) for k, (v, transposed) in variables.items()}
    check_keys(state, expected, origin, folder, task, natural, allow_new_head)
    for key, (variable, transposed) in variables.items():
        if key in state:  # else a new head's key (allow_new_head): it keeps its initialisation
            variable.assign(state[key].T if transposed else state[key])
    return net, config, folder


def from_pretrained(model: str | os.PathLike, task: str | None = None, allow_new_head: bool = False) -> _WithEncoder:
    """`load`, the model alone: `distilbert.keras.from_pretrained("distilbert-base-uncased")`."""
    return load(model, task, allow_new_head)[0]


# --- TensorFlow SavedModel --------------------------------------------------------------------------------


def input_names(config: Config) -> list[str]:
    return ["input_ids", "attention_mask"] + (["token_type_ids"] if config.type_vocab_size else [])


def save_savedmodel(net: _WithEncoder, directory: str | os.PathLike) -> Path:
    """A TensorFlow SavedModel of `net` for TF Serving, TFLite and tf.saved_model.load.

    Its one serving signature, "serving_default" (also reachable as `.serve`), takes int64 (batch, length)
    input_ids and attention_mask (and token_type_ids for BERT) and gives the task's outputs by their ONNX
    names: fill-mask logits at every position, (batch, length, vocab).
    """
    import tensorflow as tf

    names = input_names(net.config)
    outputs = list(tasks.TASKS[task_of(net)].outputs)

    def serve(*arrays):
        out = net(dict(zip(names, arrays)), training=False)
        return {name: out[name] for name in outputs}

    archive = keras.export.ExportArchive()
    archive.track(net)
    archive.add_endpoint("serve", serve, [tf.TensorSpec((None, None), tf.int64, name=name) for name in names])
    archive.write_out(str(directory), verbose=False)
    return Path(directory)


def export_savedmodel(model: str | os.PathLike, out_dir: str | os.PathLike, task: str | None = None,
                      log: Callable[[str], None] = print) -> dict:
    """`model` (folder or hub id) as a SavedModel in `out_dir`, beside its config.json and tokenizer files.

    The SavedModel is then loaded back with tf.saved_model.load and its signature run against the Keras
    model on padded batches of three shapes; above 1e-4, or on a NaN, it is an error. Returns the worst
    absolute difference per output.
    """
    import tensorflow as tf

    from .onnx.export import FP32_TOLERANCE, validation_batch, writable_folder
    from .tokenizer import Tokenizer

    out = writable_folder(Path(out_dir))
    net, config, folder = load(model, task)
    task = task_of(net)
    tokenizer = Tokenizer.from_pretrained(folder, config=config)
    log(f"saving {folder} ({config.family}, {task}) as a TensorFlow SavedModel in {out}")
    save_savedmodel(net, out)
    config.replace(architectures=[tasks.architecture(config.family, task)]).save(out / "config.json")
    tokenizer.save(out)
    serve = tf.saved_model.load(str(out)).signatures["serving_default"]
    worst: dict[str, float] = {}
    for batch, length in ((1, 8), (2, 1), (7, min(40, config.max_position_embeddings))):
        arrays = validation_batch(batch, length, config, tokenizer, seed=batch)
        got = serve(**{name: tf.constant(arrays[name]) for name in input_names(config)})
        expected = net(arrays, training=False)
        for name in tasks.TASKS[task].outputs:
            a, b = got[name].numpy(), np.asarray(expected[name])
            diff = float(np.abs(a - b).max()) if not np.isnan(a).any() else float("nan")
            worst[name] = max(worst.get(name, 0.0), diff) if not np.isnan(diff) else diff
    bad = {name: diff for name, diff in worst.items() if not diff <= FP32_TOLERANCE}
    if bad:
        raise UserError(f"the SavedModel in {out} differs from the Keras model by {bad} (more than {FP32_TOLERANCE}); "
                        "report this with the model's config.json")
    log("SavedModel validated: worst absolute difference " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    return {"task": task, "format": "savedmodel", "inputs": input_names(config), "validation": {"worst": worst}}
