"""Masked-LM accuracy and perplexity of any checkpoint on held-out text.

15% of the real tokens of each line (seeded, so every model sees the same blanks) are replaced by
[MASK]; accuracy is the share predicted exactly, perplexity exp(mean cross-entropy) over them.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from .. import batching
from ..errors import UserError


def evaluate_mlm(model: str, texts: list[str], max_length: int = 128, probability: float = 0.15, seed: int = 0,
                 batch_size: int = 32, threads: int | None = None) -> dict:
    import torch
    import torch.nn.functional as F

    from ..checkpoint import load
    from ..tokenizer import Tokenizer
    from .masking import IGNORE, mask_tokens

    if threads:
        torch.set_num_threads(threads)
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise UserError("no text to evaluate on")
    net, config, folder = load(model, task="fill-mask")
    tokenizer = Tokenizer.from_pretrained(folder)
    limit = min(max_length, config.max_position_embeddings)
    enc = tokenizer(texts, truncation=True, max_length=limit)["input_ids"]
    generator = torch.Generator().manual_seed(seed)
    correct = total = 0
    nll = 0.0
    started = time.perf_counter()
    tokens = 0
    with torch.inference_mode():
        for rows in batching.group([len(ids) for ids in enc], batch_size):
            arrays = batching.collate([{"input_ids": enc[i]} for i in rows], tokenizer.pad_token_id, token_types=False)
            ids, mask = torch.from_numpy(arrays["input_ids"]), torch.from_numpy(arrays["attention_mask"])
            masked, labels = mask_tokens(ids, mask, tokenizer.all_special_ids, tokenizer.mask_token_id,
                                         config.vocab_size, generator, probability, (1.0, 0.0, 0.0))
            at = labels != IGNORE
            logits = net(masked, mask, logits_at=at)["logits"]
            target = labels[at]
            correct += int((logits.argmax(-1) == target).sum())
            nll += float(F.cross_entropy(logits, target, reduction="sum"))
            total += int(at.sum())
            tokens += int(mask.sum())
    seconds = time.perf_counter() - started
    if total == 0:
        raise UserError(f"no token was masked in {len(texts)} texts (too short: each needs a word besides [CLS] "
                        "and [SEP]); give longer held-out text")
    return {
        "model": str(folder),
        "texts": len(texts),
        "masked_tokens": total,
        "accuracy": correct / total,
        "perplexity": math.exp(nll / total),
        "tokens_per_second": tokens / seconds,
        "layers": config.n_layers,
        "parameters": sum(p.numel() for p in net.parameters()),
    }


def read_texts(paths: list[str | Path]) -> list[str]:
    texts = []
    for path in paths:
        try:
            texts.extend(Path(path).read_text(encoding="utf-8").splitlines())
        except FileNotFoundError:
            raise UserError(f"text file {path} does not exist") from None
    return texts
