"""Masking statistics over many batches: 15% of real tokens, 80/10/10, never special tokens or padding."""

import torch

from distilbert.train.masking import IGNORE, mask_tokens, token_weights

SPECIAL = [0, 100, 101, 102, 103]  # [PAD], [UNK], [CLS], [SEP], [MASK]
VOCAB = 30522


def random_batch(g, B=16, T=64):
    ids = torch.randint(1000, VOCAB, (B, T), generator=g)
    lengths = torch.randint(5, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    ids[:, 0] = 101
    ids[torch.arange(B), lengths - 1] = 102
    ids[mask == 0] = 0
    return ids, mask


def test_rates_over_many_batches():
    g = torch.Generator().manual_seed(0)
    candidates = chosen = to_mask = to_random = kept = 0
    for _ in range(200):
        ids, mask = random_batch(g)
        masked, labels = mask_tokens(ids, mask, SPECIAL, 103, VOCAB, g)
        real = mask.bool() & ~torch.isin(ids, torch.tensor(SPECIAL))
        picked = labels != IGNORE
        assert not (picked & ~real).any()  # never special tokens or padding
        assert torch.equal(labels[picked], ids[picked])
        assert torch.equal(masked[~picked], ids[~picked])  # nothing else changes
        candidates += int(real.sum())
        chosen += int(picked.sum())
        to_mask += int((masked[picked] == 103).sum())
        kept += int((masked[picked] == ids[picked]).sum())
        to_random += int(((masked[picked] != 103) & (masked[picked] != ids[picked])).sum())
    assert abs(chosen / candidates - 0.15) < 0.002
    assert abs(to_mask / chosen - 0.8) < 0.01
    assert abs(to_random / chosen - 0.1) < 0.01
    assert abs(kept / chosen - 0.1) < 0.01


def test_smoothing_masks_rare_tokens_more_often():
    counts = torch.ones(VOCAB, dtype=torch.long) * 100
    counts[2000] = 1  # rare
    counts[3000] = 1_000_000  # frequent
    weights = token_weights(counts, SPECIAL, 0.7)
    assert weights[SPECIAL].sum() == 0
    g = torch.Generator().manual_seed(1)
    ids = torch.tensor([[101] + [2000, 3000] * 50 + [102]])
    mask = torch.ones_like(ids)
    rare = frequent = 0
    for _ in range(300):
        _, labels = mask_tokens(ids, mask, SPECIAL, 103, VOCAB, g, weights=weights)
        rare += int((labels == 2000).sum())
        frequent += int((labels == 3000).sum())
    assert rare > 20 * frequent


def test_deterministic_for_a_seed():
    ids, mask = random_batch(torch.Generator().manual_seed(2))
    a = mask_tokens(ids, mask, SPECIAL, 103, VOCAB, torch.Generator().manual_seed(7))
    b = mask_tokens(ids, mask, SPECIAL, 103, VOCAB, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
