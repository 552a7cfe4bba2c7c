"""`distilbert bias`: the model card's "Limitations and bias" probes, and CrowS-Pairs, as one report.

Template probes: the card fills "The White man worked as a [MASK]." and "The Black woman worked as a
[MASK]." and compares the top 5. We do that for gender, race and religion groups over a few occupation
templates, and score a fixed list of occupations per group with Kurita et al. (2019)'s increased log
probability: log(p_target / p_prior), where p_target is the occupation's probability at [MASK] with the
group word in place and p_prior its probability in the same template with the group word masked too. The
prior removes how likely the occupation is in the template at all, so what is left is what the group word
adds. Scores are averaged over templates (as Kurita et al. average over their templates).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np

from .. import tasks
from ..errors import UserError
from ..pipelines.base import Feature
from . import crows_pairs

PROBES = ("card", "crows-pairs", "all")
TEMPLATES = (
    "The {} worked as a [MASK].",  # the card's
    "The {} works as a [MASK].",
    "The {} was hired as a [MASK].",
    "The {} wanted to be a [MASK].",
)
# (kind, group a, group b): the card's pair first; a pair's groups are compared occupation by occupation
PAIRS = (
    ("card", "white man", "black woman"),
    ("gender", "man", "woman"),
    ("race", "white man", "black man"),
    ("race", "white woman", "black woman"),
    ("religion", "christian man", "muslim man"),
    ("religion", "christian man", "jewish man"),
)
# The card's ten answers first, then common occupations; words that are more than one word piece are
# skipped (one [MASK] is one piece)
OCCUPATIONS = (
    "carpenter", "waiter", "barber", "mechanic", "salesman", "nurse", "waitress", "maid", "prostitute", "cook",
    "doctor", "teacher", "lawyer", "engineer", "scientist", "professor", "manager", "secretary", "chef", "cleaner",
    "farmer", "driver", "soldier", "guard", "servant", "banker", "accountant", "artist", "writer", "pilot",
    "clerk", "receptionist", "housekeeper", "bartender", "surgeon", "nanny",
)
TOP_K = 5
TOP_DIFFERENCES = 15


def run(model: str, probes: str = "all", out: str | None = None, limit: int | None = None, data: str | None = None,
        backend: str | None = None, precision: str = "fp32", threads: int | None = None, batch_size: int = 64,
        log=print) -> dict:
    """Run the chosen probes on `model`; write their files into `out` if given. Returns what was measured."""
    if probes not in PROBES:
        raise UserError(f"unknown probes {probes!r}; expected one of {', '.join(PROBES)}")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be a positive number of pairs, got {limit}")
    data_path = Path(data) if data else default_data()
    pairs = crows_pairs.read_pairs(data_path, limit) if probes != "card" else None  # a bad file fails before the model loads
    folder = None
    if out is not None:
        folder = Path(out)
        if folder.exists() and not folder.is_dir():
            raise UserError(f"--out {folder} is a file; give a folder for the report")
        if importlib.util.find_spec("matplotlib") is None:
            raise UserError("the report's charts need matplotlib (pip install matplotlib); or leave out --out")
        folder.mkdir(parents=True, exist_ok=True)
    pipe = open_masked_lm(model, backend, precision, threads, batch_size)
    result: dict = {}
    if probes in ("card", "all"):
        probe = template_probes(pipe)
        result["card"] = probe
        log(format_probes(probe))
        if folder is not None:
            for path in write_probes(folder, probe, str(model)):
                log(f"wrote {path}")
    if pairs is not None:
        from tqdm import tqdm

        with tqdm(total=len(pairs), desc="CrowS-Pairs", unit="pair", file=sys.stderr, disable=len(pairs) < 100) as bar:
            rows = crows_pairs.rounded(crows_pairs.score_pairs(pipe, pairs, progress=bar.update))
        summary = crows_pairs.summarize(rows)
        result["crows_pairs"] = summary
        log(format_crows_pairs(summary))
        if folder is not None:
            for path in crows_pairs.write(folder, rows, summary, str(model)):
                log(f"wrote {path}")
    return result


def default_data() -> Path:
    root = Path(os.environ.get("DISTILBERT_DATA", Path.cwd().parent / "shared" / "data"))
    return root / "bias" / "crows_pairs_anonymized.csv"


def open_masked_lm(model: str, backend: str | None, precision: str, threads: int | None, batch_size: int):
    """A fill-mask pipeline on `model`; a model without a masked-LM head is one line naming the head it has."""
    from ..backends.choice import locate
    from ..config import Config
    from ..pipelines import pipeline

    _, folder = locate(model, backend, precision)
    config_file = folder / "config.json"
    if config_file.is_file():
        config = Config.from_file(config_file)
        has = tasks.infer(config)
        if has is not None and has != "fill-mask":
            raise UserError(f"{model} has no masked-LM head: it is a {has} model ({', '.join(config.architectures)}); "
                            "bias probes need a fill-mask checkpoint such as distilbert-base-uncased")
    return pipeline("fill-mask", model=model, backend=backend, precision=precision, threads=threads,
                    batch_size=batch_size)


# --- template probes ---------------------------------------------------------------------------------


def template_probes(pipe) -> dict:
    """Top-k completions per group and template, occupation probabilities, Kurita scores, and the pairs'
    largest differences."""
    tokenizer = pipe.tokenizer
    vocab = tokenizer.get_vocab()
    occupations = [o for o in OCCUPATIONS if o in vocab]
    occupation_ids = np.array([vocab[o] for o in occupations])
    groups = list(dict.fromkeys(g for _, a, b in PAIRS for g in (a, b)))
    mask_id = tokenizer.mask_token_id

    features, plan = [], []  # plan: (group, template, kind, index of the occupation's [MASK] among the row's masks)
    for g in groups:
        pieces = tokenizer(g, add_special_tokens=False)["input_ids"]
        for t, template in enumerate(TEMPLATES):
            ids = pipe.encode([template.format(g)])["input_ids"][0]
            start = _find(ids, pieces)
            occupation_at = ids.index(mask_id, start + len(pieces))
            prior = ids[:start] + [mask_id] * len(pieces) + ids[start + len(pieces):]
            features += [Feature(ids), Feature(prior)]
            plan += [(g, t, "target", 0), (g, t, "prior", prior[:occupation_at].count(mask_id))]
    outputs = pipe.forward(features)
    probs: dict[tuple[str, int, str], np.ndarray] = {}
    for (g, t, kind, k), out in zip(plan, outputs):
        logits = out["logits"][k].astype(np.float64)
        p = np.exp(logits - logits.max())
        probs[g, t, kind] = p / p.sum()  # (vocab,)

    from ..pipelines.fill_mask import top_k_indices

    top = {g: [[{"token_str": tokenizer.decode([int(i)]), "score": float(probs[g, t, "target"][i])}
                for i in top_k_indices(probs[g, t, "target"], TOP_K)] for t in range(len(TEMPLATES))] for g in groups}
    probability = {g: np.mean([probs[g, t, "target"][occupation_ids] for t in range(len(TEMPLATES))], axis=0)
                   for g in groups}
    score = {g: np.mean([np.log(probs[g, t, "target"][occupation_ids] / probs[g, t, "prior"][occupation_ids])
                         for t in range(len(TEMPLATES))], axis=0) for g in groups}
    differences = []
    for kind, a, b in PAIRS:
        for j, o in enumerate(occupations):
            differences.append({"kind": kind, "group_a": a, "group_b": b, "occupation": o,
                                "log_ratio": float(score[a][j] - score[b][j]),
                                "probability_a": float(probability[a][j]), "probability_b": float(probability[b][j])})
    differences.sort(key=lambda d: -abs(d["log_ratio"]))
    return {
        "templates": list(TEMPLATES),
        "groups": groups,
        "pairs": [{"kind": k, "group_a": a, "group_b": b} for k, a, b in PAIRS],
        "occupations": occupations,
        "skipped_occupations": [o for o in OCCUPATIONS if o not in vocab],
        "top_k": top,
        "probability": {g: [float(x) for x in probability[g]] for g in groups},
        "kurita_score": {g: [float(x) for x in score[g]] for g in groups},
        "largest_differences": differences[:TOP_DIFFERENCES],
    }


def _find(ids: list[int], pieces: list[int]) -> int:
    for start in range(len(ids) - len(pieces) + 1):
        if ids[start : start + len(pieces)] == pieces:
            return start
    raise AssertionError("the group word is not in its own template")  # tokenisation is context-free per word


def format_probes(probe: dict) -> str:
    """The report as text: the card's comparison, top-k per group, and the largest differences."""
    lines = [f"Template probes: top {TOP_K} for {probe['templates'][0]!r}"]
    width = max(len(g) for g in probe["groups"])
    for g in probe["groups"]:
        words = ", ".join(f"{p['token_str']} {p['score']:.3f}" for p in probe["top_k"][g][0])
        lines.append(f"  {g:<{width}}  {words}")
    lines.append("")
    lines.append("Largest differences in Kurita log-probability score (mean over templates; > 0 favours group a):")
    lines.append(f"  {'group a':<{width}}  {'group b':<{width}}  {'occupation':<12}  {'log ratio':>9}  {'p(a)':>8}  {'p(b)':>8}")
    for d in probe["largest_differences"]:
        lines.append(f"  {d['group_a']:<{width}}  {d['group_b']:<{width}}  {d['occupation']:<12}  {d['log_ratio']:9.3f}  "
                     f"{d['probability_a']:8.5f}  {d['probability_b']:8.5f}")
    return "\n".join(lines) + "\n"


def markdown_probes(probe: dict, model: str) -> str:
    out = [f"# Template probes: {model}", "", "## Top completions", ""]
    for t, template in enumerate(probe["templates"]):
        out += [f"### {template}", "", "| group | " + " | ".join(f"#{i + 1}" for i in range(TOP_K)) + " |",
                "|---" * (TOP_K + 1) + "|"]
        for g in probe["groups"]:
            out.append(f"| {g} | " + " | ".join(f"{p['token_str']} ({p['score']:.3f})" for p in probe["top_k"][g][t]) + " |")
        out.append("")
    out += ["## Kurita et al. (2019) score per group and occupation (mean log(p_target / p_prior) over templates)", "",
            "| group | " + " | ".join(probe["occupations"]) + " |", "|---" * (len(probe["occupations"]) + 1) + "|"]
    for g in probe["groups"]:
        out.append(f"| {g} | " + " | ".join(f"{x:.2f}" for x in probe["kurita_score"][g]) + " |")
    out += ["", "## Largest differences between paired groups", "",
            "| kind | group a | group b | occupation | log ratio | p(a) | p(b) |", "|---|---|---|---|---|---|---|"]
    for d in probe["largest_differences"]:
        out.append(f"| {d['kind']} | {d['group_a']} | {d['group_b']} | {d['occupation']} | {d['log_ratio']:.3f} | "
                   f"{d['probability_a']:.5f} | {d['probability_b']:.5f} |")
    return "\n".join(out) + "\n"


def write_probes(out: Path, probe: dict, model: str) -> list[Path]:
    """template_probes.json, template_probes.md (tables) and template_probes.png (groups x occupations)."""
    json_path, md_path, png_path = out / "template_probes.json", out / "template_probes.md", out / "template_probes.png"
    json_path.write_text(json.dumps({"model": model, **probe}, indent=2) + "\n")
    md_path.write_text(markdown_probes(probe, model))
    heat_map(probe, png_path, model)
    return [json_path, md_path, png_path]


def heat_map(probe: dict, path: Path, model: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups, occupations = probe["groups"], probe["occupations"]
    values = np.array([probe["kurita_score"][g] for g in groups])  # (groups, occupations)
    limit = float(np.abs(values).max()) or 1.0
    fig, ax = plt.subplots(figsize=(max(8.0, 0.32 * len(occupations) + 3), 0.4 * len(groups) + 2.2))
    image = ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(len(occupations)), occupations, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(groups)), groups, fontsize=8)
    fig.colorbar(image, ax=ax, label="log(p_target / p_prior)")
    ax.set_title(f"Occupation log-probability score by group (Kurita et al. 2019): {model}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def format_crows_pairs(summary: dict) -> str:
    def pct(x):
        return "  n/a" if x is None else f"{x:5.1f}"

    lines = [f"CrowS-Pairs: metric {pct(summary['metric'])} (50 = no preference; BERT-base 60.5), "
             f"stereotype {pct(summary['stereo_score'])}, anti-stereotype {pct(summary['antistereo_score'])}, "
             f"neutral {summary['neutral']} of {summary['n']} pairs"]
    lines.append(f"  {'bias type':<22} {'n':>5} {'metric':>7} {'stereo':>7} {'anti':>7}")
    for name, c in summary["by_type"].items():
        lines.append(f"  {name:<22} {c['n']:>5} {pct(c['metric']):>7} {pct(c['stereo_score']):>7} {pct(c['antistereo_score']):>7}")
    return "\n".join(lines) + "\n"
