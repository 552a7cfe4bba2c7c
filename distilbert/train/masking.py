"""Dynamic masking, redone for every batch (Devlin et al. 2018, section 3.1; Sanh et al. 2019, section 3).

15% of the real tokens are chosen; of those 80% become [MASK], 10% a random token, 10% stay. Special
tokens and padding are never chosen. With smoothing, rare tokens are chosen more often: probability
proportional to count^-0.7, as the original distillation code does (train.py, --mlm_smoothing).
"""

from __future__ import annotations

import torch

IGNORE = -100  # label of positions without a prediction (cross_entropy's ignore_index)


def token_weights(counts, special_ids, smoothing: float = 0.7) -> torch.Tensor:
    """Per-vocabulary choice weights: max(count, 1)^-smoothing, zero for special tokens."""
    weights = torch.as_tensor(counts, dtype=torch.float64).clamp(min=1) ** -smoothing
    weights[list(special_ids)] = 0
    return weights.float()


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    special_ids: list[int],
    mask_id: int,
    vocab_size: int,
    generator: torch.Generator,
    probability: float = 0.15,
    split: tuple[float, float, float] = (0.8, 0.1, 0.1),
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (masked input_ids, labels): labels hold the original token where chosen, IGNORE elsewhere."""
    candidates = attention_mask.bool() & ~torch.isin(input_ids, torch.tensor(special_ids))
    n_candidates = int(candidates.sum())
    labels = torch.full_like(input_ids, IGNORE)
    if n_candidates == 0:
        return input_ids.clone(), labels
    n_chosen = max(1, round(probability * n_candidates))
    if weights is None:
        p = candidates.flatten().float()
    else:
        p = weights[input_ids.flatten()] * candidates.flatten()
    chosen_flat = torch.multinomial(p / p.sum(), n_chosen, replacement=False, generator=generator)
    chosen = torch.zeros(input_ids.numel(), dtype=torch.bool)
    chosen[chosen_flat] = True
    chosen = chosen.view_as(input_ids)
    labels[chosen] = input_ids[chosen]
    # what each chosen token becomes: 0 = [MASK], 1 = a random token, 2 = itself
    action = torch.multinomial(torch.tensor(split, dtype=torch.float), n_chosen, replacement=True, generator=generator)
    masked = input_ids.clone()
    values = masked[chosen]
    values[action == 0] = mask_id
    random_tokens = torch.randint(0, vocab_size, (n_chosen,), generator=generator)
    values[action == 1] = random_tokens[action == 1]
    masked[chosen] = values
    return masked, labels
