"""What every pipeline shares: the tokenizer, the backend, truncation with a warning, batching by length."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np

from ..backends import Backend
from ..errors import UserError
from ..tokenizer import Tokenizer

log = logging.getLogger("distilbert")


class Pipeline:
    task = ""

    def __init__(self, backend: Backend, tokenizer: Tokenizer, batch_size: int = 32, max_length: int | None = None):
        self.backend, self.tokenizer, self.batch_size = backend, tokenizer, batch_size
        limit = min(tokenizer.model_max_length, backend.config.max_position_embeddings)
        self.max_length = min(max_length or limit, limit)  # never past the position table: no index errors

    @property
    def config(self):
        return self.backend.config

    def encode(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> dict[str, list[list[int]]]:
        """Token ids for each text, truncated to max_length with a warning."""
        if not texts:
            raise UserError("no input text: give at least one")
        for text in texts:
            if not isinstance(text, str):
                raise UserError(f"expected text, got {type(text).__name__}")
        enc = self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length + 1)
        for i, ids in enumerate(enc["input_ids"]):
            if len(ids) > self.max_length:
                log.warning(
                    "input %d is longer than the model's maximum of %d tokens; it was truncated", i, self.max_length
                )
        if any(len(ids) > self.max_length for ids in enc["input_ids"]):
            enc = self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length)
        return enc

    def batches(self, enc: dict[str, list[list[int]]]) -> Iterator[tuple[list[int], dict[str, np.ndarray]]]:
        """Rows grouped by length (longest first) so little padding is computed; yields row indices and arrays."""
        lengths = [len(ids) for ids in enc["input_ids"]]
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            T = max(lengths[i] for i in rows)
            arrays = {}
            for name, pad in (("input_ids", self.tokenizer.pad_token_id), ("attention_mask", 0), ("token_type_ids", 0)):
                a = np.full((len(rows), T), pad, dtype=np.int64)
                for r, i in enumerate(rows):
                    a[r, : lengths[i]] = enc[name][i]
                arrays[name] = a
            if not self.config.type_vocab_size:
                del arrays["token_type_ids"]
            yield rows, arrays
