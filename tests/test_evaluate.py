"""`distilbert evaluate`: scores through the pipelines equal the reference model's scores on the same data."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers

from distilbert import metrics
from distilbert.data import read
from distilbert.evaluate import evaluate
from distilbert.errors import UserError
from helpers.models import VOCAB, data_file, hf_config
from helpers.cli import assert_user_error
from helpers.squad_official import official_v1

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(os.path.dirname(os.path.dirname(__file__)))}
TAGS = ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]


def cli(*args, ok=True):
    p = subprocess.run([sys.executable, "-m", "distilbert.cli", *map(str, args)], capture_output=True, text=True,
                       env=ENV, timeout=300)
    if ok:
        assert p.returncode == 0, p.stderr[-3000:]
    return p


def save(model, folder):
    model.save_pretrained(folder)
    transformers.BertTokenizerFast(str(VOCAB)).save_pretrained(folder)
    return folder


def random_model(cls, family="distilbert", **config):
    torch.manual_seed(0)
    data_file("vocab", "bert-base-uncased-vocab.txt")
    num_labels = config.pop("num_labels", 2)
    c = hf_config(family, 30522, num_labels, max_position_embeddings=512, **config)
    return getattr(transformers, cls)(c).eval()


@pytest.fixture(scope="module")
def sst2_slice(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    lines = data_file("glue", "SST-2", "dev.tsv").read_text().splitlines()
    (root / "dev.tsv").write_text("\n".join(lines[:41]) + "\n")
    return root / "dev.tsv"


def test_glue_scores_equal_the_reference_model(tmp_path, sst2_slice):
    model = random_model("DistilBertForSequenceClassification", id2label={0: "negative", 1: "positive"})
    folder = save(model, tmp_path / "model")
    examples = read("text-classification", sst2_slice, glue="sst2")
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        logits = model(**tok([e.text for e in examples], padding=True, return_tensors="pt")).logits
    references = [0 if e.label == "negative" else 1 for e in examples]
    expected = metrics.glue("sst2", logits.argmax(-1).numpy(), references)
    result = evaluate(str(folder), None, str(sst2_slice), glue="sst2", backend="torch", progress=False,
                      predictions_file=str(tmp_path / "p.jsonl"))
    assert result["metrics"] == pytest.approx(expected) and result["examples"] == 40
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and rows[0]["label"] in ("negative", "positive") and "prediction" in rows[0]
    # the same through ONNX Runtime, from the command line, as one JSON object
    cli("export", folder, tmp_path / "onnx", "--quantize", "int8")
    p = cli("evaluate", tmp_path / "onnx", "--glue", "sst2", "--data", sst2_slice, "--json")
    assert json.loads(p.stdout) == pytest.approx(expected)
    # and the int8 export: scored on what the int8 pipeline predicts
    import distilbert

    int8 = distilbert.pipeline("text-classification", model=tmp_path / "onnx", precision="int8")
    predicted = [0 if out["label"] == "negative" else 1 for out in int8([e.text for e in examples])]
    p = cli("evaluate", tmp_path / "onnx", "--glue", "sst2", "--data", sst2_slice, "--precision", "int8", "--json")
    assert json.loads(p.stdout) == pytest.approx(metrics.glue("sst2", np.array(predicted), references))
    text = cli("evaluate", folder, "--glue", "sst2", "--data", sst2_slice).stdout
    assert "accuracy" in text


def test_a_model_with_plain_label_names_scores_glue_in_its_order(tmp_path, sst2_slice):
    folder = save(random_model("BertForSequenceClassification", family="bert"), tmp_path / "model")  # LABEL_0/1
    result = evaluate(str(folder), None, str(sst2_slice), glue="sst2", progress=False)
    assert 0 <= result["metrics"]["accuracy"] <= 1
    three = save(random_model("BertForSequenceClassification", family="bert", num_labels=3), tmp_path / "three")
    with pytest.raises(UserError, match="GLUE sst2 has 2 labels, the model 3"):
        evaluate(str(three), None, str(sst2_slice), glue="sst2", progress=False)


def test_ner_equals_first_piece_tags_of_the_reference(tmp_path):
    pytest.importorskip("distilbert.pipelines.token_classification")
    model = random_model("BertForTokenClassification", family="bert", num_labels=len(TAGS),
                         id2label=dict(enumerate(TAGS)))
    folder = save(model, tmp_path / "model")
    sentences = read("token-classification", data_file("ner", "conll2003", "valid.txt"))[:40]
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    predicted = []
    for s in sentences:  # the reference: each word's first piece's tag, as run_ner scores it
        enc = tok(s.tokens, is_split_into_words=True, return_tensors="pt")
        with torch.no_grad():
            labels = model(**enc).logits[0].argmax(-1).tolist()
        tags, seen = ["O"] * len(s.tokens), set()
        for t, w in enumerate(enc.word_ids()):
            if w is not None and w not in seen:
                seen.add(w)
                tags[w] = TAGS[labels[t]]
        predicted.append(tags)
    expected = metrics.ner(predicted, [s.tags for s in sentences])
    path = tmp_path / "slice.txt"
    path.write_text("\n\n".join("\n".join(f"{w} X X {t}" for w, t in zip(s.tokens, s.tags)) for s in sentences) + "\n")
    result = evaluate(str(folder), None, str(path), backend="torch", progress=False)
    assert result["metrics"]["overall_f1"] == pytest.approx(expected["overall_f1"])
    assert result["metrics"]["overall_accuracy"] == pytest.approx(expected["overall_accuracy"])


REFERENCE_QA = """
import json, sys, transformers
folder, calls = sys.argv[1], json.load(open(sys.argv[2]))
tokenizer = transformers.DistilBertTokenizerFast.from_pretrained(folder)  # no token types, as DistilBERT ships
pipe = transformers.pipeline("question-answering", model=folder, tokenizer=tokenizer)
print(json.dumps({c["id"]: pipe(question=c["question"], context=c["context"], max_seq_len=384, doc_stride=128,
                               max_answer_len=30)["answer"] for c in calls}))
"""


def reference_answers(folder, examples):
    """transformers 4.57's QuestionAnsweringPipeline (transformers 5 removed it), in Optimum's environment."""
    python = os.path.join(os.path.dirname(os.path.dirname(__file__)), ".venv-optimum", "bin", "python")
    if not os.path.exists(python):
        pytest.skip(".venv-optimum (transformers 4.57, the reference QA pipeline) is missing")
    calls = folder / "calls.json"
    calls.write_text(json.dumps([{"id": e.id, "question": e.question, "context": e.context} for e in examples]))
    p = subprocess.run([python, "-c", REFERENCE_QA, str(folder), str(calls)], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.splitlines()[-1])


def test_squad_equals_the_reference_pipeline_and_official_metric(tmp_path):
    pytest.importorskip("distilbert.pipelines.question_answering")
    model = random_model("DistilBertForQuestionAnswering")
    folder = save(model, tmp_path / "model")
    squad = json.loads(data_file("squad", "dev-v1.1.json").read_text())
    part = {"version": "1.1", "data": [{"title": "t", "paragraphs": squad["data"][0]["paragraphs"][:4]}]}
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(part))
    examples = read("question-answering", path)
    answers = reference_answers(folder, examples)
    expected = official_v1(answers, {e.id: e.answers["text"] for e in examples})
    result = evaluate(str(folder), None, str(path), backend="torch", progress=False,
                      predictions_file=str(tmp_path / "answers.json"))
    assert result["metrics"] == pytest.approx(expected)
    assert json.loads((tmp_path / "answers.json").read_text()) == answers


def test_bad_input(tmp_path, sst2_slice):
    folder = save(random_model("DistilBertForSequenceClassification", id2label={0: "negative", 1: "positive"}),
                  tmp_path / "model")
    assert_user_error(cli("evaluate", folder, "--data", tmp_path / "none.tsv", ok=False), "does not exist")
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\ngood,positive\nbad,awful\n")
    assert_user_error(cli("evaluate", folder, "--data", bad, ok=False), "'awful' is not one of the model's labels")
    assert_user_error(cli("evaluate", folder, "--data", bad, "--task", "question-answering", ok=False), "SQuAD")


def test_scoring_imports_no_torch():
    code = ("import sys, distilbert.evaluate, distilbert.metrics, distilbert.data.glue, distilbert.data.squad, "
            "distilbert.data.ner, distilbert.data.tables; print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV).stdout.strip() == "False"
