"""What each task adds to a row, as Arrow columns of one type for every batch (so the Parquet files share one
schema), and the text columns it reads."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa

from ..errors import UserError


def _embedding(pipe, texts: list[str], pairs) -> dict[str, pa.Array]:
    pooling = pipe.sentence_pooling  # as `distilbert embed` decides
    vectors = np.ascontiguousarray(np.atleast_2d(pipe(texts, pooling=pooling)), dtype=np.float32)  # (rows, dim)
    offsets = pa.array(np.arange(0, vectors.size + 1, vectors.shape[1], dtype=np.int32))
    return {"embedding": pa.ListArray.from_arrays(offsets, pa.array(vectors.reshape(-1)))}


def _label(pipe, texts: list[str], pairs) -> dict[str, pa.Array]:
    items = texts if pairs is None else [{"text": t, "text_pair": p} for t, p in zip(texts, pairs)]
    results = pipe(items)
    return {"label": pa.array([r["label"] for r in results], pa.string()),
            "score": pa.array([r["score"] for r in results], pa.float64())}


# transformers' keys, in its order: per token without aggregation, per group of tokens with it
TOKEN_ENTITY = {"entity": pa.string(), "score": pa.float64(), "index": pa.int64(), "word": pa.string(),
                "start": pa.int64(), "end": pa.int64()}
GROUPED_ENTITY = {"entity_group": pa.string(), "score": pa.float64(), "word": pa.string(), "start": pa.int64(),
                  "end": pa.int64()}


def _entities(pipe, texts: list[str], pairs) -> dict[str, pa.Array]:
    results = pipe(texts)
    # one type for every batch, those without a single entity too
    fields = TOKEN_ENTITY if getattr(pipe, "aggregation_strategy", "none") in (None, "none") else GROUPED_ENTITY
    rows = [[{k: _plain(e.get(k)) for k in fields} for e in row] for row in results]
    return {"entities": pa.array(rows, pa.list_(pa.struct(list(fields.items()))))}


def _answer(pipe, texts: list[str], pairs) -> dict[str, pa.Array]:
    if pairs is None:
        raise UserError("question answering needs a question column and a context column (pair_column)")
    results = pipe(question=texts, context=list(pairs))
    results = [results] if isinstance(results, dict) else results
    return {"answer": pa.array([r["answer"] for r in results], pa.string()),
            "score": pa.array([float(r["score"]) for r in results], pa.float64()),
            "start": pa.array([int(r["start"]) for r in results], pa.int64()),
            "end": pa.array([int(r["end"]) for r in results], pa.int64())}


OUTPUTS: dict[str, Callable[..., dict[str, pa.Array]]] = {
    "feature-extraction": _embedding,
    "text-classification": _label,
    "token-classification": _entities,
    "question-answering": _answer,
}


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def strings(batch: pa.Table, column: str) -> list[str]:
    """The texts of `column`; anything else in it is the user's mistake, named."""
    values = batch.column(column).to_pylist()
    if any(not isinstance(v, str) for v in values):
        bad = next(v for v in values if not isinstance(v, str))
        raise UserError(f"column {column!r} holds {type(bad).__name__} values ({bad!r}); it must hold text")
    return values
