"""Masked-LM accuracy and perplexity of any checkpoint on held-out text.

15% of the real tokens of each line (seeded, so every model sees the same blanks) are replaced by
[MASK]; accuracy is the share predicted exactly, perplexity exp(mean cross-entropy) over them.

Given the training data's token counts, the same blanks are also scored by a unigram model of that data
(the token frequencies, no context; add-one smoothed so no token has probability zero): the floor any
model that uses its context must clear.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from .. import batching
from ..errors import UserError


def evaluate_mlm(model: str, texts: list[str], max_length: int = 128, probability: float = 0.15, seed: int = 0,
                 batch_size: int = 32, threads: int | None = None, counts: np.ndarray | None = None) -> dict:
    """counts: training token counts per vocabulary id (a prepare-data folder's counts.npy), for the unigram
    baseline (`unigram_accuracy`, `unigram_perplexity`) on the same masked tokens."""
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
    unigram = None if counts is None else unigram_log_probs(counts, config.vocab_size, tokenizer.all_special_ids)
    unigram_correct, unigram_nll = 0, 0.0
    started = time.perf_counter()
    tokens = 0
    with torch.inference_mode():
        for rows in batching.group([len(ids) for ids in enc], batch_size):
            arrays = batching.collate([{"input_ids": enc[i]} for i in rows], tokenizer.pad_token_id, token_types=False)
            ids, mask = torch.from_numpy(arrays["input_ids"]), torch.from_numpy(arrays["attention_mask"])
            masked, labels = mask_tokens(ids, mask, tokenizer.all_special_ids, tokenizer.mask_token_id,
                                         config.vocab_size, generator, probability, (1.0, 0.0, 0.0))
            at = labels != IGNORE
            logits = net(masked, mask, logits_at=at, logits_only=True)["logits"]
            target = labels[at]
            correct += int((logits.argmax(-1) == target).sum())
            nll += float(F.cross_entropy(logits, target, reduction="sum"))
            total += int(at.sum())
            tokens += int(mask.sum())
            if unigram is not None:
                unigram_correct += int((target == int(unigram.argmax())).sum())
                unigram_nll -= float(unigram[target].sum())
    seconds = time.perf_counter() - started
    if total == 0:
        raise UserError(f"no token was masked in {len(texts)} texts (too short: each needs a word besides [CLS] "
                        "and [SEP]); give longer held-out text")
    result = {
        "model": str(folder),
        "texts": len(texts),
        "masked_tokens": total,
        "accuracy": correct / total,
        "perplexity": math.exp(nll / total),
        "tokens_per_second": tokens / seconds,
        "layers": config.n_layers,
        "parameters": sum(p.numel() for p in net.parameters()),
    }
    if unigram is not None:
        result["unigram_accuracy"] = unigram_correct / total
        result["unigram_perplexity"] = math.exp(unigram_nll / total)
    return result


def unigram_log_probs(counts, vocab_size: int, special_ids: list[int]):
    """log p(token) of the add-one smoothed unigram model of `counts`; special tokens (never a target) excluded."""
    import torch

    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or len(counts) > vocab_size:
        raise UserError(f"token counts for {len(counts)} ids do not fit a vocabulary of {vocab_size}; "
                        "give the data folder prepared with this model's tokenizer")
    smoothed = np.ones(vocab_size)
    smoothed[: len(counts)] += counts
    smoothed[list(special_ids)] = 0
    with np.errstate(divide="ignore"):
        return torch.from_numpy(np.log(smoothed / smoothed.sum()))


def unigram_loss(counts, special_ids: list[int], smoothing: float | None = None) -> float:
    """The masked-LM loss of the best model that ignores context, on training blanks: the entropy of the blanked
    tokens' distribution. Uniform masking blanks tokens as often as they occur; with smoothing a token is chosen
    with weight count^-smoothing, so the blanks follow count^(1 - smoothing), far flatter than the text."""
    counts = np.asarray(counts, dtype=np.float64).copy()
    counts[list(special_ids)] = 0
    blanks = counts * np.maximum(counts, 1) ** -smoothing if smoothing else counts
    p = blanks[blanks > 0] / blanks.sum()
    return float(-(p * np.log(p)).sum())


def read_counts(data: str | Path) -> np.ndarray:
    """The token counts of a folder made by prepare-data."""
    path = Path(data) / "counts.npy"
    if not path.is_file():
        raise UserError(f"{data} has no counts.npy: give a folder made by `distilbert prepare-data`")
    return np.load(path)


def read_texts(paths: list[str | Path]) -> list[str]:
    texts = []
    for path in paths:
        try:
            texts.extend(Path(path).read_text(encoding="utf-8").splitlines())
        except FileNotFoundError:
            raise UserError(f"text file {path} does not exist") from None
    return texts
