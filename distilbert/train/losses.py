"""The triple loss of Sanh et al. (2019), section 3, as pure functions.

Each averages over tokens. Pass (B, T, ...) tensors with a bool `mask` (B, T) of the positions to use
(real tokens, or only the masked ones), or tensors already gathered to (N, ...) without one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .masking import IGNORE


def _select(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x if mask is None else x[mask]


def distillation_loss(student_logits, teacher_logits, mask=None, temperature: float = 2.0,
                      reduction: str = "mean") -> torch.Tensor:
    """KL(teacher || student) on distributions softened by T, times T^2 (Hinton et al. 2015); averaged over
    the N positions, or with reduction "sum" summed over them."""
    s = _select(student_logits, mask).float() / temperature  # (N, vocab)
    t = _select(teacher_logits, mask).float() / temperature
    kl = F.kl_div(F.log_softmax(s, dim=-1), F.log_softmax(t, dim=-1), reduction="sum", log_target=True)
    return kl * temperature**2 if reduction == "sum" else kl / s.size(0) * temperature**2


def mlm_loss(logits, labels) -> torch.Tensor:
    """Cross-entropy where labels are not IGNORE: the masked positions."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1), ignore_index=IGNORE)


def cosine_loss(student_hidden, teacher_hidden, mask=None) -> torch.Tensor:
    """1 - cos(student, teacher) of the last hidden states: aligns their directions."""
    s, t = _select(student_hidden, mask).float(), _select(teacher_hidden, mask).float()
    return (1 - F.cosine_similarity(s, t, dim=-1)).mean()


def mse_loss(student_logits, teacher_logits, mask=None) -> torch.Tensor:
    """Squared error of the raw logits, summed over the vocabulary (optional; off in the released model)."""
    s, t = _select(student_logits, mask).float(), _select(teacher_logits, mask).float()
    return F.mse_loss(s, t, reduction="sum") / s.size(0)
