"""`distilbert glue`: fine-tune and score a model on every GLUE task found, beside the paper's figures.

Each task and seed is one `finetune` run in OUT/<task>/seed-<n> (a finished run is reused, so an
interrupted `glue` picks up where it stopped). A task's score is GLUE's (data/glue.py: the metric, or the
mean of two), the median over seeds, as the paper reports (Sanh et al. 2019, Table 1: median of 5 runs).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from ..data.glue import GLUE, PAPER, files, score
from ..errors import UserError

FIRST_SEED = 42


def run_glue(model: str, data_dir: str | Path, out: str | Path, tasks: list[str] | None = None, seeds: int = 1,
             recipe: str | None = None, overwrite: bool = False, settings: dict | None = None,
             progress: bool = True) -> dict:
    from .finetune import RESULTS, FinetuneRecipe, finetune

    data_dir, out = Path(data_dir), Path(out)
    if not data_dir.is_dir():
        raise UserError(f"GLUE folder {data_dir} does not exist")
    wanted = list(tasks or GLUE)
    found, missing = [], {}
    for name in wanted:
        absent = [str(p) for p in files(name, data_dir) if not p.is_file()]
        if absent:
            missing[name] = absent
        else:
            found.append(name)
    if missing:
        print("missing data, skipped: " + "; ".join(f"{n} ({', '.join(a)})" for n, a in missing.items()))
    if not found:
        raise UserError(f"no GLUE task has both its files under {data_dir}; expected e.g. {files('sst2', data_dir)[0]}")
    base = FinetuneRecipe.from_file(recipe) if recipe else FinetuneRecipe()
    runs: dict[str, list[dict]] = {}
    for name in found:
        for n in range(seeds):
            seed = FIRST_SEED + n
            folder = out / name / f"seed-{seed}"
            if (folder / RESULTS).is_file() and not overwrite:
                best = json.loads((folder / RESULTS).read_text())["best"]
            else:
                print(f"fine-tuning {name}, seed {seed} -> {folder}")
                run = base.replace(**(settings or {})).replace(model=str(model), glue=name, data_dir=str(data_dir),
                                                               train="", validation="", out=str(folder), seed=seed)
                best = finetune(run, overwrite=overwrite, progress=progress)["best"]
            runs.setdefault(name, []).append({"seed": seed, "score": score(name, best), **best})
    results = {
        "model": str(model),
        "seeds": seeds,
        "scores": {name: statistics.median(r["score"] for r in rs) for name, rs in runs.items()},
        "runs": runs,
        "missing": sorted(missing),
        "paper": {who: {k: v for k, v in figures.items() if k in runs} for who, figures in PAPER.items()},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "glue_results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    chart(results, out / "glue.png")
    print(f"wrote {out / 'glue_results.json'} and {out / 'glue.png'}")
    return results


def table(results: dict) -> str:
    """The model card's table: a column per task, our median beside the paper's DistilBERT and BERT-base."""
    names = list(results["scores"])
    width = max(12, *(len(n) + 2 for n in names))
    head = f"{'':<14}" + "".join(f"{n.upper():>{width}}" for n in names)
    rows = [head, f"{'ours':<14}" + "".join(f"{results['scores'][n]:>{width}.1f}" for n in names)]
    for who, figures in PAPER.items():
        rows.append(f"{who:<14}" + "".join(f"{figures[n]:>{width}.1f}" for n in names))
    if results["seeds"] > 1:
        rows.append(f"(ours: median of {results['seeds']} seeds)")
    return "\n".join(rows)


def chart(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(results["scores"])
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 4))
    series = [("ours", [results["scores"][n] for n in names])] + [(who, [f[n] for n in names]) for who, f in PAPER.items()]
    for k, (label, values) in enumerate(series):
        bars = ax.bar(x + (k - 1) * 0.27, values, 0.27, label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(x, [n.upper() for n in names])
    ax.set_ylabel("GLUE dev score")
    ax.set_title(f"{Path(results['model']).name} on GLUE")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
