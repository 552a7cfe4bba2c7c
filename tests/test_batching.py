"""batching.group: the one grouping policy, its three limits."""

import numpy as np

from distilbert import batching


def _check(lengths, groups):
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))  # each row exactly once
    for g in groups:
        assert [lengths[i] for i in g] == sorted((lengths[i] for i in g), reverse=True)  # longest first


def test_group_limits():
    lengths = np.random.default_rng(0).integers(3, 400, 500).tolist()
    groups = batching.group(lengths, max_batch=8, max_tokens=2000)
    _check(lengths, groups)
    for g in groups:
        assert len(g) <= 8 and (max(lengths[i] for i in g) * len(g) <= 2000 or len(g) == 1)


def test_max_pad_runs_a_short_row_apart():
    # a question's windows: two full ones and a short last one
    assert batching.group([384, 120, 384], 32) == [[0, 2, 1]]
    assert batching.group([384, 120, 384], 32, max_pad=0.25) == [[0, 2], [1]]
    # small differences always share a batch (PAD_SLACK), and the given share of the longest is allowed
    assert batching.group([20, 5, 12], 32, max_pad=0.25) == [[0, 2, 1]]
    assert batching.group([200, 185, 170], 32, max_pad=0.1) == [[0, 1], [2]]
    assert batching.group([400, 300, 299], 32, max_pad=0.25) == [[0, 1], [2]]
    lengths = np.random.default_rng(1).integers(3, 512, 300).tolist()
    groups = batching.group(lengths, 16, max_pad=0.25)
    _check(lengths, groups)
    for g in groups:
        longest = lengths[g[0]]
        assert all(longest - lengths[i] <= max(batching.PAD_SLACK, 0.25 * longest) for i in g)


def test_training_batches_grouped_by_length_or_drawn_at_random():
    lengths = np.random.default_rng(2).integers(3, 120, 2000).tolist()
    spread = {}
    for window in (batching.WINDOW, 1):
        epoch = batching.shuffled_groups(lengths, 8, 8 * 128, seed=42, epoch=0, window=window)
        assert sorted(i for g in epoch for i in g) == list(range(len(lengths)))  # each row once
        assert all(len(g) <= 8 for g in epoch)
        assert epoch == batching.shuffled_groups(lengths, 8, 8 * 128, seed=42, epoch=0, window=window)  # resumable
        assert epoch != batching.shuffled_groups(lengths, 8, 8 * 128, seed=42, epoch=1, window=window)
        spread[window] = np.mean([max(lengths[i] for i in g) - min(lengths[i] for i in g) for g in epoch])
    # grouped: rows of like lengths; at random: the spread of 8 rows drawn from 3-120 (about 90)
    assert spread[batching.WINDOW] < 5 and spread[1] > 60
    # at random, a batch is 8 consecutive rows of the epoch's permutation: full batches, one short one at most
    assert sum(len(g) < 8 for g in batching.shuffled_groups(lengths, 8, 8 * 128, 42, 0, window=1)) <= 1
