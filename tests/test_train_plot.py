"""plot-run: a PNG of a run's losses, with the masked-LM loss of a unigram model of its data."""

import json

import numpy as np
import pytest

from distilbert.errors import UserError
from distilbert.tokenizer import Tokenizer
from distilbert.train.evaluate import unigram_loss
from distilbert.train.plot import _unigram_floor, plot_run
from helpers.cli import run as command

PNG = b"\x89PNG\r\n\x1a\n"


def write_run(folder, steps=5, data=None, smoothing=0.7):
    folder.mkdir()
    records = [{"step": i + 1, "epoch": 0, "lr": 1e-4 * (i + 1), "grad_norm": 1.0, "tokens_per_second": 100.0,
                "loss": 10.0 - i, "loss_mlm": 5.0 - i / 2} for i in range(steps)]
    (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if data is not None:
        (folder / "recipe.json").write_text(json.dumps({"data": str(data), "mlm_smoothing": smoothing}))
    return folder


@pytest.fixture()
def data(tmp_path, mlm_checkpoint):
    """A data folder as prepare-data leaves it, as far as the plot reads it: counts and the tokenizer."""
    folder, _ = mlm_checkpoint
    data = tmp_path / "data"
    Tokenizer.from_pretrained(folder).save(data / "tokenizer")
    counts = np.random.default_rng(0).integers(0, 1000, 30522)
    np.save(data / "counts.npy", counts)
    return data, counts


def test_plot_is_a_png_beside_the_run_or_where_asked(tmp_path):
    run = write_run(tmp_path / "run")
    assert plot_run(run) == run / "losses.png" and (run / "losses.png").read_bytes()[:8] == PNG
    assert plot_run(run, tmp_path / "elsewhere.png").read_bytes()[:8] == PNG
    assert "wrote" in command("plot-run", run, "--output", tmp_path / "cli.png").stdout
    assert (tmp_path / "cli.png").read_bytes()[:8] == PNG


def test_the_unigram_line_is_that_of_the_runs_data_and_masking(tmp_path, data):
    folder, counts = data
    special = Tokenizer.from_pretrained(folder / "tokenizer").all_special_ids
    smoothed = write_run(tmp_path / "smoothed", data=folder, smoothing=0.7)
    uniform = write_run(tmp_path / "uniform", data=folder, smoothing=None)
    assert _unigram_floor(smoothed) == pytest.approx(unigram_loss(counts, special, 0.7))
    assert _unigram_floor(uniform) == pytest.approx(unigram_loss(counts, special))
    assert _unigram_floor(write_run(tmp_path / "no-recipe")) is None
    assert _unigram_floor(write_run(tmp_path / "moved", data=tmp_path / "gone")) is None
    assert plot_run(smoothed).read_bytes()[:8] == PNG


def test_not_a_run(tmp_path):
    with pytest.raises(UserError, match="no log.jsonl"):
        plot_run(tmp_path)
    (tmp_path / "log.jsonl").write_text("")
    with pytest.raises(UserError, match="is empty"):
        plot_run(tmp_path)
