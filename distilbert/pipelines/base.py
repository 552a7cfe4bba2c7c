"""What every pipeline shares: the tokenizer, the backend, truncation with a warning, batched forward passes.

A pipeline call is three steps, which the server also runs one by one (it batches the middle step across
requests):

    job = pipe.preprocess(inputs, **params)   # validate, tokenise: job.features, one per model row
    outputs = pipe.forward(job.features)      # the backend, in length-grouped batches; one dict per row
    result = pipe.postprocess(job, outputs)   # transformers' output format

`pipe(inputs, **params)` does all three. A caller that groups rows itself (the server's batcher groups rows
of many requests) runs each of its groups with `pipe.forward_batch(rows)`: one padded batch, never split again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import batching, tasks
from ..backends import Backend
from ..errors import UserError
from ..tokenizer import Tokenizer

log = logging.getLogger("distilbert")


@dataclass
class Feature:
    """One row for the model: token ids (and token types for pairs)."""

    input_ids: list[int]
    token_type_ids: list[int] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class Job:
    """A call between its steps: the rows to run and whatever postprocessing needs."""

    features: list[Feature]
    state: dict[str, Any] = field(default_factory=dict)
    # inputs (by index) cut to the model's maximum: the server refuses them when a request says truncate: false.
    # Windowed tasks (token classification, question answering) cut nothing: a long text becomes more windows.
    truncated: list[int] = field(default_factory=list)


class Pipeline:
    task = ""
    # batching.group splits each call's rows, sorted by length, where padded tokens plus this per batch are
    # least: on a CPU a padded token costs what a real one does, and a batch reads every weight once.
    batch_cost = batching.BATCH_COST

    def __init__(self, backend: Backend, tokenizer: Tokenizer, batch_size: int = 32, max_length: int | None = None,
                 max_batch_tokens: int | None = None):
        self.backend, self.tokenizer, self.batch_size = backend, tokenizer, batch_size
        self.max_batch_tokens = max_batch_tokens
        limit = min(tokenizer.model_max_length, backend.config.max_position_embeddings)
        self.max_length = min(max_length or limit, limit)  # never past the position table: no index errors

    @property
    def config(self):
        return self.backend.config

    def __call__(self, inputs, **params):
        job = self.preprocess(inputs, **params)
        return self.postprocess(job, self.forward(job.features))

    def preprocess(self, inputs, **params) -> Job:
        raise NotImplementedError

    def postprocess(self, job: Job, outputs: list[dict[str, np.ndarray]]):
        raise NotImplementedError

    # --- shared steps ---------------------------------------------------------------------------

    def encode(self, texts: Sequence[str], pairs: Sequence[str] | None = None, return_offsets: bool = False
               ) -> dict[str, list]:
        """Token ids for each text, truncated to max_length with a warning; `truncated` lists the inputs cut."""
        texts = check_texts(texts)
        if pairs is not None:
            check_texts(pairs)
        enc = self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length + 1, return_offsets=return_offsets)
        truncated = [i for i, ids in enumerate(enc["input_ids"]) if len(ids) > self.max_length]
        if truncated:
            for i in truncated:
                log.warning("input %d is longer than the model's maximum of %d tokens; it was truncated", i,
                            self.max_length)
            enc = self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length, return_offsets=return_offsets)
        enc["truncated"] = truncated
        return enc

    def features(self, enc: dict[str, list]) -> list[Feature]:
        types = self.config.type_vocab_size > 0
        return [Feature(ids, enc["token_type_ids"][i] if types else None) for i, ids in enumerate(enc["input_ids"])]

    def forward(self, features: Sequence[Feature]) -> list[dict[str, np.ndarray]]:
        """Run every row, batched by length; each row's outputs cut to its own length."""
        results: list[dict[str, np.ndarray]] = [{} for _ in features]
        for rows in batching.group([len(f) for f in features], self.batch_size, self.max_batch_tokens,
                                    self.batch_cost):
            for i, out in zip(rows, self.forward_batch([features[i] for i in rows])):
                results[i] = out
        return results

    def forward_batch(self, features: Sequence[Feature]) -> list[dict[str, np.ndarray]]:
        """Rows the caller has grouped already, run as one padded batch (never split: the server's batcher has
        grouped rows of many requests under its own token budget); each row's outputs cut to its own length."""
        task = tasks.TASKS[self.backend.task]
        arrays = batching.collate([vars(f) for f in features], self.tokenizer.pad_token_id,
                                  self.config.type_vocab_size > 0)
        return [{k: v[:len(f)] if task.token_level(k) else v for k, v in out.items() if k in task.outputs}
                for f, out in zip(features, self.run_batch(arrays))]

    def run_batch(self, arrays: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
        """One padded batch through the backend; one dict of outputs per row. Fill-mask narrows this."""
        out = self.backend.run(**arrays)
        return [{k: v[r] for k, v in out.items()} for r in range(len(arrays["input_ids"]))]


def check_texts(texts: Sequence[str]) -> list[str]:
    texts = list(texts)
    if not texts:
        raise UserError("no input text: give at least one")
    for text in texts:
        if not isinstance(text, str):
            raise UserError(f"expected text, got {type(text).__name__}")
    return texts


def check_top_k(top_k: Any, allow_none: bool = False) -> None:
    if top_k is None and allow_none:
        return
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise UserError(f"top_k must be a positive integer, got {top_k!r}")


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = x.astype(np.float32)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)
