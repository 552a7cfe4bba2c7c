"""evaluate-mlm: masked-LM accuracy and perplexity, beside a unigram model of the training data."""

import json
import math

import numpy as np
import pytest

from distilbert.errors import UserError
from distilbert.tokenizer import Tokenizer
from distilbert.train.evaluate import evaluate_mlm, unigram_log_probs, unigram_loss
from helpers.cli import run

SPECIAL = [0, 1]


def test_unigram_loss_is_the_entropy_of_the_blanks():
    assert unigram_loss([5, 5, 3, 3, 3, 3], SPECIAL) == pytest.approx(math.log(4))  # specials never blanked
    counts = [9, 9, 1, 100]
    p = np.array([1, 100]) / 101
    assert unigram_loss(counts, SPECIAL) == pytest.approx(-(p * np.log(p)).sum())
    # smoothing 1 chooses each token with weight 1/count: every token is blanked equally often
    assert unigram_loss(counts, SPECIAL, smoothing=1.0) == pytest.approx(math.log(2))
    assert unigram_loss(counts, SPECIAL, smoothing=0.7) > unigram_loss(counts, SPECIAL)


def test_unigram_log_probs_are_add_one_smoothed():
    log_p = unigram_log_probs(np.array([7, 7, 0, 2]), vocab_size=5, special_ids=SPECIAL).numpy()
    assert np.isneginf(log_p[SPECIAL]).all()
    np.testing.assert_allclose(np.exp(log_p[2:]), [1 / 5, 3 / 5, 1 / 5])  # counts 0, 2 and (absent) 0, plus one
    with pytest.raises(UserError, match="do not fit a vocabulary of 3"):
        unigram_log_probs(np.ones(4), vocab_size=3, special_ids=SPECIAL)


def test_unigram_baseline_on_the_same_blanks(mlm_checkpoint):
    folder, _ = mlm_checkpoint
    the = Tokenizer.from_pretrained(folder).token_to_id("the")
    counts = np.zeros(30522)
    counts[the] = 10**6
    result = evaluate_mlm(str(folder), ["the " * 20] * 4, counts=counts)
    assert result["masked_tokens"] == 12 and result["unigram_accuracy"] == 1.0
    # add-one: p(the) = (10^6 + 1) / (10^6 + the 30,517 tokens that are not special)
    assert result["unigram_perplexity"] == pytest.approx((10**6 + 30517) / (10**6 + 1))
    assert "unigram_accuracy" not in evaluate_mlm(str(folder), ["the " * 20])


def test_texts_with_nothing_to_mask_are_a_user_error(mlm_checkpoint):
    folder, _ = mlm_checkpoint
    with pytest.raises(UserError, match="no token was masked in 2 texts"):
        evaluate_mlm(str(folder), ["\u2603", "\u2603 \u2603"])  # [UNK] alone: special, never masked
    with pytest.raises(UserError, match="no text to evaluate on"):
        evaluate_mlm(str(folder), ["", "  "])


def test_cli_prints_the_unigram_baseline(tmp_path, mlm_checkpoint):
    folder, _ = mlm_checkpoint
    (tmp_path / "held.txt").write_text("the cat sat on the mat and looked at the dog for a while\n" * 3)
    (tmp_path / "data").mkdir()
    counts = np.ones(30522, dtype=np.int64)
    np.save(tmp_path / "data" / "counts.npy", counts)
    p = run("evaluate-mlm", folder, "--text", tmp_path / "held.txt", "--data", tmp_path / "data")
    assert "unigram model of" in p.stdout and "perplexity 30517.00 on the same tokens" in p.stdout
    result = json.loads(run("evaluate-mlm", folder, "--text", tmp_path / "held.txt", "--data", tmp_path / "data",
                            "--json").stdout)
    assert result["unigram_perplexity"] == pytest.approx(30517)
    assert 0 <= result["unigram_accuracy"] <= 1
