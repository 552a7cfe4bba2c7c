"""One padding and batching policy: pipelines, the server, training and evaluation all batch through here.

Rows are grouped by length, longest first, so little padding is computed; a group holds at most
`max_batch` rows and at most `max_tokens` padded tokens (rows x its longest row), and at inference the split
is the one with the least work, padding and batches counted. No torch here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


# Inference: what one more batch costs, in padded tokens' worth of work (a batch reads every weight once).
# DistilBERT-base fp32, ONNX Runtime on 2 cores, the server benchmark's 64 texts (17-147 tokens) in drains of
# 64 and of 8, best of 3 in turns, against the earlier rule (a row ran apart when padded by over a tenth of
# the longest, or 16 tokens): 24 took 5% and 1% less time (fill-mask), 4% and 2% (embeddings); 16 and 32 were
# within 3% of 24, 48 and 64 gave less. A fixed slack of 4 tokens gave 3-6% at 64 but cost fill-mask 5% at 8.
BATCH_COST = 24
LONGEST_SPAN = 1024


def group(lengths: Sequence[int], max_batch: int | None = None, max_tokens: int | None = None,
          batch_cost: float | None = None) -> list[list[int]]:
    """Indices of `lengths` in groups, longest first, each within the limits (a row alone may exceed the budget).

    Without `batch_cost` (training), groups fill up in order: each holds `max_batch` rows or the token budget,
    whatever their lengths (training batches keep their size). With it (inference), the rows, sorted by
    length, are split where the work is least: padded tokens plus `batch_cost` for each batch. A short row runs
    apart when the padding it would take costs more than a batch of its own (a question's last window of
    100 tokens is not padded to 384); rows of like length share one.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    if batch_cost is not None:
        return [[order[i] for i in range(a, b)] for a, b in _least_work([lengths[i] for i in order], max_batch,
                                                                         max_tokens, batch_cost)]
    groups: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]  # sorted: the group's first row is its longest
        full = (max_batch is not None and len(current) >= max_batch) or (
            max_tokens is not None and longest * (len(current) + 1) > max_tokens
        )
        if current and full:
            groups.append(current)
            current = []
        current.append(i)
    if current:
        groups.append(current)
    return groups


def _least_work(lengths: Sequence[int], max_batch: int | None, max_tokens: int | None,
                batch_cost: float) -> list[tuple[int, int]]:
    """Lengths sorted longest first -> [start, end) spans that minimise sum(batch_cost + rows x longest), within
    the limits. Dynamic programming over the split points: the last span ending at k starts at j, and a span
    stops growing at the first limit it passes (rows and padded tokens only grow with it)."""
    n = len(lengths)
    # Without a row limit, spans stop at LONGEST_SPAN rows: the search stays linear in n, at the cost of at most
    # one batch more for every LONGEST_SPAN rows.
    max_batch = max_batch or LONGEST_SPAN
    best = [0.0] + [float("inf")] * n  # best[k]: least work for the first k rows
    start = [0] * (n + 1)
    for k in range(1, n + 1):
        for j in range(k - 1, -1, -1):
            rows = k - j
            if rows > 1 and (rows > max_batch or (max_tokens is not None and rows * lengths[j] > max_tokens)):
                break
            work = best[j] + batch_cost + rows * lengths[j]
            if work < best[k]:
                best[k], start[k] = work, j
    spans, k = [], n
    while k > 0:
        spans.append((start[k], k))
        k = start[k]
    return spans[::-1]


WINDOW = 100  # training batches are grouped by length among this many batches' worth of rows


def shuffled_groups(lengths: Sequence[int], max_batch: int | None, max_tokens: int | None, seed: int, epoch: int,
                    window: int = WINDOW) -> list[list[int]]:
    """Training batches: shuffled, then grouped by length within windows of `window` x `max_batch` rows, the
    groups shuffled again. Little padding, still random; deterministic in (seed, epoch), so a resumed run
    sees exactly the batches it would have seen. `window` 1: each batch is `max_batch` rows drawn at random
    (split only where they pass `max_tokens`), as a sampler without length grouping gives.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    per_window = window * (max_batch or 64)
    groups: list[list[int]] = []
    for start in range(0, len(order), per_window):
        rows = order[start : start + per_window]
        groups.extend([int(rows[i]) for i in g] for g in group([int(lengths[r]) for r in rows], max_batch, max_tokens))
    return [groups[i] for i in rng.permutation(len(groups))]


def pad(rows: Sequence[Sequence[int]], value: int, length: int | None = None) -> np.ndarray:
    """Right-pad rows to one length (the longest, or `length`): an int64 (B, T) array."""
    T = length if length is not None else max((len(r) for r in rows), default=0)
    out = np.full((len(rows), T), value, dtype=np.int64)
    for r, row in enumerate(rows):
        out[r, : len(row)] = row
    return out


def collate(rows: Sequence[Mapping[str, Sequence[int]]], pad_id: int, token_types: bool) -> dict[str, np.ndarray]:
    """Encoded rows ({input_ids, token_type_ids?}) -> the model's padded inputs, attention mask included.

    Mask convention, as everywhere in this package: 1 = attend, 0 = padding.
    """
    ids = [row["input_ids"] for row in rows]
    arrays = {"input_ids": pad(ids, pad_id), "attention_mask": pad([[1] * len(r) for r in ids], 0)}
    if token_types:
        arrays["token_type_ids"] = pad([row.get("token_type_ids") or [0] * len(row["input_ids"]) for row in rows], 0)
    return arrays
