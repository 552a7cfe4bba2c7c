"""Every metric against its reference: scikit-learn / scipy, seqeval, and the official SQuAD scripts' logic."""

import random

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics
from seqeval.metrics import accuracy_score, classification_report

from distilbert import metrics
from helpers.squad_official import official_normalize, official_v1, official_v2_f1


@pytest.mark.parametrize("seed", range(5))
def test_classification_metrics_match_scikit_learn_and_scipy(seed):
    rng = np.random.default_rng(seed)
    for n_classes in (2, 3):
        r = rng.integers(0, n_classes, 200)
        p = np.where(rng.random(200) < 0.7, r, rng.integers(0, n_classes, 200))
        assert metrics.accuracy(p, r) == pytest.approx(sklearn.metrics.accuracy_score(r, p))
        assert metrics.matthews_correlation(p, r) == pytest.approx(sklearn.metrics.matthews_corrcoef(r, p))
        if n_classes == 2:
            assert metrics.f1_binary(p, r) == pytest.approx(sklearn.metrics.f1_score(r, p))
        else:
            assert metrics.f1_macro(p, r) == pytest.approx(sklearn.metrics.f1_score(r, p, average="macro"))
    x = rng.normal(size=100)
    y = x + rng.normal(size=100)
    y[:10] = np.round(y[:10])  # ties
    x[10:20] = 1.0
    assert metrics.pearson(x, y) == pytest.approx(scipy.stats.pearsonr(x, y)[0])
    assert metrics.spearmanr(x, y) == pytest.approx(scipy.stats.spearmanr(x, y)[0])


def test_hand_made_classification_cases():
    assert metrics.matthews_correlation([1, 1, 1], [1, 1, 1]) == 0.0  # undefined: scikit-learn says 0 too
    assert metrics.f1_binary([0, 0], [0, 0]) == 0.0
    assert metrics.glue("mrpc", [1, 0, 1, 1], [1, 0, 0, 1]) == {"accuracy": 0.75, "f1": 0.8}
    assert metrics.glue("cola", [1, 0], [1, 0]) == {"matthews_correlation": 1.0}
    assert set(metrics.glue("stsb", [1.0, 2.0, 3.0], [1.0, 2.5, 2.9])) == {"pearson", "spearmanr"}
    assert metrics.classification([[1, 0], [1, 1]], [[1, 0], [0, 1]], "multi_label_classification") == {
        "accuracy": 0.5, "f1": pytest.approx(0.8)}


TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]


def seqeval_reference(pred, true):
    report = classification_report(true, pred, output_dict=True, zero_division=0)
    return report, accuracy_score(true, pred)


@pytest.mark.parametrize("seed", range(8))
def test_ner_matches_seqeval_on_random_predictions(seed):
    rnd = random.Random(seed)
    true = [[rnd.choice(TAGS) for _ in range(rnd.randint(1, 12))] for _ in range(30)]
    pred = [[t if rnd.random() < 0.6 else rnd.choice(TAGS) for t in s] for s in true]
    ours = metrics.ner(pred, true)
    report, acc = seqeval_reference(pred, true)
    assert ours["overall_accuracy"] == pytest.approx(acc)
    assert ours["overall_precision"] == pytest.approx(report["micro avg"]["precision"])
    assert ours["overall_recall"] == pytest.approx(report["micro avg"]["recall"])
    assert ours["overall_f1"] == pytest.approx(report["micro avg"]["f1-score"])
    for type_ in ("PER", "LOC", "ORG", "MISC"):
        if type_ in report:
            assert ours[type_]["precision"] == pytest.approx(report[type_]["precision"])
            assert ours[type_]["recall"] == pytest.approx(report[type_]["recall"])
            assert ours[type_]["f1"] == pytest.approx(report[type_]["f1-score"])
            assert ours[type_]["number"] == report[type_]["support"]


def test_ner_hand_made():
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["O", "B-ORG", "O"]]
    out = metrics.ner(pred, true)
    assert out["overall_precision"] == 0.5 and out["overall_recall"] == pytest.approx(1 / 3)
    assert out["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "number": 1}
    assert out["overall_accuracy"] == pytest.approx(5 / 7)
    assert metrics.entities(["I-PER", "I-PER", "B-LOC", "I-PER"]) == [("PER", 0, 1), ("LOC", 2, 2), ("PER", 3, 3)]


WORDS = ["the", "a", "An", "Denver", "Broncos", "1996", "Super", "Bowl,", "(50)", "L'Oreal", "", "city", "city."]


def random_answer(rnd):
    return " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(0, 4)))


@pytest.mark.parametrize("seed", range(5))
def test_squad_v1_matches_the_official_script(seed):
    rnd = random.Random(seed)
    references = {str(i): [random_answer(rnd) or "x" for _ in range(rnd.randint(1, 3))] for i in range(60)}
    predictions = {q: rnd.choice([*g, random_answer(rnd)]) for q, g in references.items() if rnd.random() < 0.95}
    ours, official = metrics.squad(predictions, references), official_v1(predictions, references)
    assert ours["exact_match"] == pytest.approx(official["exact_match"])
    assert ours["f1"] == pytest.approx(official["f1"])


def test_squad_hand_made():
    assert metrics.normalize_answer("The  Denver Broncos!") == "denver broncos"
    out = metrics.squad({"1": "the Broncos", "2": "Carolina"}, {"1": ["Denver Broncos", "Broncos"], "2": ["Panthers"]})
    assert out == {"exact_match": 50.0, "f1": 50.0}


@pytest.mark.parametrize("seed", range(3))
def test_squad_v2_matches_the_official_script(seed):
    rnd = random.Random(seed)
    references = {str(i): ([random_answer(rnd) or "x" for _ in range(rnd.randint(1, 3))] if rnd.random() < 0.6 else [])
                  for i in range(80)}
    predictions = {q: rnd.choice([*g, "", random_answer(rnd)]) for q, g in references.items()}
    ours = metrics.squad_v2(predictions, references)
    exact, f1 = {}, {}
    for q, golds in references.items():
        golds = [g for g in golds if official_normalize(g)] or [""]
        exact[q] = max(int(official_normalize(g) == official_normalize(predictions[q])) for g in golds)
        f1[q] = max(official_v2_f1(g, predictions[q]) for g in golds)
    has = [q for q, g in references.items() if g]
    no = [q for q in references if q not in has]
    assert ours["exact"] == pytest.approx(100 * sum(exact.values()) / len(exact))
    assert ours["f1"] == pytest.approx(100 * sum(f1.values()) / len(f1))
    assert ours["HasAns_f1"] == pytest.approx(100 * sum(f1[q] for q in has) / len(has))
    assert ours["NoAns_exact"] == pytest.approx(100 * sum(exact[q] for q in no) / len(no))
    assert ours["HasAns_total"] == len(has) and ours["NoAns_total"] == len(no)
