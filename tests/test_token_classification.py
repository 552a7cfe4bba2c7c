"""Token classification (NER) against transformers' TokenClassificationPipeline, on PyTorch and ONNX Runtime."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers

import distilbert
import distilbert.onnx
from distilbert.errors import UserError
from helpers.models import ROOT, data_file, make_reference, save_reference


LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]
STRATEGIES = ("none", "simple", "first", "average", "max")
IGNORES = {"default": None, "keep-all": [], "no-misc": ["O", "B-MISC", "I-MISC"]}
MAX_LENGTH = 64  # the tiny models' max_position_embeddings

ODD_TEXTS = [
    "Café Zürich, naïve résumé: São Paulo, Kraków and Málaga.",
    "Cafe\u0301 Zu\u0308rich",  # decomposed accents: fewer token characters than text characters
    "東京タワーと北京大学で会いましょう。Tokyo 東京",
    "Wait!!! What?!?! ...,;;--(( Paris )) ---> $$$ 100%",
    "Pneumonoultramicroscopicsilicovolcanoconiosis and antidisestablishmentarianism in Llanfairpwllgwyngyll",
    "x" * 120 + " Berlin " + "ab" * 60,  # words over 100 characters are [UNK]
    "  leading spaces \t tabs\nand newlines  ",
    "Hello [MASK] world [SEP] and [UNK] tokens",
]


def conll_sentences() -> list[str]:
    """CoNLL-2003 validation sentences, their tokens re-joined with spaces."""
    sentences, words = [], []
    for line in data_file("ner", "conll2003", "valid.txt").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("-DOCSTART-"):
            if words:
                sentences.append(" ".join(words))
            words = []
        else:
            words.append(line.split(" ")[0])
    return sentences


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: threads only wait on each other (and on the other processes of a shared machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sentences():
    return conll_sentences()


@pytest.fixture(scope="module")
def texts(sentences):
    return sentences[::108][:30] + ODD_TEXTS


@pytest.fixture(scope="module")
def long_texts(sentences):
    """Texts of 2 to 6 windows of the 64-token models."""
    return [" ".join(sentences[100:112]), " ".join(sentences[500:530]),
            " ".join(sentences[2000:2010]) + " " + ODD_TEXTS[0]]


class Checkpoint:
    """A tiny random checkpoint with NER labels, transformers' pipeline on it, and ours on each backend."""

    def __init__(self, family, folder, reference):
        self.family, self.folder, self.reference = family, folder, reference
        self.cache, self.pipes = {}, {}

    def expected(self, texts, **params):
        key = (tuple(texts), json.dumps(params, sort_keys=True))
        if key not in self.cache:
            self.cache[key] = self.reference(list(texts), **params)
        return self.cache[key]


@pytest.fixture(scope="module", params=["distilbert", "bert"])
def checkpoint(request, tmp_path_factory):
    data_file("vocab", "bert-base-uncased-vocab.txt")
    family = request.param
    model = make_reference(family, "ForTokenClassification", vocab_size=30522)
    # Large classifier weights, so each token has a clear best label and a 1e-5 drift cannot flip it;
    # O gets a head start so that about half the tokens are O, as in real text.
    generator = torch.Generator().manual_seed(1)
    model.classifier = torch.nn.Linear(model.classifier.in_features, len(LABELS))
    with torch.no_grad():
        model.classifier.weight.copy_(torch.randn(model.classifier.weight.shape, generator=generator) * 0.5)
        model.classifier.bias.copy_(torch.randn(len(LABELS), generator=generator) * 0.5)
        model.classifier.bias[0] += 2.5
    model.num_labels = len(LABELS)
    model.config.id2label = dict(enumerate(LABELS))
    model.config.label2id = {label: i for i, label in enumerate(LABELS)}
    folder = save_reference(model, tmp_path_factory.mktemp(f"ner-{family}"))
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, model_max_length=MAX_LENGTH)
    reference = transformers.pipeline("token-classification", model=model, tokenizer=tokenizer)
    return Checkpoint(family, folder, reference)


@pytest.fixture(scope="module")
def onnx_folder(checkpoint, texts, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"ner-{checkpoint.family}-onnx")
    distilbert.onnx.export(checkpoint.folder, out, quantize="int8", drift_texts=texts, log=lambda line: None)
    return out


@pytest.fixture(params=["torch", "onnx"])
def pipe(request, checkpoint):
    if request.param not in checkpoint.pipes:
        model = checkpoint.folder if request.param == "torch" else request.getfixturevalue("onnx_folder")
        checkpoint.pipes[request.param] = distilbert.pipeline("ner", model=model, backend=request.param, threads=1)
    return checkpoint.pipes[request.param]


def assert_same(ours, theirs, tol=1e-5):
    """Labels, words, offsets and keys identical, in order; scores within `tol`."""
    assert isinstance(ours, list) and len(ours) == len(theirs), (ours, theirs)
    for a, b in zip(ours, theirs):
        if isinstance(b, list):
            assert_same(a, b, tol)
            continue
        assert list(a) == list(b), (a, b)
        for key in b:
            if key == "score":
                assert isinstance(a[key], float) and abs(a[key] - float(b[key])) <= tol, (a, b)
            else:
                assert a[key] == b[key], (a, b)


# --- parity with transformers ------------------------------------------------------------------------


def test_reference_outputs_are_worth_comparing(checkpoint, texts):
    """Random tiny models answer near-uniform scores by default: ours are spread so the labels mean something."""
    found = [e for result in checkpoint.expected(texts, ignore_labels=[]) for e in result]
    labels = [e["entity"] for e in found]
    assert len(set(labels)) >= 7
    assert 0.2 < labels.count("O") / len(labels) < 0.8, labels.count("O") / len(labels)
    assert np.median([e["score"] for e in found]) > 0.5
    grouped = checkpoint.expected(texts, aggregation_strategy="simple")
    assert max(len(e["word"].split()) for result in grouped for e in result) > 1  # tokens do get joined


@pytest.mark.parametrize("ignore", IGNORES, ids=list(IGNORES))
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_matches_transformers(pipe, checkpoint, texts, strategy, ignore):
    params = {"aggregation_strategy": strategy}
    if IGNORES[ignore] is not None:
        params["ignore_labels"] = IGNORES[ignore]
    ours = pipe(texts, **params)
    assert_same(ours, checkpoint.expected(texts, **params))
    json.dumps(ours)


@pytest.mark.parametrize("stride", [0, 15, 40])
@pytest.mark.parametrize("strategy", STRATEGIES[1:])
def test_long_texts_match_transformers_with_stride(pipe, checkpoint, long_texts, strategy, stride):
    ours = pipe(long_texts, aggregation_strategy=strategy, stride=stride)
    assert_same(ours, checkpoint.expected(long_texts, aggregation_strategy=strategy, stride=stride))
    last = pipe(long_texts[1], aggregation_strategy=strategy, stride=stride)[-1]
    assert last["end"] > 0.95 * len(long_texts[1])  # read to the end


def test_long_texts_are_split_not_cut_off(pipe, long_texts):
    """Without a stride a long text is still read to its end, in windows sharing a quarter of their tokens."""
    for strategy in ("simple", "first"):
        assert pipe(long_texts, aggregation_strategy=strategy) == pipe(long_texts, aggregation_strategy=strategy,
                                                                        stride=(MAX_LENGTH - 2) // 4)
    windows = pipe.tokenizer(long_texts, truncation=True, max_length=MAX_LENGTH, stride=15,
                             return_overflowing_tokens=True)
    assert np.bincount(windows["overflow_to_sample_mapping"]).tolist()[1] >= 6


@pytest.mark.parametrize("stride", [0, 15, 40])
def test_long_text_without_aggregation_counts_each_token_once(pipe, checkpoint, long_texts, stride):
    """Each token once, at its place in the whole text, with the surer prediction of the windows that hold it."""
    tokenizer = checkpoint.reference.tokenizer
    for text in long_texts:
        ours = pipe(text, ignore_labels=[], stride=stride)
        whole = tokenizer(text, return_offsets_mapping=True, truncation=False)
        tokens = tokenizer.convert_ids_to_tokens(whole["input_ids"])
        assert [e["index"] for e in ours] == list(range(1, len(tokens) - 1))
        for e in ours:
            assert (e["start"], e["end"]) == whole["offset_mapping"][e["index"]]
            assert e["word"] == tokens[e["index"]] or tokens[e["index"]] == "[UNK]"
        # the tokens only the first window reads are answered as transformers answers the text cut to one window
        first = checkpoint.expected([text], ignore_labels=[])[0]
        alone = MAX_LENGTH - 1 - stride
        assert_same([e for e in ours if e["index"] < alone], [e for e in first if e["index"] < alone])
        by_index = {e["index"]: e for e in ours}
        for e in first:  # shared tokens: never less sure than the first window was
            assert by_index[e["index"]]["score"] >= float(e["score"]) - 1e-5


def test_single_text_and_lists(pipe, checkpoint, texts):
    """A text: a list of entities; a list (even of one text): a list of lists, as transformers answers."""
    one = pipe(texts[0])
    assert isinstance(one, list) and all(isinstance(e, dict) for e in one)
    assert_same(pipe([texts[0]]), [checkpoint.reference(texts[0])])
    assert_same(pipe(texts[0], aggregation_strategy="max"), checkpoint.reference(texts[0], aggregation_strategy="max"))
    assert pipe(tuple(texts[:2])) == pipe(texts[:2])


def test_batched_equals_one_by_one(pipe, texts, long_texts):
    everything = texts + long_texts
    for strategy in ("none", "average"):
        batched = pipe(everything, aggregation_strategy=strategy)
        assert_same(batched, [pipe(t, aggregation_strategy=strategy) for t in everything])


def test_settings_at_construction(checkpoint, texts):
    pipe = distilbert.pipeline("ner", model=checkpoint.folder, aggregation_strategy="first", ignore_labels=[],
                               stride=20, threads=1)
    assert_same(pipe(texts), checkpoint.expected(texts, aggregation_strategy="first", ignore_labels=[]))
    assert pipe(texts, aggregation_strategy="none", ignore_labels=["O"]) == \
        pipe(texts, aggregation_strategy=transformers.pipelines.AggregationStrategy.NONE, ignore_labels=["O"])


def test_bad_input(checkpoint, monkeypatch):
    pipe = distilbert.pipeline("token-classification", model=checkpoint.folder, threads=1)
    for bad in ("", "   ", [], ["Peter", ""], 5, [None]):
        with pytest.raises(UserError) as e:
            pipe(bad)
        assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="none, simple, first, average, max"):
        pipe("Peter", aggregation_strategy="longest")
    for stride in (-1, 62, 1.5):
        with pytest.raises(UserError, match="stride"):
            pipe("Peter", stride=stride)
    with pytest.raises(UserError, match="ignore_labels"):
        pipe("Peter", ignore_labels=[0])
    monkeypatch.setattr(pipe.tokenizer, "has_offsets", False)
    for strategy in ("first", "average", "max"):
        with pytest.raises(UserError, match="offsets"):
            pipe("Peter", aggregation_strategy=strategy)


# --- int8 -----------------------------------------------------------------------------------------------


def test_int8_stays_close_to_fp32(checkpoint, onnx_folder, texts):
    """Dynamic int8 moves scores a little: most tokens keep their label, and most entities their span."""
    fp32 = distilbert.pipeline("ner", model=onnx_folder, threads=1)
    int8 = distilbert.pipeline("ner", model=onnx_folder, precision="int8", threads=1)
    a, b = fp32(texts, ignore_labels=[]), int8(texts, ignore_labels=[])
    tokens = [(x, y) for p, q in zip(a, b) for x, y in zip(p, q)]
    assert len(tokens) == sum(map(len, a)) == sum(map(len, b))  # the same tokens: int8 changes no offsets
    where = lambda e: (e["index"], e["word"], e["start"], e["end"])  # noqa: E731
    assert all(where(x) == where(y) for x, y in tokens)
    agree = np.mean([x["entity"] == y["entity"] for x, y in tokens])
    drift = np.abs([x["score"] - y["score"] for x, y in tokens if x["entity"] == y["entity"]])
    assert agree >= 0.95, agree
    assert np.median(drift) < 0.02 and drift.max() < 0.1, (np.median(drift), drift.max())
    spans = lambda result: {(e["entity_group"], e["start"], e["end"]) for e in result}  # noqa: E731
    a, b = fp32(texts, aggregation_strategy="simple"), int8(texts, aggregation_strategy="simple")
    shared = sum(len(spans(p) & spans(q)) for p, q in zip(a, b))
    assert shared >= 0.9 * max(sum(map(len, a)), sum(map(len, b)))
    report = json.loads((onnx_folder / "quantization_report.json").read_text())["int8"]  # export measures the same
    assert report["texts"] == len(texts) and report["entities_fp32"] == sum(map(len, a))
    assert report["entity_agreement"] >= 0.5, report  # the share of texts whose entities are all the same


# --- command line ---------------------------------------------------------------------------------------


def cli(*args, stdin=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "distilbert.cli", "ner", *args], input=stdin, capture_output=True,
                          text=True, env=env, timeout=120)


def test_cli_table_and_json(onnx_folder, texts):
    pipe = distilbert.pipeline("ner", model=onnx_folder, threads=1)
    run = cli(texts[0], texts[1], "--model", str(onnx_folder))
    assert run.returncode == 0, run.stderr
    blocks = run.stdout.strip().split("\n\n")
    assert [b.splitlines()[0] for b in blocks] == texts[:2]
    first = pipe(texts[0], aggregation_strategy="simple")
    assert blocks[0].splitlines()[1].split() == ["entity_group", "score", "start", "end", "word"]
    assert len(blocks[0].splitlines()) == 2 + len(first)
    assert blocks[0].splitlines()[2].split()[0] == first[0]["entity_group"]

    run = cli(*texts[:2], "--model", str(onnx_folder), "--aggregation", "none", "--json")
    assert run.returncode == 0, run.stderr
    assert_same([json.loads(line) for line in run.stdout.splitlines()], pipe(texts[:2]), tol=0)


def test_cli_lines_from_stdin(onnx_folder, texts):
    pipe = distilbert.pipeline("ner", model=onnx_folder, threads=1)
    lines = [t for t in texts if "\n" not in t]
    run = cli("--model", str(onnx_folder), "--aggregation", "average", "--json",
              stdin="\n".join(lines[:3] + [""] + lines[3:]) + "\n")
    assert run.returncode == 0, run.stderr
    answers = [json.loads(line) for line in run.stdout.splitlines()]  # one per text; blank lines are no input
    assert_same(answers, pipe(lines, aggregation_strategy="average"), tol=0)


def test_cli_bad_input_is_one_line(onnx_folder):
    for args in (["", "--model", str(onnx_folder)], ["Peter", "--model", str(onnx_folder), "--stride", "500"]):
        run = cli(*args)
        assert run.returncode == 2
        assert run.stderr.startswith("error: ") and len(run.stderr.strip().splitlines()) == 1, run.stderr
