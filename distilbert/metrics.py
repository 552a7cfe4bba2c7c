"""The task metrics, with the key names Hugging Face `evaluate` uses. numpy only: no torch, no scipy.

- GLUE / text classification: accuracy, f1 (binary, positive class 1), matthews_correlation, pearson,
  spearmanr (fractions, as `evaluate`'s glue metric);
- NER: seqeval's entity-level precision / recall / F1 in its default (conlleval) mode for IOB2, overall
  (micro) and per type, and token accuracy (`overall_accuracy`);
- SQuAD: the official v1.1 script's exact_match / f1 and the v2.0 script's exact / f1 with HasAns_* and
  NoAns_* (percentages, as the official scripts print them).
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Sequence

import numpy as np

# --- classification -------------------------------------------------------------------------------------


def accuracy(predictions: Sequence, references: Sequence) -> float:
    p, r = np.asarray(predictions), np.asarray(references)
    return float((p == r).mean()) if len(r) else 0.0


def f1_binary(predictions: Sequence[int], references: Sequence[int], positive: int = 1) -> float:
    p, r = np.asarray(predictions) == positive, np.asarray(references) == positive
    tp = int((p & r).sum())
    denominator = int(p.sum()) + int(r.sum())
    return 2 * tp / denominator if denominator else 0.0


def f1_macro(predictions: Sequence[int], references: Sequence[int]) -> float:
    labels = sorted(set(np.asarray(references).tolist()) | set(np.asarray(predictions).tolist()))
    return float(np.mean([f1_binary(predictions, references, c) for c in labels])) if labels else 0.0


def matthews_correlation(predictions: Sequence[int], references: Sequence[int]) -> float:
    """Gorodkin's multi-class form (scikit-learn's matthews_corrcoef): 0 where it is undefined."""
    p, r = np.asarray(predictions), np.asarray(references)
    labels = np.unique(np.concatenate([p, r]))
    index = {c: i for i, c in enumerate(labels.tolist())}
    C = np.zeros((len(labels), len(labels)), dtype=np.float64)  # (true, predicted)
    np.add.at(C, ([index[x] for x in r.tolist()], [index[x] for x in p.tolist()]), 1)
    t, q = C.sum(1), C.sum(0)
    c, s = np.trace(C), C.sum()
    cov_pred, cov_true = s * s - q @ q, s * s - t @ t
    if cov_pred * cov_true == 0:
        return 0.0
    return float((c * s - t @ q) / np.sqrt(cov_pred * cov_true))


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    x, y = x - x.mean(), y - y.mean()
    denominator = np.sqrt((x @ x) * (y @ y))
    return float(x @ y / denominator) if denominator else float("nan")


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties given their mean rank (scipy's rankdata 'average')."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    start = 0
    for end in range(1, len(x) + 1):
        if end == len(x) or sorted_x[end] != sorted_x[start]:
            ranks[order[start:end]] = (start + end + 1) / 2
            start = end
    return ranks


def spearmanr(x: Sequence[float], y: Sequence[float]) -> float:
    return pearson(_ranks(np.asarray(x, dtype=np.float64)), _ranks(np.asarray(y, dtype=np.float64)))


def classification(predictions: Sequence, references: Sequence, problem_type: str = "single_label_classification",
                   num_labels: int = 2) -> dict[str, float]:
    """The metrics of a text-classification run: ids for classes, floats for regression, 0/1 rows for multi-label."""
    if problem_type == "regression":
        p, r = np.asarray(predictions, dtype=np.float64).ravel(), np.asarray(references, dtype=np.float64).ravel()
        return {"pearson": pearson(p, r), "spearmanr": spearmanr(p, r), "mse": float(((p - r) ** 2).mean())}
    if problem_type == "multi_label_classification":
        p, r = np.asarray(predictions, dtype=bool), np.asarray(references, dtype=bool)
        tp = int((p & r).sum())
        denominator = int(p.sum()) + int(r.sum())
        return {"accuracy": float((p == r).all(1).mean()), "f1": 2 * tp / denominator if denominator else 0.0}
    out = {"accuracy": accuracy(predictions, references)}
    out["f1"] = f1_binary(predictions, references) if num_labels == 2 else f1_macro(predictions, references)
    out["matthews_correlation"] = matthews_correlation(predictions, references)
    return out


def glue(task: str, predictions: Sequence, references: Sequence) -> dict[str, float]:
    """`evaluate.load("glue", task)`: the same keys and values."""
    if task == "stsb":
        return {"pearson": pearson(predictions, references), "spearmanr": spearmanr(predictions, references)}
    if task == "cola":
        return {"matthews_correlation": matthews_correlation(predictions, references)}
    if task in ("mrpc", "qqp"):
        return {"accuracy": accuracy(predictions, references), "f1": f1_binary(predictions, references)}
    return {"accuracy": accuracy(predictions, references)}


# --- NER ------------------------------------------------------------------------------------------------


def entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, first, last) of each entity in one sentence's tags, as seqeval's default get_entities reads them:
    an I- after O or after another type starts an entity too (conlleval's rule)."""
    out = []
    prev_tag, prev_type, begin = "O", "", 0
    for i, chunk in enumerate([*tags, "O"]):
        tag, type_ = chunk[0], chunk[1:].split("-", maxsplit=1)[-1] or "_"
        if _chunk_ends(prev_tag, tag, prev_type, type_):
            out.append((prev_type, begin, i - 1))
        if _chunk_starts(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return out


def _chunk_ends(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    return (prev_tag in ("E", "S") or (prev_tag in ("B", "I") and tag in ("B", "S", "O"))
            or (prev_tag not in ("O", ".") and prev_type != type_))


def _chunk_starts(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    return (tag in ("B", "S") or (prev_tag in ("E", "S", "O") and tag in ("E", "I"))
            or (tag not in ("O", ".") and prev_type != type_))


def ner(predictions: Sequence[Sequence[str]], references: Sequence[Sequence[str]]) -> dict:
    """`evaluate.load("seqeval")`'s result: per type {precision, recall, f1, number}, overall_* and overall_accuracy."""
    if len(predictions) != len(references) or any(len(p) != len(r) for p, r in zip(predictions, references)):
        raise ValueError("predictions and references must have the same sentences and lengths")
    true, pred = set(), set()
    for s, (p, r) in enumerate(zip(predictions, references)):
        true.update((s, *e) for e in entities(r))
        pred.update((s, *e) for e in entities(p))
    out: dict = {}
    for type_ in sorted({e[1] for e in true | pred}):
        t = {e for e in true if e[1] == type_}
        q = {e for e in pred if e[1] == type_}
        out[type_] = {**_prf(len(t & q), len(q), len(t)), "number": len(t)}
    overall = _prf(len(true & pred), len(pred), len(true))
    out.update({f"overall_{k}": v for k, v in overall.items()})
    tokens = sum(len(r) for r in references)
    correct = sum(a == b for p, r in zip(predictions, references) for a, b in zip(p, r))
    out["overall_accuracy"] = correct / tokens if tokens else 0.0
    return out


def _prf(correct: int, predicted: int, true: int) -> dict[str, float]:
    precision = correct / predicted if predicted else 0.0
    recall = correct / true if true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


# --- SQuAD ----------------------------------------------------------------------------------------------


def normalize_answer(s: str) -> str:
    """The official script's: lower case, punctuation and the articles a/an/the removed, whitespace collapsed."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def _f1(prediction: str, truth: str) -> float:
    """v1.1's F1 over normalised tokens (v2.0's too, except that both empty scores 1 there)."""
    p, t = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = collections.Counter(p) & collections.Counter(t)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(t)
    return 2 * precision * recall / (precision + recall)


def squad(predictions: dict[str, str], references: dict[str, list[str]]) -> dict[str, float]:
    """SQuAD v1.1 (official evaluate-v1.1.py): exact_match and f1, the best over each question's gold answers,
    averaged over all questions (one without a prediction scores 0), x100."""
    em = f1 = 0.0
    for qid, golds in references.items():
        if qid not in predictions:
            continue
        pred = predictions[qid]
        em += max(float(normalize_answer(pred) == normalize_answer(g)) for g in golds)
        f1 += max(_f1(pred, g) for g in golds)
    n = len(references)
    return {"exact_match": 100 * em / n if n else 0.0, "f1": 100 * f1 / n if n else 0.0}


def squad_v2(predictions: dict[str, str], references: dict[str, list[str]]) -> dict[str, float]:
    """SQuAD v2.0 (official evaluate-v2.0.py, threshold 1.0): exact / f1 over all, HasAns_* and NoAns_*.
    An unanswerable question has no gold answers; its right prediction is ""."""
    exact, f1 = {}, {}
    for qid, golds in references.items():
        golds = [g for g in golds if normalize_answer(g)] or [""]
        pred = predictions.get(qid, "")
        exact[qid] = max(float(normalize_answer(pred) == normalize_answer(g)) for g in golds)
        f1[qid] = max(_f1_v2(pred, g) for g in golds)
    has = [q for q, g in references.items() if g]  # the official script: any gold answer at all
    no = [q for q in references if q not in set(has)]

    def block(ids, prefix=""):
        n = len(ids)
        return {f"{prefix}exact": 100 * sum(exact[q] for q in ids) / n if n else 0.0,
                f"{prefix}f1": 100 * sum(f1[q] for q in ids) / n if n else 0.0, f"{prefix}total": n}

    out = block(list(references))
    if has:
        out.update(block(has, "HasAns_"))
    if no:
        out.update(block(no, "NoAns_"))
    return out


def _f1_v2(prediction: str, truth: str) -> float:
    p, t = normalize_answer(prediction).split(), normalize_answer(truth).split()
    if not p or not t:
        return float(p == t)
    return _f1(prediction, truth)
