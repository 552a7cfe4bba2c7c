"""`plot-run`: the loss curves of a run (log.jsonl) as a PNG."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError


def plot_run(run: str | Path, output: str | Path | None = None) -> Path:
    run = Path(run)
    log = run / "log.jsonl"
    if not log.is_file():
        raise UserError(f"no log.jsonl in {run}: not a training run folder")
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    if not records:
        raise UserError(f"{log} is empty: the run has not finished a step yet")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    losses = sorted(k for k in records[0] if k.startswith("loss"))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    for key in losses:
        top.plot(steps, [r[key] for r in records], label=key.replace("loss_", "") if key != "loss" else "total")
    top.set_ylabel("loss")
    top.set_yscale("log")
    top.legend()
    top.set_title(f"{run.name}: {len(records)} steps")
    bottom.plot(steps, [r["lr"] for r in records], color="gray")
    bottom.set_ylabel("learning rate")
    bottom.set_xlabel("optimizer step")
    fig.tight_layout()
    output = Path(output) if output else run / "losses.png"
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return output
