"""Token shards: what prepare-data keeps and drops, and batches grouped by length."""

import json

import numpy as np
import pytest

from distilbert.errors import UserError
from distilbert.tokenizer import Tokenizer
from distilbert.train.data import Batching, TokenShards, collate, epoch_batches, prepare
from helpers.models import VOCAB, data_file


@pytest.fixture(scope="module")
def vocab_folder(tmp_path_factory):
    data_file("vocab", "bert-base-uncased-vocab.txt")
    folder = tmp_path_factory.mktemp("vocab")
    (folder / "vocab.txt").write_bytes(VOCAB.read_bytes())
    return folder


def test_prepare_keeps_drops_and_splits(tmp_path, vocab_folder):
    text = tmp_path / "t.txt"
    long_line = " ".join(f"word{i % 7} the" for i in range(80))  # about 400 pieces: split into 3 sequences
    text.write_text("\n".join([
        "too short to keep .",
        "this line is long enough to be kept as one sequence of tokens , surely .",
        "ξξξ ᚠᚠᚠ ⴰⴰⴰ ꙮꙮꙮ ᛝᛝᛝ ꧁꧁ ⸎⸎ ꩜꩜ ⵣⵣ ꕥꕥ ꘐꘐ ꝏꝏ",  # mostly [UNK]
        long_line,
    ]) + "\n")
    meta = prepare([text], vocab_folder, tmp_path / "data", max_length=128, workers=2, progress=False)
    assert meta["dropped_short"] == 1 and meta["dropped_unknown"] == 1
    shards = TokenShards(tmp_path / "data")
    tok = Tokenizer.from_pretrained(vocab_folder)
    pieces = tok(long_line, add_special_tokens=False)["input_ids"]
    expected_pieces = -(-len(pieces) // 126)
    assert len(shards) == 1 + expected_pieces == meta["sequences"]
    for i in range(len(shards)):
        seq = shards[i]
        assert seq[0] == tok.cls_token_id and seq[-1] == tok.sep_token_id and 12 <= len(seq) <= 128
    joined = np.concatenate([shards[i][1:-1] for i in range(1, len(shards))])
    assert joined.tolist() == pieces  # the long line, in order, nothing lost
    counts = shards.counts()
    assert counts.sum() == meta["tokens"] == sum(len(shards[i]) for i in range(len(shards)))
    raw = np.fromfile(tmp_path / "data" / "shard_00000.tokens", dtype=np.uint16)
    assert raw.size == meta["tokens"]
    assert json.loads((tmp_path / "data" / "meta.json").read_text())["dtype"] == "uint16"


def test_prepare_paragraphs_of_a_real_corpus(tmp_path, vocab_folder):
    text = data_file("text", "tinyshakespeare.txt")
    meta = prepare([text], vocab_folder, tmp_path / "data", max_length=64, unit="paragraph", workers=2, progress=False)
    shards = TokenShards(tmp_path / "data")
    assert meta["sequences"] > 3000 and max(shards.lengths) <= 64
    first = Tokenizer.from_pretrained(vocab_folder).decode(shards[0], skip_special_tokens=True)
    assert first.startswith("first citizen : before we proceed any further")


def test_prepare_bad_input(tmp_path, vocab_folder):
    with pytest.raises(UserError, match="does not exist"):
        prepare([tmp_path / "missing.txt"], vocab_folder, tmp_path / "d1", progress=False)
    (tmp_path / "short.txt").write_text("a\nb c\n")
    with pytest.raises(UserError, match="no sequence of 12 tokens"):
        prepare([tmp_path / "short.txt"], vocab_folder, tmp_path / "d2", progress=False)
    (tmp_path / "ok.txt").write_text("this line is long enough to be kept as one sequence of tokens , surely .\n")
    prepare([tmp_path / "ok.txt"], vocab_folder, tmp_path / "d3", progress=False)
    with pytest.raises(UserError, match="already holds prepared data"):
        prepare([tmp_path / "ok.txt"], vocab_folder, tmp_path / "d3", progress=False)
    with pytest.raises(UserError, match="does not exist"):
        TokenShards(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no meta.json"):
        TokenShards(tmp_path / "empty")


def test_epoch_batches_cover_everything_under_the_budget():
    lengths = np.random.default_rng(0).integers(12, 200, size=1000)
    batching = Batching(max_tokens=1024, max_sequences=16, window=10)
    first = epoch_batches(lengths, batching, seed=3, epoch=0)
    again = epoch_batches(lengths, batching, seed=3, epoch=0)
    second = epoch_batches(lengths, batching, seed=3, epoch=1)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))  # deterministic
    assert not all(len(a) == len(b) and np.array_equal(a, b) for a, b in zip(first, second))  # reshuffled
    for batches in (first, second):
        rows = np.concatenate(batches)
        assert sorted(rows.tolist()) == list(range(1000))  # each sequence exactly once
        for b in batches:
            assert len(b) <= 16 and (lengths[b].max() * len(b) <= 1024 or len(b) == 1)
    padded = sum(lengths[b].max() * len(b) for b in first)
    assert padded < 1.2 * lengths.sum()  # grouping by length leaves little padding


def test_collate_pads():
    class Fake:
        def __getitem__(self, i):
            return np.arange(i + 2)
    ids, mask = collate(Fake(), np.array([1, 3]), pad_id=0)
    assert ids.tolist() == [[0, 1, 2, 0, 0], [0, 1, 2, 3, 4]] and mask.sum() == 8
