"""Text classification against transformers' pipeline, on every backend, on real SST-2 and MRPC text."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import transformers

import distilbert
from distilbert.errors import UserError
from distilbert.onnx import export
from helpers.models import ROOT, data_file, make_reference, save_reference

LABELS = {0: "NEGATIVE", 1: "NEUTRAL", 2: "POSITIVE"}


def sst2(n: int) -> list[str]:
    with open(data_file("glue", "SST-2", "dev.tsv"), encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    return [r[0] for r in rows[:n]]


def mrpc(n: int) -> list[dict]:
    with open(data_file("glue", "MRPC", "dev.tsv"), encoding="utf-8-sig") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    return [{"text": r[3], "text_pair": r[4]} for r in rows[:n]]


ODD = ["Crème brûlée à la café, naïve façade!", "東京は日本の首都です。", "What?!?!... ---- (((wow)))",
       "supercalifragilisticexpialidocious antidisestablishmentarianism", "x"]


@pytest.fixture(scope="module", params=["distilbert", "bert"])
def classifier(request, tmp_path_factory):
    """(our fp32 torch folder, transformers pipeline) for a 3-label model with named labels."""
    data_file("vocab", "bert-base-uncased-vocab.txt")
    ref = make_reference(request.param, "ForSequenceClassification", vocab_size=30522, max_position_embeddings=160,
                         id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    folder = save_reference(ref, tmp_path_factory.mktemp(f"cls-{request.param}"))
    theirs = transformers.pipeline("text-classification", model=str(folder))
    return folder, theirs


@pytest.fixture(scope="module")
def exports(classifier, tmp_path_factory):
    folder, _ = classifier
    out = tmp_path_factory.mktemp("cls-onnx")
    export(folder, out, quantize="int8", drift_texts=sst2(64), log=lambda line: None)
    return out


def assert_same(ours, theirs, atol=1e-5):
    if isinstance(theirs, dict):
        assert set(ours) == {"label", "score"} == set(theirs)
        assert ours["label"] == theirs["label"], (ours, theirs)
        assert abs(ours["score"] - theirs["score"]) <= atol
        return
    assert isinstance(ours, list) and len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert_same(a, b, atol)


CASES = [
    ("one text", {}),
    ("one text", {"top_k": 2}),
    ("one text", {"top_k": None}),
    ("one text", {"top_k": 1}),
    ("texts", {}),
    ("texts", {"top_k": None}),
    ("texts", {"function_to_apply": "sigmoid"}),
    ("texts", {"function_to_apply": "none", "top_k": 3}),
    ("pair", {}),
    ("pairs", {}),
    ("pairs", {"top_k": None}),
    ("odd", {}),
]


def inputs_for(kind):
    return {"one text": sst2(1)[0], "texts": sst2(40), "pair": mrpc(1)[0], "pairs": mrpc(20), "odd": ODD}[kind]


@pytest.mark.parametrize("kind, kwargs", CASES)
def test_matches_transformers(classifier, kind, kwargs):
    folder, theirs = classifier
    ours = distilbert.pipeline("text-classification", model=folder, backend="torch")
    inputs = inputs_for(kind)
    assert_same(ours(inputs, **kwargs), theirs(inputs, **kwargs))


@pytest.mark.parametrize("backend, precision", [("onnx", "fp32"), ("onnx", "int8")])
def test_onnx_backends_agree(classifier, exports, backend, precision):
    folder, theirs = classifier
    ours = distilbert.pipeline("sentiment-analysis", model=exports, backend=backend, precision=precision)
    texts = sst2(60)
    if precision == "fp32":
        for kind, kwargs in CASES:
            assert_same(ours(inputs_for(kind), **kwargs), theirs(inputs_for(kind), **kwargs), atol=1e-5)
        return
    # int8: random tiny weights give near-uniform scores, so labels may flip where two are within a hair
    exact = distilbert.pipeline("text-classification", model=exports)(texts, top_k=None)
    fast = ours(texts, top_k=None)
    agree = np.mean([a[0]["label"] == b[0]["label"] for a, b in zip(exact, fast)])
    worst = max(abs(x["score"] - {y["label"]: y["score"] for y in b}[x["label"]]) for a, b in zip(exact, fast) for x in a)
    assert agree >= 0.8 and worst < 0.05, (agree, worst)
    report = json.loads((exports / "quantization_report.json").read_text())["int8"]  # the drift report: label agreement
    assert report["texts"] == 64 and report["label_agreement"] >= 0.8 and report["max_score_diff"] < 0.05, report


def test_batched_equals_one_by_one(classifier):
    folder, _ = classifier
    ours = distilbert.pipeline("text-classification", model=folder, batch_size=4, max_batch_tokens=200)
    texts = sst2(30)
    together = ours(texts, top_k=None)
    for text, answer in zip(texts, together):
        assert_same(answer, ours(text, top_k=None), atol=1e-6)


def test_problem_types_and_unnamed_labels(tmp_path):
    data_file("vocab", "bert-base-uncased-vocab.txt")
    texts = sst2(10)
    for problem, num_labels in (("regression", 1), ("multi_label_classification", 4), (None, 1)):
        ref = make_reference("distilbert", "ForSequenceClassification", vocab_size=30522, seed=3)
        config = ref.config
        config.num_labels = num_labels
        config.problem_type = problem
        ref = transformers.DistilBertForSequenceClassification(config).eval()
        folder = save_reference(ref, tmp_path / f"{problem}-{num_labels}")
        theirs = transformers.pipeline("text-classification", model=str(folder))
        ours = distilbert.pipeline("text-classification", model=folder)
        for kwargs in ({}, {"top_k": None}):
            assert_same(ours(texts, **kwargs), theirs(texts, **kwargs))
        assert ours(texts[0])[0]["label"].startswith("LABEL_")


def test_bad_input(classifier, checkpoint_factory):
    folder, _ = classifier
    ours = distilbert.pipeline("text-classification", model=folder)
    for bad, message in (("", "empty text"), ([], "no input text"), ({"text_pair": "b"}, "'text' is missing"),
                         ({"text": "a", "pair": "b"}, "unknown keys")):
        with pytest.raises(UserError, match=message):
            ours(bad)
    for top_k in (0, -1, "2"):
        with pytest.raises(UserError, match="top_k must be a positive integer"):
            ours("fine", top_k=top_k)
    with pytest.raises(UserError, match="unknown function_to_apply 'tanh'"):
        ours("fine", function_to_apply="tanh")
    mlm, _ = checkpoint_factory("distilbert", "ForMaskedLM", vocab="real")
    with pytest.raises(UserError, match="has a fill-mask head, not a text-classification head") as e:
        distilbert.pipeline("text-classification", model=mlm)
    assert "\n" not in str(e.value)


def run_cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "distilbert.cli", *map(str, args)], capture_output=True, text=True,
                          input=stdin, cwd=ROOT, timeout=300)


def test_cli_classify(classifier, tmp_path):
    folder, _ = classifier
    ours = distilbert.pipeline("text-classification", model=folder)
    texts = sst2(5)
    p = run_cli("classify", *texts[:2], "--model", folder, "--json")
    assert p.returncode == 0, p.stderr
    assert [json.loads(line) for line in p.stdout.splitlines()] == [ours(t) for t in texts[:2]]
    p = run_cli("classify", "--model", folder, "--top-k", "2", stdin="\n".join(texts) + "\n")
    assert p.returncode == 0, p.stderr
    assert all(t[:40] in p.stdout for t in texts) and "NEGATIVE" in p.stdout + "POSITIVE" + "NEUTRAL"
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(f"{x['text']}\t{x['text_pair']}\n" for x in mrpc(3)), encoding="utf-8")
    p = run_cli("classify", "--file", pairs, "--pairs", "--model", folder, "--json")
    assert p.returncode == 0, p.stderr
    assert [json.loads(line) for line in p.stdout.splitlines()] == ours(mrpc(3))
    for args, message in ((["classify", "--model", folder, "--top-k", "0"], "positive integer"),
                          (["classify", "", "--model", folder], "empty text")):
        p = run_cli(*args, stdin="")
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and message in p.stderr, p.stderr
    p = run_cli("classify", "--file", tmp_path / "missing.txt", "--model", folder)
    assert p.returncode == 2 and "does not exist" in p.stderr
