"""The loss functions against hand-computed values."""

import math

import numpy as np
import pytest
import torch

from distilbert.train.losses import cosine_loss, distillation_loss, mlm_loss, mse_loss
from distilbert.train.masking import IGNORE


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_kl_is_zero_when_student_equals_teacher():
    logits = torch.randn(2, 5, 11)
    mask = torch.ones(2, 5, dtype=torch.bool)
    assert distillation_loss(logits, logits.clone(), mask, temperature=2.0).item() == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kl_by_hand_with_t_squared(temperature):
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(3, 7, generator=g), torch.randn(3, 7, generator=g)
    ps, pt = softmax(s.numpy() / temperature), softmax(t.numpy() / temperature)
    expected = (pt * (np.log(pt) - np.log(ps))).sum(-1).mean() * temperature**2
    assert distillation_loss(s, t, temperature=temperature).item() == pytest.approx(expected, rel=1e-5)
    summed = distillation_loss(s, t, temperature=temperature, reduction="sum").item()
    assert summed == pytest.approx(expected * 3, rel=1e-5)  # over the 3 positions


def test_padding_is_ignored():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(2, 4, 9, generator=g), torch.randn(2, 4, 9, generator=g)
    hs, ht = torch.randn(2, 4, 6, generator=g), torch.randn(2, 4, 6, generator=g)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    before = [distillation_loss(s, t, mask), cosine_loss(hs, ht, mask), mse_loss(s, t, mask)]
    s2, t2, hs2 = s.clone(), t.clone(), hs.clone()
    s2[~mask] = 1e4
    t2[~mask] = -1e4
    hs2[~mask] = -hs2[~mask]
    after = [distillation_loss(s2, t2, mask), cosine_loss(hs2, ht, mask), mse_loss(s2, t2, mask)]
    for a, b in zip(before, after):
        assert a.item() == pytest.approx(b.item(), rel=1e-6)
    # and the mean is over the real tokens only (5 of them)
    per_token = [distillation_loss(s[i:i+1, j], t[i:i+1, j]).item() for i in range(2) for j in range(4) if mask[i, j]]
    assert before[0].item() == pytest.approx(sum(per_token) / 5, rel=1e-5)


def test_mlm_loss_by_hand():
    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.5, 0.5, 0.5], [1.0, 3.0, 0.0]]])
    labels = torch.tensor([[0, IGNORE, 1]])
    p0 = math.exp(2) / (math.exp(2) + 1 + math.exp(-1))
    p2 = math.exp(3) / (math.exp(1) + math.exp(3) + 1)
    assert mlm_loss(logits, labels).item() == pytest.approx(-(math.log(p0) + math.log(p2)) / 2, rel=1e-6)


def test_cosine_loss_by_hand():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
    assert cosine_loss(a, b).item() == pytest.approx((0 + 1 + 2) / 3)


def test_mse_by_hand():
    s = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    t = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    assert mse_loss(s, t).item() == pytest.approx((1 + 4 + 1 + 1) / 2)
