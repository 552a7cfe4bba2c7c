"""`plot-run`: a run's losses, learning rate and (for fine-tuning) validation metrics from log.jsonl, as a PNG.

Beside the masked-LM loss, the loss of a unigram model: the best model that ignores context, on the run's own
blanks (its data and masking). A masked-LM loss that stays above it has not even learned the token frequencies.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import UserError


def plot_run(run: str | Path, output: str | Path | None = None) -> Path:
    run = Path(run)
    log = run / "log.jsonl"
    if not log.is_file():
        raise UserError(f"no log.jsonl in {run}: not a training run folder")
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    steps_log = [r for r in records if "loss" in r]
    evals = [r for r in records if any(k.startswith("eval_") for k in r)]
    if not steps_log:
        raise UserError(f"{log} is empty: the run has not finished a step yet")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if evals else 2
    fig, axes = plt.subplots(panels, 1, figsize=(8, 3.5 * panels), sharex=True)
    top, middle = axes[0], axes[1]
    steps = [r["step"] for r in steps_log]
    losses = sorted(k for k in steps_log[0] if k.startswith("loss"))
    for key in losses:
        top.plot(steps, [r[key] for r in steps_log], label=key.replace("loss_", "") if key != "loss" else "total")
    floor = _unigram_floor(run)
    if floor is not None and "loss_mlm" in steps_log[0]:
        top.axhline(floor, color="black", linestyle="--", linewidth=1, label=f"mlm of a unigram model: {floor:.2f}")
    top.set_ylabel("loss")
    top.set_yscale("log")
    top.legend()
    top.set_title(f"{run.name}: {len(steps_log)} steps")
    middle.plot(steps, [r["lr"] for r in steps_log], color="gray")
    middle.set_ylabel("learning rate")
    if evals:
        # the headline metrics only; per-type NER scores (PER_f1, ...) would crowd the panel
        names = [k for k in evals[0] if k.startswith("eval_") and k.count("_") <= 2 and not k.endswith(("_total", "_number"))]
        bottom = axes[2]
        for key in names:
            bottom.plot([r["step"] for r in evals], [r[key] for r in evals], marker="o", label=key[5:])
        bottom.set_ylabel("validation")
        bottom.legend()
    axes[-1].set_xlabel("optimizer step")
    fig.tight_layout()
    output = Path(output) if output else run / "losses.png"
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return output


def _unigram_floor(run: Path) -> float | None:
    """The unigram model's loss on the run's blanks, from recipe.json's data folder; None when it is gone."""
    from ..tokenizer import Tokenizer
    from .evaluate import unigram_loss

    try:
        recipe = json.loads((run / "recipe.json").read_text())
        data = Path(recipe["data"])
        counts = np.load(data / "counts.npy")
        special = Tokenizer.from_pretrained(data / "tokenizer").all_special_ids
    except (OSError, ValueError, KeyError, UserError):
        return None
    return unigram_loss(counts, special, recipe.get("mlm_smoothing"))
