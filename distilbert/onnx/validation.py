"""The shapes and inputs an exported graph is checked on (export.py validates fp32 on them, quantize.py
measures each precision's drift on them): numpy only, so both import it and neither the other."""

from __future__ import annotations

import numpy as np


def shape_grid(max_length: int) -> list[tuple[int, int]]:
    lengths = sorted({min(n, max_length) for n in (1, 8, 128, 512)})
    return [(b, t) for b in (1, 2, 7) for t in lengths]


def validation_batch(batch: int, length: int, config, tokenizer, seed: int = 0) -> dict[str, np.ndarray]:
    """Random real-vocabulary ids in [CLS] ... [SEP] rows of different lengths; one row all padding but [CLS]."""
    rng = np.random.default_rng(seed + 1000 * batch + length)
    ids = rng.integers(1000 if config.vocab_size > 2000 else 5, config.vocab_size, size=(batch, length))
    mask = np.ones((batch, length), dtype=np.int64)
    for r in range(batch):
        n = length if r == 0 else int(rng.integers(1, length + 1))
        if batch > 1 and r == batch - 1:
            n = 1  # all padding but [CLS]
        mask[r, n:] = 0
        ids[r, n:] = tokenizer.pad_token_id
        ids[r, 0] = tokenizer.cls_token_id
        if n > 1:
            ids[r, n - 1] = tokenizer.sep_token_id
        if n > 2:
            ids[r, 1] = tokenizer.mask_token_id  # fill-mask's input: the [MASK]-only head has rows to compute
    arrays = {"input_ids": ids.astype(np.int64), "attention_mask": mask}
    if config.type_vocab_size:
        types = np.zeros_like(ids)
        types[:, length // 2 :] = 1
        arrays["token_type_ids"] = types * mask
    return arrays
