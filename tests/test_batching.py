"""batching.group: the one grouping policy, its limits and its split at inference."""

import itertools

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


def test_inference_splits_where_padding_and_batches_cost_least():
    # a question's windows: two full ones and a short last one
    assert batching.group([384, 120, 384], 32) == [[0, 2, 1]]  # training: batches keep their size
    assert batching.group([384, 120, 384], 32, batch_cost=24) == [[0, 2], [1]]
    # a few tokens of padding cost less than a batch; many cost more
    assert batching.group([20, 5, 12], 32, batch_cost=24) == [[0, 2, 1]]
    assert batching.group([200, 185, 170], 32, batch_cost=24) == [[0, 1], [2]]  # 2 x 15 tokens > 24
    assert batching.group([200, 190, 180], 32, batch_cost=24) == [[0, 1, 2]]  # 20 (a new batch would save 20)
    assert batching.group([40, 30, 30, 30], 32, batch_cost=24) == [[0], [1, 2, 3]]  # not the greedy [[0, 1, 2], [3]]
    lengths = np.random.default_rng(1).integers(3, 512, 300).tolist()
    for max_batch, max_tokens in ((16, None), (None, 2048), (8, 1024)):
        groups = batching.group(lengths, max_batch, max_tokens, batch_cost=24)
        _check(lengths, groups)
        for g in groups:
            assert max_batch is None or len(g) <= max_batch
            assert max_tokens is None or len(g) == 1 or len(g) * lengths[g[0]] <= max_tokens
        work = sum(24 + len(g) * lengths[g[0]] for g in groups)
        greedy = batching.group(lengths, max_batch, max_tokens)
        assert work <= sum(24 + len(g) * lengths[g[0]] for g in greedy)
    # without a row limit a batch still stops at LONGEST_SPAN rows (the search stays linear)
    assert [len(g) for g in batching.group([10] * 2500, batch_cost=24)] == [1024, 1024, 452]
    # the least work, checked against every split of a few sorted rows
    rows = sorted(np.random.default_rng(3).integers(5, 90, 9).tolist(), reverse=True)
    best = min(sum(24 + (b - a) * rows[a] for a, b in zip((0, *cuts), (*cuts, len(rows))))
               for n in range(len(rows)) for cuts in itertools.combinations(range(1, len(rows)), n))
    assert sum(24 + len(g) * rows[g[0]] for g in batching.group(rows, batch_cost=24)) == best


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
