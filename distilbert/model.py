"""The encoder and its heads, top to bottom like the paper.

DistilBERT (Sanh et al. 2019) is BERT (Devlin et al. 2018) with half the layers, no token-type
embeddings and no pooler. One post-LayerNorm encoder serves both; `Config` carries the differences.
Module names are DistilBERT's checkpoint keys (modeling_distilbert.py); BERT's keys are mapped onto
them by one literal table in checkpoint.py.

Mask convention, everywhere in this package: attention_mask 1 = attend, 0 = padding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import Config
from .config import sinusoidal_positions as position_table
from .tasks import CLS

ACTIVATION_FUNCTIONS = {
    "gelu": F.gelu,  # exact erf GELU, as BERT's "gelu"
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
}


def sinusoidal_positions(n_pos: int, dim: int) -> torch.Tensor:
    """Vaswani et al. (2017) section 3.5, as modeling_distilbert lays it out (config.py computes it)."""
    return torch.from_numpy(position_table(n_pos, dim))


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout: zero each element with probability p, scale the rest by 1 / (1 - p).

    On a CPU the mask is drawn as 32-bit integers from the same generator, one compare against (1 - p) * 2^24
    on their low 24 bits (float32 `rand` has the same 24-bit grain): 2.7 ns an element against `bernoulli_`'s
    7-11, which on two cores was a tenth of a MiniLM fine-tuning step. Elsewhere, PyTorch's fused kernel.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be between 0 and 1, got {p}")
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, True)
    bits = torch.empty(x.shape, dtype=torch.int32).random_()
    keep = (bits & 0xFFFFFF) < round((1.0 - p) * (1 << 24))
    return torch.where(keep, x, 0) * (1.0 / (1.0 - p))


class Dropout(nn.Dropout):
    """nn.Dropout through `dropout` (no weights: checkpoints are unchanged)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


class Embeddings(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.dim, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.dim)
        if config.type_vocab_size:  # BERT only
            self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.dim)
        self.LayerNorm = nn.LayerNorm(config.dim, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.dropout)
        # A slice of a constant table rather than arange(T): the exported ONNX graph then matches
        # ONNX Runtime's EmbedLayerNormalization fusion pattern. Not saved in checkpoints.
        self.register_buffer("position_ids", torch.arange(config.max_position_embeddings)[None], persistent=False)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        T = input_ids.size(1)
        x = self.word_embeddings(input_ids) + self.position_embeddings(self.position_ids[:, :T])  # (B, T, dim)
        if hasattr(self, "token_type_embeddings"):
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.n_heads = config.n_heads
        self.q_lin = nn.Linear(config.dim, config.dim)
        self.k_lin = nn.Linear(config.dim, config.dim)
        self.v_lin = nn.Linear(config.dim, config.dim)
        self.out_lin = nn.Linear(config.dim, config.dim)
        self.dropout_p = config.attention_dropout

    def forward(
        self, x: torch.Tensor, mask_bias: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, dim = x.shape
        nh, hs = self.n_heads, dim // self.n_heads
        q = self.q_lin(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = self.k_lin(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = self.v_lin(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        dropout_p = self.dropout_p if self.training else 0.0
        # The explicit path: for attention maps, and for training on a CPU, where SDPA would materialise the
        # same weights for its dropout anyway and draw the mask with the slower bernoulli_.
        if need_weights or (dropout_p > 0.0 and x.device.type == "cpu"):
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(hs) + mask_bias  # (B, nh, T, T)
            weights = F.softmax(scores, dim=-1)
            y = dropout(weights, dropout_p, self.training) @ v  # (B, nh, T, hs)
            weights = weights if need_weights else None
        else:
            weights = None
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask_bias, dropout_p=dropout_p)
        y = y.transpose(1, 2).reshape(B, T, dim)  # (B, T, dim)
        return self.out_lin(y), weights


class FFN(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.lin1 = nn.Linear(config.dim, config.hidden_dim)
        self.lin2 = nn.Linear(config.hidden_dim, config.dim)
        self.activation = ACTIVATION_FUNCTIONS[config.activation]
        self.dropout = Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.lin2(self.activation(self.lin1(x))))


class TransformerBlock(nn.Module):
    """Post-LayerNorm block: x = LN(x + attention(x)); x = LN(x + ffn(x))."""

    def __init__(self, config: Config):
        super().__init__()
        self.attention = MultiHeadSelfAttention(config)
        self.sa_layer_norm = nn.LayerNorm(config.dim, eps=config.layer_norm_eps)
        self.ffn = FFN(config)
        self.output_layer_norm = nn.LayerNorm(config.dim, eps=config.layer_norm_eps)
        # BERT drops out the attention projection before the residual; DistilBERT does not.
        self.dropout = Dropout(config.dropout if config.family == "bert" else 0.0)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor, need_weights: bool = False, keep=None):
        """keep: optional index into (B, T) (see Encoder); the feed-forward then runs on those rows alone."""
        a, weights = self.attention(x, mask_bias, need_weights)
        x = self.sa_layer_norm(x + self.dropout(a))
        if keep is not None:  # the rows wanted, before the feed-forward, two thirds of the block's work
            x = x[:, 0] if isinstance(keep, str) else x[keep]  # (B, dim) or (N, dim)
        x = self.output_layer_norm(x + self.ffn(x))
        return x, weights


class Transformer(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.layer = nn.ModuleList(TransformerBlock(config) for _ in range(config.n_layers))


class Pooler(nn.Module):
    """BERT's pooler: tanh(W h_[CLS] + b), trained on next-sentence prediction."""

    def __init__(self, config: Config):
        super().__init__()
        self.dense = nn.Linear(config.dim, config.dim)

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        """[CLS]'s final states (B, dim) -> (B, dim)."""
        return torch.tanh(self.dense(cls))


class Encoder(nn.Module):
    """Embeddings and the stack of blocks. Returns a dict of named outputs (Optimum's names)."""

    def __init__(self, config: Config, with_pooler: bool = False):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.transformer = Transformer(config)
        self.pooler = Pooler(config) if with_pooler else None

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        keep=None,
    ) -> dict[str, torch.Tensor | tuple[torch.Tensor, ...]]:
        """keep: optional index into the (B, T) positions, a bool (B, T) mask or CLS: the positions whose final
        states a head reads. The last block's feed-forward then runs on those rows alone (a ninth of a 6-layer
        encoder's work saved), and last_hidden_state is (N, dim), in row order. Each row's states are the
        ones it would have had: the feed-forward works row by row. Not with output_hidden_states.
        """
        if keep is not None and output_hidden_states:
            raise ValueError("keep gives the final states of some positions only; output_hidden_states wants all")
        if isinstance(keep, str) and keep != CLS:
            raise ValueError(f"keep is {CLS!r} ([CLS] alone) or a bool (batch, length) mask, not {keep!r}")
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, dim)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        # Additive bias: 0 where attended, the dtype's minimum at padding. Unlike -inf, a row with every
        # key masked gives uniform weights instead of NaN (as transformers does).
        mask_bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min  # (B, 1, 1, T)
        hidden_states, attentions = [x], []
        last = len(self.transformer.layer) - 1
        for i, block in enumerate(self.transformer.layer):
            x, weights = block(x, mask_bias, output_attentions, keep if i == last else None)
            hidden_states.append(x)
            attentions.append(weights)
        out: dict[str, torch.Tensor | tuple[torch.Tensor, ...]] = {"last_hidden_state": x}
        if self.pooler is not None and (keep is None or isinstance(keep, str)):
            out["pooler_output"] = self.pooler(x[:, 0] if keep is None else x)
        if output_hidden_states:
            out["hidden_states"] = tuple(hidden_states)  # embeddings, then each layer: n_layers + 1
        if output_attentions:
            out["attentions"] = tuple(attentions)  # each (B, n_heads, T, T)
        return out


class _WithEncoder(nn.Module):
    """A head on top of the encoder; `self.encoder` holds the shared body."""

    def __init__(self, config: Config, with_pooler: bool = False):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config, with_pooler)

    def encode(self, input_ids, attention_mask=None, token_type_ids=None, **flags):
        return self.encoder(input_ids, attention_mask, token_type_ids, **flags)


class MaskedLM(_WithEncoder):
    """transform -> activation -> LayerNorm -> projector tied to the word embeddings."""

    def __init__(self, config: Config):
        super().__init__(config)
        self.activation = ACTIVATION_FUNCTIONS[config.activation]
        self.vocab_transform = nn.Linear(config.dim, config.dim)
        self.vocab_layer_norm = nn.LayerNorm(config.dim, eps=config.layer_norm_eps)
        self.vocab_projector = nn.Linear(config.dim, config.vocab_size)
        self.vocab_projector.weight = self.encoder.embeddings.word_embeddings.weight  # tied

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, logits_at=None, logits_only=False,
                **flags):
        """logits_at: optional bool (B, T); then logits are (N, vocab) for just those positions, in row order.
        logits_only: the caller reads the logits alone (inference); with logits_at, the last block's
        feed-forward then runs at those positions alone too, and last_hidden_state is left out.

        The head costs as much as half the encoder on short texts, and fill-mask needs it at [MASK] alone.
        """
        if logits_only and logits_at is not None and not flags.get("output_hidden_states"):
            out = self.encode(input_ids, attention_mask, token_type_ids, keep=logits_at, **flags)
            out["logits"] = self.predict(out.pop("last_hidden_state"))  # (N, vocab)
            return out
        out = self.encode(input_ids, attention_mask, token_type_ids, **flags)
        h = out["last_hidden_state"]
        out["logits"] = self.predict(h if logits_at is None else h[logits_at])  # (B, T, vocab) or (N, vocab)
        return out

    def predict(self, h: torch.Tensor) -> torch.Tensor:
        """Hidden states (..., dim) -> vocabulary logits (..., vocab)."""
        return self.vocab_projector(self.vocab_layer_norm(self.activation(self.vocab_transform(h))))


class SequenceClassifier(_WithEncoder):
    """DistilBERT: [CLS] -> pre_classifier -> ReLU -> classifier. BERT: pooler -> classifier."""

    def __init__(self, config: Config):
        super().__init__(config, with_pooler=config.family == "bert")
        if config.family == "distilbert":
            self.pre_classifier = nn.Linear(config.dim, config.dim)
            p = config.classifier_dropout  # Config gives DistilBERT its 0.2 when the file has none
        else:
            p = config.classifier_dropout if config.classifier_dropout is not None else config.dropout
        self.dropout = Dropout(p)
        self.classifier = nn.Linear(config.dim, config.num_labels)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **flags):
        """Only [CLS]'s final states are read: the last block's feed-forward runs on that row alone, and
        last_hidden_state is left out (unless output_hidden_states asks for every layer's states)."""
        if flags.get("output_hidden_states"):
            out = self.encode(input_ids, attention_mask, token_type_ids, **flags)
            cls = out["last_hidden_state"][:, 0]
        else:
            out = self.encode(input_ids, attention_mask, token_type_ids, keep=CLS, **flags)
            cls = out.pop("last_hidden_state")  # (B, dim)
        if self.config.family == "distilbert":
            pooled = F.relu(self.pre_classifier(cls))  # (B, dim)
        else:
            pooled = out["pooler_output"]
        out["logits"] = self.classifier(self.dropout(pooled))  # (B, num_labels)
        return out


class TokenClassifier(_WithEncoder):
    def __init__(self, config: Config):
        super().__init__(config)
        p = config.dropout
        if config.family == "bert" and config.classifier_dropout is not None:
            p = config.classifier_dropout
        self.dropout = Dropout(p)
        self.classifier = nn.Linear(config.dim, config.num_labels)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **flags):
        out = self.encode(input_ids, attention_mask, token_type_ids, **flags)
        out["logits"] = self.classifier(self.dropout(out["last_hidden_state"]))  # (B, T, num_labels)
        return out


class QuestionAnswering(_WithEncoder):
    def __init__(self, config: Config):
        super().__init__(config)
        self.dropout = Dropout(config.qa_dropout if config.family == "distilbert" else 0.0)
        self.qa_outputs = nn.Linear(config.dim, 2)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **flags):
        out = self.encode(input_ids, attention_mask, token_type_ids, **flags)
        logits = self.qa_outputs(self.dropout(out["last_hidden_state"]))  # (B, T, 2)
        out["start_logits"], out["end_logits"] = logits[..., 0], logits[..., 1]  # (B, T) each
        return out


class FeatureExtractor(_WithEncoder):
    """The bare encoder (DistilBertModel / BertModel), with BERT's pooler when the checkpoint has one."""

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **flags):
        return self.encode(input_ids, attention_mask, token_type_ids, **flags)


HEADS: dict[str, type[_WithEncoder]] = {
    "feature-extraction": FeatureExtractor,
    "fill-mask": MaskedLM,
    "text-classification": SequenceClassifier,
    "token-classification": TokenClassifier,
    "question-answering": QuestionAnswering,
}


def task_of(net: nn.Module) -> str:
    """The task a model of ours serves, from its head."""
    return next(task for task, cls in HEADS.items() if type(net) is cls)


def build(config: Config, task: str, with_pooler: bool = False, init: bool = True) -> _WithEncoder:
    """A model for `task`, initialised as BERT initialises (N(0, initializer_range), LayerNorm 1 and 0)."""
    if task == "feature-extraction":
        model = FeatureExtractor(config, with_pooler)
    else:
        model = HEADS[task](config)
    if not init:
        return model
    model.apply(lambda m: _init_weights(m, config))
    with torch.no_grad():
        embeddings = model.encoder.embeddings
        embeddings.word_embeddings.weight[config.pad_token_id].zero_()  # again: the tied projector's init wrote it
        if config.sinusoidal_pos_embds:
            embeddings.position_embeddings.weight.copy_(sinusoidal_positions(*embeddings.position_embeddings.weight.shape))
    return model


def _init_weights(module: nn.Module, config: Config) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=config.initializer_range)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=config.initializer_range)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
