"""The tokenizer against transformers' BertTokenizerFast, on every line of the shared corpora and GLUE."""

import csv

import numpy as np
import pytest
import transformers

from distilbert.errors import UserError
from distilbert.tokenizer import Tokenizer
from helpers.models import VOCAB, data_file

csv.field_size_limit(10**8)


@pytest.fixture(scope="module")
def pair():
    data_file("vocab", "bert-base-uncased-vocab.txt")
    return Tokenizer.from_vocab(VOCAB), transformers.BertTokenizerFast(str(VOCAB))


def glue_rows(task, split, columns, header=True, encoding="utf-8"):
    path = data_file("glue", task, f"{split}.tsv")
    with open(path, encoding=encoding, newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    rows = rows[1:] if header else rows
    return [tuple(row[c] for c in columns) for row in rows if len(row) > max(columns)]


@pytest.mark.parametrize("name", ["wikitext-2-valid.txt", "ptb-valid.txt", "tinyshakespeare.txt"])
def test_ids_identical_on_every_corpus_line(pair, name):
    ours, ref = pair
    lines = data_file("text", name).read_text(encoding="utf-8").splitlines()
    assert len(lines) > 1000
    assert ours(lines)["input_ids"] == ref(lines)["input_ids"]


@pytest.mark.parametrize(
    "task, split, columns, header, encoding",
    [
        ("SST-2", "train", (0,), True, "utf-8"),
        ("SST-2", "dev", (0,), True, "utf-8"),
        ("CoLA", "train", (3,), False, "utf-8"),
        ("CoLA", "dev", (3,), False, "utf-8"),
        ("MRPC", "train", (3, 4), True, "utf-8-sig"),
        ("MRPC", "dev", (3, 4), True, "utf-8-sig"),
        ("RTE", "train", (1, 2), True, "utf-8"),
        ("RTE", "dev", (1, 2), True, "utf-8"),
        ("STS-B", "train", (7, 8), True, "utf-8"),
        ("STS-B", "dev", (7, 8), True, "utf-8"),
        ("QNLI", "dev", (1, 2), True, "utf-8"),
    ],
)
def test_ids_identical_on_glue(pair, task, split, columns, header, encoding):
    ours, ref = pair
    rows = glue_rows(task, split, columns, header, encoding)
    assert len(rows) > 200
    firsts = [r[0] for r in rows]
    if len(columns) == 1:
        assert ours(firsts)["input_ids"] == ref(firsts)["input_ids"]
        return
    seconds = [r[1] for r in rows]
    a, b = ours(firsts, seconds), ref(firsts, seconds)
    assert a["input_ids"] == b["input_ids"]
    assert a["token_type_ids"] == b["token_type_ids"]
    # singles of both columns too
    assert ours(seconds)["input_ids"] == ref(seconds)["input_ids"]


@pytest.mark.parametrize("strategy", ["longest_first", "only_second", "only_first"])
def test_truncation_padding_offsets_match(pair, strategy):
    ours, ref = pair
    rows = glue_rows("RTE", "dev", (1, 2))[:64]
    firsts, seconds = [r[0] for r in rows], [r[1] for r in rows]
    max_length = 200 if strategy == "only_first" else 48
    if strategy == "only_first":
        seconds = [s[:40] for s in seconds]
    if strategy == "only_second":  # RTE's hypothesis first (short), its premise second (long)
        firsts, seconds = [s[:60] for s in seconds], firsts
    kw = dict(truncation=strategy, max_length=max_length, padding=True)
    a = ours(firsts, seconds, return_offsets=True, **kw)
    b = ref(firsts, seconds, return_offsets_mapping=True, **kw)
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        assert a[key] == b[key], key
    assert [[tuple(o) for o in row] for row in a["offset_mapping"]] == [[tuple(o) for o in row] for row in b["offset_mapping"]]


def test_max_length_padding_arrays_and_default_limit(pair):
    ours, ref = pair
    a = ours(["short one", "a little longer text here"], padding="max_length", max_length=16, return_tensors="np")
    b = ref(["short one", "a little longer text here"], padding="max_length", max_length=16, return_tensors="np")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
        assert a[key].dtype == np.int64 and a[key].shape == (2, 16)
    long = "word " * 1000
    assert len(ours(long, truncation=True)["input_ids"]) == 512  # default max length


def test_basic_rules():
    tok = Tokenizer.from_vocab({t: i for i, t in enumerate(
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##want", "##ed", "want", "runn", "##ing", ",", "東", "naive"])})
    assert tok.tokenize("UNwant\u00e9d,running") == ["un", "##want", "##ed", ",", "runn", "##ing"]
    assert tok.tokenize("Naïve 東") == ["naive", "東"]
    assert tok.tokenize("a\u0000b\tx") == ["[UNK]", "[UNK]"]  # control characters dropped, words unknown
    assert tok.tokenize("want" * 60) == ["[UNK]"]  # a 240-character word


def test_long_words_and_cjk_match_reference(pair):
    ours, ref = pair
    texts = ["x" * 201, "ab" * 60, "東京は日本の首都です", "Ünïcödé ÀÉÎ ñ", "don't stop—ever…", "[MASK] and [mask]"]
    assert ours(texts)["input_ids"] == ref(texts)["input_ids"]


def test_decode_matches_reference(pair):
    ours, ref = pair
    lines = data_file("text", "wikitext-2-valid.txt").read_text(encoding="utf-8").splitlines()[:300]
    for ids in ref(lines)["input_ids"]:
        assert ours.decode(ids) == ref.decode(ids)
        assert ours.decode(ids, skip_special_tokens=True) == ref.decode(ids, skip_special_tokens=True)


def test_save_and_load_round_trip(tmp_path, pair):
    ours, ref = pair
    ours.save(tmp_path)
    again = Tokenizer.from_pretrained(tmp_path)
    text = "Hello I'm a [MASK] model."
    assert again(text) == ours(text)
    loaded_by_transformers = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert loaded_by_transformers(text)["input_ids"] == ours(text)["input_ids"]
    # vocab.txt alone is enough
    (tmp_path / "tokenizer.json").unlink()
    assert Tokenizer.from_pretrained(tmp_path)(text) == ours(text)


def test_bad_input(tmp_path, pair):
    ours, _ = pair
    with pytest.raises(UserError, match="no tokenizer"):
        Tokenizer.from_pretrained(tmp_path)
    with pytest.raises(UserError, match="2 texts but 1 pair"):
        ours(["a", "b"], ["c"])
    with pytest.raises(UserError, match="unknown truncation"):
        ours("a", truncation="middle")
    with pytest.raises(UserError, match="expected text"):
        ours([None])


def test_one_tokenizer_shared_by_threads(pair):
    """A server tokenises on many threads with one tokenizer: truncation and padding set for one call (shared
    state on the Rust side) never reach `tokenize`, `decode` or another call."""
    import threading
    import time

    ours, _ = pair
    text = " ".join(["distillation makes a smaller model"] * 20)
    pieces, ids = ours.tokenize(text), ours(text)["input_ids"]
    decoded = ours.decode(ids)
    wrong: list[str] = []
    stop = time.monotonic() + 1.0

    def truncating():
        while time.monotonic() < stop:
            if len(ours([text, "short"], truncation=True, max_length=8, padding="max_length")["input_ids"][1]) != 8:
                wrong.append("padding")

    def plain():
        while time.monotonic() < stop:
            if ours.tokenize(text) != pieces:
                wrong.append("tokenize")
            if ours(text)["input_ids"] != ids:
                wrong.append("call")
            if ours.decode(ids) != decoded:
                wrong.append("decode")

    threads = [threading.Thread(target=f) for f in (truncating, truncating, plain, plain)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong, sorted(set(wrong))
