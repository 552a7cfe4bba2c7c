"""The training loop: it learns, it resumes bit for bit, two processes equal one, and bad input is one line."""

import json
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import load_file

from distilbert.errors import UserError
from distilbert.train import checkpointing
from distilbert.train.data import prepare
from distilbert.train.distill import train
from distilbert.train.evaluate import evaluate_mlm
from distilbert.train.plot import plot_run
from distilbert.train.recipe import Recipe
from distilbert.train.student import init_student
from helpers.models import data_file, make_reference, save_reference
from helpers.cli import COMMAND, assert_user_error, environment, run


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny 4-layer BERT teacher, its 2-layer student, and PTB sentences as token shards."""
    root = tmp_path_factory.mktemp("train")
    (root / "vocab").mkdir()
    (root / "vocab" / "vocab.txt").write_bytes(data_file("vocab", "bert-base-uncased-vocab.txt").read_bytes())
    lines = data_file("text", "ptb-valid.txt").read_text().splitlines()[:1200]
    (root / "text.txt").write_text("\n".join(lines) + "\n")
    prepare([root / "text.txt"], root / "vocab", root / "data", max_length=32, workers=2, progress=False)
    save_reference(make_reference("bert", "ForMaskedLM", vocab_size=30522, num_hidden_layers=4), root / "teacher")
    init_student(root / "teacher", root / "student")
    return root


def recipe(setup, out, **changes):
    base = dict(student=str(setup / "student"), teacher=str(setup / "teacher"), data=str(setup / "data"), out=str(out),
                max_steps=20, gradient_accumulation=1, max_tokens=512, max_sequences=32, learning_rate=1e-3,
                checkpoint_every=100, epochs=5)
    base.update(changes)
    return Recipe(**base)


def losses(out):
    return [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()]


def test_a_few_steps_lower_the_loss_and_the_result_is_usable(tmp_path, setup):
    out = tmp_path / "run"
    train(recipe(setup, out, max_steps=30), progress=False)
    values = losses(out)
    assert len(values) == 30 and np.mean(values[-5:]) < np.mean(values[:5])
    record = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert {"loss", "loss_ce", "loss_mlm", "loss_cos", "lr", "grad_norm", "tokens_per_second"} <= set(record)
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    model = transformers.DistilBertForMaskedLM.from_pretrained(out)  # Hugging Face format
    assert model.config.n_layers == 2
    from distilbert.onnx import export

    report = export(out, tmp_path / "onnx", log=lambda line: None)  # and our exporter takes it
    assert max(report["validation"]["worst"].values()) < 1e-4
    png = plot_run(out)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = evaluate_mlm(str(out), (setup / "text.txt").read_text().splitlines()[:50], max_length=32)
    assert 0 <= result["accuracy"] <= 1 and 1 < result["perplexity"] < 1e6 and result["masked_tokens"] > 50


def test_pretraining_without_a_teacher(tmp_path, setup):
    out = tmp_path / "pretrain"
    p = run("pretrain", "--model", setup / "teacher", "--data", setup / "data", "--out", out, "--max-steps", 6,
            "--gradient-accumulation", 1, "--max-tokens", 512)
    assert "trained 6 steps" in p.stdout
    record = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert "loss_ce" not in record and "loss_mlm" in record
    assert transformers.BertForMaskedLM.from_pretrained(out).config.num_hidden_layers == 4


def distill_args(setup, out, *extra):
    return [COMMAND, "distill", "--teacher", setup / "teacher", "--student", setup / "student", "--data", setup / "data",
            "--out", out, "--max-steps", 40, "--gradient-accumulation", 2, "--max-tokens", 512, "--max-sequences", 32,
            "--checkpoint-every", 3, *extra]


def uninterrupted(setup, out, *extra):
    subprocess.run([str(a) for a in distill_args(setup, out, *extra)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, env=environment())


def killed_and_resumed(setup, out):
    """A run killed with SIGKILL at whatever moment follows its first checkpoint, then resumed, each in a process
    of its own. Returns the step it resumed from."""
    p = subprocess.Popen([str(a) for a in distill_args(setup, out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env=environment())
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)  # at whatever moment it is in
    assert p.wait() == -signal.SIGKILL
    assert not (out / "model.safetensors").exists(), "the run finished before it could be killed"
    step = checkpointing.read(out / "checkpoint.pt")["step"]
    uninterrupted(setup, out, "--resume")
    return step


def differences(whole, other) -> list[str]:
    """How two finished runs differ: the weights that are not bit-identical (with the largest difference) and
    the first logged step whose loss differs. Empty when they are the same."""
    a, b = load_file(whole / "model.safetensors"), load_file(other / "model.safetensors")
    assert set(a) == set(b)
    found = [f"{k}: {float((a[k] - b[k]).abs().max()):.3g}" for k in a if not torch.equal(a[k], b[k])]
    if found:
        logs = [[json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()] for run in (whole, other)]
        first = next((x["step"] for x, y in zip(*logs) if x["loss"] != y["loss"]), None)
        found.append(f"first step whose loss differs: {first}")
    return found


def brief(found: list[str]) -> str:
    """The first three weights that differ, and the first step whose loss differs."""
    return "; ".join(found[:-1][:3] + found[-1:])


@pytest.mark.slow
def test_a_killed_run_resumes_bit_identical(tmp_path, setup):
    # every run in a fresh process of its own, so all of them compute with the same threads and settings
    whole = tmp_path / "whole"
    uninterrupted(setup, whole)
    step = killed_and_resumed(setup, tmp_path / "broken")
    found = differences(whole, tmp_path / "broken")
    if found:
        # seen about once in 25 pytest runs. It is the platform, not the resume: in 30 kill-and-resume cycles outside
        # pytest, 2 of the 60 processes computed their own first step with other rounding (loss_ce 0.00183203
        # against 0.00183191): one a run's first process, before any kill; one a resumed process whose checkpoint
        # equalled the other runs'. Cause not found; not MKL's dynamic threads or its reproducibility mode (with
        # MKL_DYNAMIC=FALSE MKL_CBWR=AUTO,STRICT, 1 of 54). So: tell a platform that does not repeat itself from a
        # resume that is wrong
        again = tmp_path / "whole-again"
        uninterrupted(setup, again)
        repeats = not differences(whole, again)
        second = killed_and_resumed(setup, tmp_path / "broken-again")
        found_again = differences(whole, tmp_path / "broken-again")
        if found_again and not repeats:  # the platform itself varies: equalling either uninterrupted run will do
            found_again = found_again if differences(again, tmp_path / "broken-again") else []
        outcome = brief(found_again) if found_again else "equalled an uninterrupted run"
        report = (f"resumed from step {step}: {brief(found)}. An uninterrupted run repeated "
                  f"{'bit for bit' if repeats else 'with differences'}; a second kill (resumed from step {second}) "
                  f"{outcome}")
        assert not found_again, report
        warnings.warn(f"a killed run once resumed to other weights: {report}")


@pytest.mark.slow
def test_two_gloo_processes_give_the_loss_of_one(tmp_path, setup):
    one = tmp_path / "one"
    two = tmp_path / "two"
    common = ["--teacher", setup / "teacher", "--student", setup / "student", "--data", setup / "data",
              "--max-steps", 5, "--max-tokens", 512, "--max-sequences", 32]
    run("distill", *common, "--out", one, "--gradient-accumulation", 2)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "distilbert.cli", "distill", *map(str, common), "--out", str(two), "--gradient-accumulation", "1"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    np.testing.assert_allclose(losses(two), losses(one), rtol=1e-5)
    a, b = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5)


def test_bad_input(tmp_path, setup):
    bare = tmp_path / "bare"
    save_reference(make_reference("bert", "Model", vocab_size=30522), bare)
    with pytest.raises(UserError, match="teacher .* has no masked-LM head"):
        train(recipe(setup, tmp_path / "a", teacher=str(bare)), progress=False)
    wide_vocab = tmp_path / "vocab-student"
    save_reference(make_reference("distilbert", "ForMaskedLM", vocab_size=30600), wide_vocab)
    with pytest.raises(UserError, match=r"vocabulary \(30600\) differs from the teacher's \(30522\)"):
        train(recipe(setup, tmp_path / "b", student=str(wide_vocab)), progress=False)
    narrow = tmp_path / "narrow-student"
    save_reference(make_reference("distilbert", "ForMaskedLM", vocab_size=30522, dim=24), narrow)
    with pytest.raises(UserError, match=r"width \(24\) differs from the teacher's \(39\)"):
        train(recipe(setup, tmp_path / "c", student=str(narrow)), progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no meta.json"):
        train(recipe(setup, tmp_path / "d", data=str(tmp_path / "empty")), progress=False)
    with pytest.raises(UserError, match="does not exist"):
        train(recipe(setup, tmp_path / "e", data=str(tmp_path / "missing")), progress=False)
    # a finished run is never overwritten, and a corrupt checkpoint is reported and left as it is
    out = tmp_path / "run"
    train(recipe(setup, out, max_steps=2), progress=False)
    before = (out / "checkpoint.pt").read_bytes()
    with pytest.raises(UserError, match="already holds a run"):
        train(recipe(setup, out, max_steps=2), progress=False)
    assert (out / "checkpoint.pt").read_bytes() == before
    (out / "checkpoint.pt").write_bytes(before[: len(before) // 2])
    with pytest.raises(UserError, match="corrupt or unreadable"):
        train(recipe(setup, out), resume=True, progress=False)
    assert (out / "checkpoint.pt").read_bytes() == before[: len(before) // 2]
    assert_user_error(run("distill", "--teacher", bare, "--student", setup / "student", "--data", setup / "data",
                          "--out", tmp_path / "f", ok=False), "no masked-LM head")
    assert_user_error(run("distill", "--teacher", setup / "teacher", "--student", setup / "student", "--data",
                          setup / "data", "--out", out, "--resume", ok=False), "corrupt")
    classifier = tmp_path / "classifier"
    save_reference(make_reference("bert", "ForSequenceClassification", vocab_size=30522), classifier)
    assert_user_error(run("init-student", classifier, "--out", tmp_path / "g", ok=False), "no masked-LM head")
    run("init-student", bare, "--out", tmp_path / "bare-student", "--layers", "1")  # a bare encoder: fine-tune it
    assert transformers.DistilBertModel.from_pretrained(tmp_path / "bare-student").config.n_layers == 1
    assert_user_error(run("prepare-data", tmp_path / "nothing.txt", "--tokenizer", setup / "vocab", "--out",
                          tmp_path / "h", ok=False), "does not exist")


def test_resume_refuses_flags_that_differ_from_the_run(tmp_path, setup):
    out = tmp_path / "run"
    args = ["distill", "--teacher", setup / "teacher", "--student", setup / "student", "--data", setup / "data",
            "--out", out, "--max-steps", 2, "--gradient-accumulation", 1, "--max-tokens", 512]
    run(*args)
    lines = (out / "log.jsonl").read_text()
    assert_user_error(run(*args, "--resume", "--learning-rate", 0.1, ok=False), "learning_rate (0.1; the run has 0.0005)")
    assert_user_error(run(*args[:-2], "--max-tokens", 256, "--resume", ok=False), "max_tokens")
    run(*args, "--resume")  # the same flags: continues (here: nothing left to do)
    assert (out / "log.jsonl").read_text() == lines


@pytest.mark.slow
def test_the_loop_overfits_a_tiny_corpus(tmp_path):
    """Eight sentences seen again and again: the masked-LM loss falls to near zero, far under a unigram model's.

    A loop whose masking, loss, schedule or optimiser step is wrong cannot memorise even this."""
    from distilbert.train.evaluate import unigram_loss
    from distilbert.train.student import new_model

    (tmp_path / "vocab").mkdir()
    (tmp_path / "vocab" / "vocab.txt").write_bytes(data_file("vocab", "bert-base-uncased-vocab.txt").read_bytes())
    lines = [l for l in data_file("text", "ptb-valid.txt").read_text().splitlines() if 12 <= len(l.split()) <= 20][:8]
    (tmp_path / "text.txt").write_text("\n".join(lines) + "\n")
    meta = prepare([tmp_path / "text.txt"], tmp_path / "vocab", tmp_path / "data", max_length=32, workers=1,
                   progress=False)
    assert meta["sequences"] == 8
    new_model(tmp_path / "model", tmp_path / "vocab", "bert", dim=128, n_layers=2, n_heads=2, max_position_embeddings=32)
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # memorising, not generalising
    (tmp_path / "model" / "config.json").write_text(json.dumps(config))
    train(Recipe(student=str(tmp_path / "model"), data=str(tmp_path / "data"), out=str(tmp_path / "run"),
                 alpha_ce=0.0, alpha_cos=0.0, mlm_smoothing=None, learning_rate=3e-3, warmup=0.0,
                 gradient_accumulation=1, max_tokens=1024, max_sequences=8, max_steps=300, epochs=1000,
                 checkpoint_every=1000), progress=False)
    mlm = [json.loads(line)["loss_mlm"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    counts = np.load(tmp_path / "data" / "counts.npy")
    floor = unigram_loss(counts, [0, 100, 101, 102, 103])
    assert np.mean(mlm[:5]) > floor  # it starts above what token frequencies alone give
    assert np.mean(mlm[-20:]) < 0.1, mlm[-20:]  # about 0.05 after 300 steps
