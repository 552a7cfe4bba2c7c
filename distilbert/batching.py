"""One padding and batching policy: pipelines, the server, training and evaluation all batch through here.

Rows are grouped by length, longest first, so little padding is computed; a group holds at most
`max_batch` rows and at most `max_tokens` padded tokens (rows x its longest row), and with `max_pad` no row
padded by more than that share of the group's longest row. No torch here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


PAD_SLACK = 16  # padding up to this many tokens is always allowed: it costs less than another batch


def group(lengths: Sequence[int], max_batch: int | None = None, max_tokens: int | None = None,
          max_pad: float | None = None) -> list[list[int]]:
    """Indices of `lengths` in groups, longest first, each within the limits (a row alone may exceed the budget).

    `max_pad`: a row that would be padded by more than this share of the group's longest row (and by more
    than PAD_SLACK tokens) starts a new group. Inference sets it: a question's short last window padded to
    384 tokens costs more than running it alone; training leaves it off (its batches keep their size).
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]  # sorted: the group's first row is its longest
        full = (max_batch is not None and len(current) >= max_batch) or (
            max_tokens is not None and longest * (len(current) + 1) > max_tokens
        ) or (max_pad is not None and longest - lengths[i] > max(PAD_SLACK, max_pad * longest))
        if current and full:
            groups.append(current)
            current = []
        current.append(i)
    if current:
        groups.append(current)
    return groups


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
