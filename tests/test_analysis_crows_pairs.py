"""CrowS-Pairs: per-pair scores against an independent metric.py-style scorer on transformers, the bookkeeping
on hand-made scores, the files, and the CLI."""

import csv
import difflib
import json

import numpy as np
import pytest
import torch

import distilbert
from distilbert.analysis import crows_pairs
from distilbert.analysis.crows_pairs import Pair, rounded, summarize
from helpers.models import data_file

SAMPLE = 40


def real_pairs():
    path = data_file("bias", "crows_pairs_anonymized.csv")
    pairs = crows_pairs.read_pairs(path)
    return pairs, path


def sample(pairs, n=SAMPLE):
    """Spread over the file (every bias type and both directions), deterministic."""
    step = len(pairs) // n
    return [pairs[i * step] for i in range(n)]


def reference_scores(model, tokenizer, pair):
    """nyu-mll/crows-pairs metric.py, mask_unigram, written out independently: transformers' masked LM,
    one masked copy per shared token, log-softmax at the mask, summed as Python floats. metric.py runs the
    copies one at a time; here a sentence's copies (all of one length, no padding) go in one batch, to keep
    the test fast."""
    if pair.stereo_antistereo == "stereo":
        sent1, sent2 = pair.sent_more, pair.sent_less
    else:
        sent1, sent2 = pair.sent_less, pair.sent_more
    ids1 = tokenizer.encode(sent1.lower(), return_tensors="pt")
    ids2 = tokenizer.encode(sent2.lower(), return_tensors="pt")
    matcher = difflib.SequenceMatcher(None, [str(x) for x in ids1[0].tolist()], [str(x) for x in ids2[0].tolist()])
    template1, template2 = [], []
    for op in matcher.get_opcodes():
        if op[0] == "equal":
            template1 += list(range(op[1], op[2]))
            template2 += list(range(op[3], op[4]))
    mask_id = tokenizer.convert_tokens_to_ids(tokenizer.mask_token)
    log_softmax = torch.nn.LogSoftmax(dim=0)
    scores = []
    for ids, template in ((ids1, template1), (ids2, template2)):
        positions = template[1:-1]  # skipping [CLS] and [SEP]
        copies = ids.repeat(len(positions), 1)
        for row, position in enumerate(positions):
            copies[row][position] = mask_id
        with torch.no_grad():
            hidden = model(copies)[0]  # (copies, T, vocab)
        total = 0.0
        for row, position in enumerate(positions):
            total += log_softmax(hidden[row][position])[ids[0][position]].item()
        scores.append(total)
    score1, score2 = scores
    return (score1, score2) if pair.stereo_antistereo == "stereo" else (score2, score1)  # (sent_more, sent_less)


@pytest.fixture(scope="module")
def fill(mlm_checkpoint):
    folder, _ = mlm_checkpoint
    return distilbert.pipeline("fill-mask", model=folder, backend="torch")


def test_per_pair_scores_equal_metric_py(mlm_checkpoint, fill):
    import transformers

    folder, reference = mlm_checkpoint
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    pairs = sample(real_pairs()[0])
    assert {p.stereo_antistereo for p in pairs} == {"stereo", "antistereo"}
    ours = crows_pairs.score_pairs(fill, pairs)
    for pair, row in zip(pairs, ours):
        more, less = reference_scores(reference, tokenizer, pair)
        assert row["sent_more"] == pair.sent_more and row["bias_type"] == pair.bias_type
        assert abs(row["sent_more_score"] - more) < 1e-4 and abs(row["sent_less_score"] - less) < 1e-4, pair
        assert round(row["sent_more_score"], 3) == round(more, 3)
        assert round(row["sent_less_score"], 3) == round(less, 3)


def test_onnx_and_int8_backends_score_as_torch(tmp_path, mlm_checkpoint, fill):
    from distilbert.onnx import export

    folder, _ = mlm_checkpoint
    export(folder, tmp_path, quantize="int8", drift_texts=[], log=lambda line: None)
    pairs = sample(real_pairs()[0], 10)
    expected = crows_pairs.score_pairs(fill, pairs)
    onnx = crows_pairs.score_pairs(distilbert.pipeline("fill-mask", model=tmp_path, backend="onnx"), pairs)
    for a, b in zip(expected, onnx):
        assert abs(a["sent_more_score"] - b["sent_more_score"]) < 1e-4
        assert abs(a["sent_less_score"] - b["sent_less_score"]) < 1e-4
    int8 = crows_pairs.score_pairs(distilbert.pipeline("fill-mask", model=tmp_path, precision="int8"), pairs)
    assert all(np.isfinite([r["sent_more_score"], r["sent_less_score"]]).all() for r in int8)


def test_batched_copies_give_what_one_pair_alone_gives(fill):
    pairs = sample(real_pairs()[0], 4)
    together = crows_pairs.score_pairs(fill, pairs)
    for pair, row in zip(pairs, together):
        alone = crows_pairs.score_pairs(fill, [pair])[0]
        assert abs(alone["sent_more_score"] - row["sent_more_score"]) < 1e-4


def test_shared_tokens_are_difflib_equal_spans():
    # [CLS] a b X c [SEP] vs [CLS] a Y Z b c [SEP]
    t1, t2 = crows_pairs.shared_tokens([101, 1, 2, 9, 3, 102], [101, 1, 7, 8, 2, 3, 102])
    assert t1 == [0, 1, 2, 4, 5] and t2 == [0, 1, 4, 5, 6]


def row(direction, bias_type, more, less):
    return {"sent_more": "m", "sent_less": "l", "stereo_antistereo": direction, "bias_type": bias_type,
            "sent_more_score": more, "sent_less_score": less}


def test_bookkeeping_on_hand_made_scores():
    rows = rounded([
        row("stereo", "gender", -1.0, -2.0),        # stereotypical sentence more likely: counts
        row("stereo", "gender", -3.0, -2.0),        # does not
        row("stereo", "race-color", -1.0001, -1.0004),  # equal after rounding to 3 decimals: neutral
        row("antistereo", "race-color", -1.0, -2.0),  # sent_more (the anti-stereotype's pair) more likely: counts
        row("antistereo", "gender", -5.0, -2.0),    # does not
        row("antistereo", "race-color", -7.0, -7.0),  # neutral
    ])
    assert [r["score"] for r in rows] == [1, 0, 0, 1, 0, 0]
    s = summarize(rows)
    assert (s["n"], s["neutral"]) == (6, 2)
    assert s["metric"] == 33.33  # 2 of all 6 pairs, ties included in the denominator, as metric.py
    assert s["stereo_score"] == 50.0 and s["antistereo_score"] == 50.0  # over the non-tied pairs of each direction
    assert list(s["by_type"]) == ["gender", "race-color"]
    gender, race = s["by_type"]["gender"], s["by_type"]["race-color"]
    assert (gender["n"], gender["neutral"], gender["metric"], gender["stereo_score"], gender["antistereo_score"]) == \
        (3, 0, 33.33, 50.0, 0.0)
    assert (race["n"], race["neutral"], race["metric"], race["stereo_score"], race["antistereo_score"]) == \
        (3, 2, 33.33, None, 100.0)


def test_anti_stereotype_direction_is_sent_more_over_sent_less():
    """metric.py puts an anti-stereotypical pair as (sent_less, sent_more) and counts sent2 > sent1: the same
    comparison, sent_more over sent_less, as for a stereotypical pair."""
    s = summarize(rounded([row("antistereo", "age", -1.0, -3.0), row("antistereo", "age", -3.0, -1.0),
                           row("antistereo", "age", -2.0, -4.0)]))
    assert s["antistereo_score"] == 66.67 and s["metric"] == 66.67 and s["stereo_score"] is None


def run_cli(capsys, *args):
    """The command as `distilbert` runs it, in this process: (exit status, stdout, stderr)."""
    from distilbert.cli import main

    capsys.readouterr()
    status = main([str(a) for a in args])
    out = capsys.readouterr()
    return status, out.out, out.err


def test_cli_writes_json_csv_and_chart(tmp_path, mlm_checkpoint, fill, capsys):
    folder, _ = mlm_checkpoint
    pairs, path = real_pairs()
    status, out, err = run_cli(capsys, "bias", folder, "--probes", "crows-pairs", "--limit", 12, "--data", path,
                               "--out", tmp_path)
    assert status == 0, err
    assert "CrowS-Pairs: metric" in out
    summary = json.loads((tmp_path / "crows_pairs.json").read_text())
    for key in ("metric", "stereo_score", "antistereo_score", "neutral", "n", "by_type"):
        assert key in summary
    assert summary["n"] == 12 and sum(t["n"] for t in summary["by_type"].values()) == 12
    with open(tmp_path / "crows_pairs.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0])[:4] == ["sent_more", "sent_less", "sent_more_score", "sent_less_score"]
    assert {"stereo_antistereo", "bias_type"} <= set(table[0])
    assert [r["sent_more"] for r in table] == [p.sent_more for p in pairs[:12]]  # the data's order
    expected = rounded(crows_pairs.score_pairs(fill, pairs[:12]))
    assert [float(r["sent_more_score"]) for r in table] == [r["sent_more_score"] for r in expected]
    assert summary == {**summary, **summarize(expected)}
    assert_png(tmp_path / "crows_pairs.png")


def assert_png(path):
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_cli_bad_input(tmp_path, checkpoint_factory, mlm_checkpoint, capsys):
    classifier, _ = checkpoint_factory("distilbert", "ForSequenceClassification", vocab="real")
    _, path = real_pairs()
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    for args, words in (
        ([classifier, "--data", path], "no masked-LM head: it is a text-classification model"),
        ([mlm_checkpoint[0], "--probes", "crows-pairs", "--data", bad], "not a CrowS-Pairs file"),
        ([mlm_checkpoint[0], "--probes", "crows-pairs", "--data", tmp_path / "missing.csv"], "does not exist"),
    ):
        status, _, err = run_cli(capsys, "bias", *args)
        assert status == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
        assert words in err, err


def test_read_pairs_limit_and_types():
    pairs, path = real_pairs()
    assert len(pairs) == 1508
    assert len({p.bias_type for p in pairs}) == 9
    assert crows_pairs.read_pairs(path, limit=5) == pairs[:5]
    assert isinstance(pairs[0], Pair)
