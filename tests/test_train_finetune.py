"""Fine-tuning: every task trains from a checkpoint without its head, the result is a transformers model with
the same outputs that our pipelines and exporter take, a killed run resumes bit for bit, bad input is one line."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import load_file

from distilbert.checkpoint import load
from distilbert.errors import UserError
from distilbert.train.finetune import FinetuneRecipe, finetune
from helpers.models import data_file, make_reference, save_reference
from helpers.cli import assert_user_error

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(os.path.dirname(os.path.dirname(__file__))),
       "OMP_NUM_THREADS": "1"}


def cli(*args, ok=True, timeout=300):
    p = subprocess.run([sys.executable, "-m", "distilbert.cli", *map(str, args)], capture_output=True, text=True,
                       env=ENV, timeout=timeout)
    if ok:
        assert p.returncode == 0, p.stderr[-3000:]
    return p


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Tiny random masked LMs with the real vocabulary, and slices of SST-2, CoNLL-2003 and SQuAD."""
    root = tmp_path_factory.mktemp("finetune")
    data_file("vocab", "bert-base-uncased-vocab.txt")
    save_reference(make_reference("distilbert", "ForMaskedLM", vocab_size=30522), root / "distilbert")
    save_reference(make_reference("bert", "ForMaskedLM", vocab_size=30522), root / "bert")
    lines = data_file("glue", "SST-2", "train.tsv").read_text().splitlines()
    (root / "train.tsv").write_text("\n".join(lines[:65]) + "\n")
    (root / "dev.tsv").write_text("\n".join(lines[:1] + lines[500:532]) + "\n")
    sentences = data_file("ner", "conll2003", "valid.txt").read_text().split("\n\n")
    (root / "ner-train.txt").write_text("\n\n".join(sentences[:48]) + "\n")
    (root / "ner-dev.txt").write_text("\n\n".join(sentences[48:72]) + "\n")
    squad = json.loads(data_file("squad", "dev-v1.1.json").read_text())
    article = squad["data"][0]
    train = {"version": "1.1", "data": [{"title": article["title"], "paragraphs": article["paragraphs"][:3]}]}
    dev = {"version": "1.1", "data": [{"title": article["title"], "paragraphs": article["paragraphs"][3:5]}]}
    (root / "squad-train.json").write_text(json.dumps(train))
    (root / "squad-dev.json").write_text(json.dumps(dev))
    stsb = data_file("glue", "STS-B", "train.tsv").read_text().splitlines()
    (root / "stsb-train.tsv").write_text("\n".join(stsb[:49]) + "\n")
    (root / "stsb-dev.tsv").write_text("\n".join(stsb[:1] + stsb[100:117]) + "\n")
    for name, part in (("multi-train.jsonl", lines[1:49]), ("multi-dev.jsonl", lines[500:517])):  # SST-2, 3 labels
        rows = [line.split("\t") for line in part]
        (root / name).write_text("".join(json.dumps({"text": t, "label": [["negative", "positive"][int(y)]] +
                                                     (["long"] if len(t) > 40 else [])}) + "\n" for t, y in rows))
    return root


def sst2(setup, out, **changes):
    settings = dict(model=str(setup / "distilbert"), glue="sst2", train=str(setup / "train.tsv"),
                    validation=str(setup / "dev.tsv"), out=str(out), epochs=2, batch_size=8, learning_rate=1e-3,
                    log_every=1)
    settings.update(changes)
    return FinetuneRecipe(**settings)


def same_outputs(folder, hf_class, task, texts, pairs=None, keys=("logits",)):
    """transformers' class on the folder gives our model's outputs, on a padded batch."""
    ours, _, _ = load(folder, task)
    theirs = getattr(transformers, hf_class).from_pretrained(folder).eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    enc = tok(texts, pairs, padding=True, return_tensors="pt")
    with torch.no_grad():
        a = ours(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids") if "token_type_ids" in enc and
                 ours.config.type_vocab_size else None)
        b = theirs(**{k: v for k, v in enc.items() if k != "token_type_ids" or ours.config.type_vocab_size})
    for key in keys:
        mask = enc["attention_mask"].bool() if a[key].dim() > 2 or key != "logits" else slice(None)
        torch.testing.assert_close(a[key][mask], b[key][mask], rtol=1e-5, atol=1e-5)


def test_text_classification_end_to_end(tmp_path, setup):
    out = tmp_path / "sst2"
    p = cli("finetune", "--model", setup / "distilbert", "--glue", "sst2", "--train", setup / "train.tsv",
            "--validation", setup / "dev.tsv", "--out", out, "--epochs", 2, "--batch-size", 8, "--learning-rate", 1e-3)
    assert "best accuracy" in p.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"} and config["architectures"] == [
        "DistilBertForSequenceClassification"]
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval_accuracy" in r]
    assert len(evals) == 2 and all("loss" in r for r in records if "eval_accuracy" not in r)
    results = json.loads((out / "eval_results.json").read_text())
    assert results["best"]["accuracy"] == max(e["eval_accuracy"] for e in evals)
    assert not (out / "best").exists() and list((out / "tensorboard").glob("events.*"))
    same_outputs(out, "DistilBertForSequenceClassification", "text-classification", ["a fine film", "dull ."],
                 None)
    from distilbert import pipeline

    result = pipeline("text-classification", model=out, backend="torch")("a charming , often affecting journey")
    assert result[0]["label"] in ("negative", "positive")
    assert cli("plot-run", out).stdout.startswith("wrote")
    assert (out / "losses.png").read_bytes()[:4] == b"\x89PNG"
    cli("export", out, tmp_path / "onnx")
    assert (tmp_path / "onnx" / "onnx" / "model.onnx").is_file()  # the hub layout: graphs under onnx/
    # the pipelines score the export as training scored the model
    scored = json.loads(cli("evaluate", tmp_path / "onnx", "--glue", "sst2", "--data", setup / "dev.tsv", "--json").stdout)
    assert scored["accuracy"] == pytest.approx(results["best"]["accuracy"])


def test_token_classification_on_conll(tmp_path, setup):
    out = tmp_path / "ner"
    result = finetune(FinetuneRecipe(model=str(setup / "bert"), task="token-classification",
                                     train=str(setup / "ner-train.txt"), validation=str(setup / "ner-dev.txt"),
                                     out=str(out), epochs=1, batch_size=8, learning_rate=1e-3), progress=False)
    assert {"overall_f1", "overall_precision", "overall_recall", "overall_accuracy"} <= set(result["best"])
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"]["0"] == "O" and len(config["id2label"]) == 9
    same_outputs(out, "BertForTokenClassification", "token-classification", ["EU rejects German call", "Peter ."])
    from distilbert import pipeline

    # every token with its tag (none left out as "O"): our pipeline on the result is transformers' on it
    text = "EU rejects German call"
    ours = pipeline("token-classification", model=out, backend="torch")(text, ignore_labels=[])
    theirs = transformers.pipeline("token-classification", model=str(out))(text, ignore_labels=[])
    assert len(ours) == len(transformers.AutoTokenizer.from_pretrained(out).tokenize(text)) > 0
    without_score = lambda found: [{k: v for k, v in e.items() if k != "score"} for e in found]  # noqa: E731
    assert without_score(ours) == without_score(theirs)
    np.testing.assert_allclose([e["score"] for e in ours], [float(e["score"]) for e in theirs], rtol=1e-4)


def test_batches_at_random_as_the_trainer_draws_them(tmp_path, setup):
    out = tmp_path / "ner"
    cli("finetune", "--model", setup / "distilbert", "--task", "token-classification", "--train",
        setup / "ner-train.txt", "--validation", setup / "ner-dev.txt", "--out", out, "--epochs", 1,
        "--batch-size", 8, "--no-group-by-length", "--log-every", 1)
    assert json.loads((out / "recipe.json").read_text())["group_by_length"] is False
    assert len((out / "log.jsonl").read_text().splitlines()) == 6 + 1  # 45 sentences: 6 batches, one evaluation


def test_question_answering_on_squad(tmp_path, setup):
    out = tmp_path / "qa"
    result = finetune(FinetuneRecipe(model=str(setup / "distilbert"), task="question-answering",
                                     train=str(setup / "squad-train.json"), validation=str(setup / "squad-dev.json"),
                                     out=str(out), epochs=1, batch_size=8, max_length=64, doc_stride=16,
                                     learning_rate=1e-3), progress=False)
    assert set(result["best"]) >= {"exact_match", "f1"} and 0 <= result["best"]["f1"] <= 100
    same_outputs(out, "DistilBertForQuestionAnswering", "question-answering", ["who won?", "when"],
                 ["Denver won the game.", "In 2016 ."], keys=("start_logits", "end_logits"))
    from distilbert import pipeline

    context = "Denver won."
    answer = pipeline("question-answering", model=out, backend="torch")(question="who won?", context=context)
    assert set(answer) == {"score", "start", "end", "answer"} and 0 < answer["score"] <= 1
    assert answer["answer"] and context[answer["start"] : answer["end"]] == answer["answer"]


def test_question_answering_on_squad_v2(tmp_path, setup):
    """Questions without an answer train towards [CLS] and are scored as v2.0's official script does."""
    data = {}
    for name in ("train", "dev"):
        squad = json.loads((setup / f"squad-{name}.json").read_text())
        squad["version"] = "v2.0"
        for paragraph in squad["data"][0]["paragraphs"]:
            for k, qa in enumerate(paragraph["qas"]):
                if k % 3 == 0:
                    qa.update(answers=[], is_impossible=True)
        data[name] = tmp_path / f"v2-{name}.json"
        data[name].write_text(json.dumps(squad))
    recipe = FinetuneRecipe(model=str(setup / "distilbert"), task="question-answering", train=str(data["train"]),
                            validation=str(data["dev"]), out=str(tmp_path / "qa"), epochs=1, batch_size=8,
                            max_length=64, doc_stride=16, learning_rate=1e-3)
    result = finetune(recipe, progress=False)
    assert {"exact", "f1", "HasAns_f1", "NoAns_f1", "HasAns_total", "NoAns_total"} <= set(result["best"])
    assert result["best"]["NoAns_total"] > 0 and result["best"]["HasAns_total"] > 0


def test_distillation_during_fine_tuning_and_a_teacher_that_does_not_fit(tmp_path, setup):
    teacher = tmp_path / "teacher"
    finetune(sst2(setup, teacher, epochs=1), progress=False)
    student = tmp_path / "student"
    finetune(sst2(setup, student, epochs=1, teacher=str(teacher), temperature=3.0), progress=False)
    record = json.loads((student / "log.jsonl").read_text().splitlines()[0])
    assert {"loss_task", "loss_distil"} <= set(record)
    with pytest.raises(UserError, match="labels .* differ"):
        finetune(sst2(setup, tmp_path / "x", glue=None, text_column="sentence", teacher=str(teacher)), progress=False)
    with pytest.raises(UserError, match="is a fill-mask model"):
        finetune(sst2(setup, tmp_path / "y", teacher=str(setup / "bert")), progress=False)


def test_a_sentence_transformers_folder_of_a_bare_encoder_gets_a_head(tmp_path, setup):
    st = save_reference(make_reference("bert", "Model", vocab_size=30522, seed=3), tmp_path / "st")
    (st / "1_Pooling").mkdir()
    (st / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 39,
                                                                "pooling_mode_mean_tokens": True}))
    (st / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (st / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 256, "do_lower_case": False}))
    out = tmp_path / "out"
    # a learning rate that moves no weight: what training starts from is what the folder holds
    finetune(sst2(setup, out, model=str(st), epochs=1, learning_rate=1e-12), progress=False)
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    before, after = load_file(st / "model.safetensors"), load_file(out / "model.safetensors")
    assert any(k.startswith("pooler.") for k in before) and all(f"bert.{k}" in after for k in before)
    for key, value in before.items():  # the pooler too: BERT's classification head reads it
        torch.testing.assert_close(after[f"bert.{key}"], value, rtol=0, atol=1e-9)
    same_outputs(out, "BertForSequenceClassification", "text-classification", ["a fine film", "dull ."])


def test_early_stopping_keeps_the_best_evaluation(tmp_path, setup):
    out = tmp_path / "early"
    # a learning rate too small to move any prediction: the first evaluation stays the best
    p = cli("finetune", "--model", setup / "distilbert", "--glue", "sst2", "--train", setup / "train.tsv",
            "--validation", setup / "dev.tsv", "--out", out, "--epochs", 2, "--batch-size", 8, "--learning-rate", 1e-12,
            "--eval-steps", 1, "--early-stopping", 2, "--log-every", 1)
    assert "early stopping: no better accuracy in 2 evaluations" in p.stdout + p.stderr
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "eval_accuracy" in r] == [1, 2, 3]  # of 16 steps
    assert max(r["step"] for r in records) == 3
    results = json.loads((out / "eval_results.json").read_text())
    assert results["best"]["step"] == 1 and (out / "config.json").exists()


def test_a_killed_run_resumes_bit_identical(tmp_path, setup):
    args = ["finetune", "--model", setup / "distilbert", "--glue", "sst2", "--train", setup / "train.tsv",
            "--validation", setup / "dev.tsv", "--epochs", 3, "--batch-size", 4, "--checkpoint-every", 1,
            "--learning-rate", 1e-3, "--log-every", 1]
    whole = tmp_path / "whole"
    cli(*args, "--out", whole)
    broken = tmp_path / "broken"
    p = subprocess.Popen([sys.executable, "-m", "distilbert.cli", *map(str, args), "--out", str(broken)], env=ENV,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and p.poll() is None:
        log = broken / "log.jsonl"
        if log.exists() and len(log.read_text().splitlines()) >= 20:  # past the first evaluation
            break
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    assert p.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (broken / "config.json").exists()
    cli(*args, "--out", broken, "--resume")
    a, b = load_file(whole / "model.safetensors"), load_file(broken / "model.safetensors")
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    logged = lambda out: [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]  # noqa: E731
    assert [r["step"] for r in logged(broken)] == [r["step"] for r in logged(whole)]  # no line twice
    assert_user_error(cli(*args, "--out", broken, "--resume", "--seed", 7, ok=False), "seed (7; the run has 42)")
    assert_user_error(cli(*args, "--out", broken, "--resume", "--no-group-by-length", ok=False), "group_by_length")


def test_bad_input(tmp_path, setup):
    out = tmp_path / "done"
    finetune(sst2(setup, out, epochs=1), progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    p = cli("finetune", "--model", setup / "distilbert", "--glue", "sst2", "--train", setup / "train.tsv",
            "--validation", setup / "dev.tsv", "--out", out, ok=False)
    assert_user_error(p, "already holds a finished model", "--overwrite")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    bad = tmp_path / "bad.tsv"
    bad.write_text("sentence\tlabel\ngood\t1\nbad\t3\n")
    assert_user_error(cli("finetune", "--model", setup / "distilbert", "--glue", "sst2", "--train", setup / "train.tsv",
                          "--validation", bad, "--out", tmp_path / "a", ok=False), "bad.tsv line 3", "'3'")
    table = tmp_path / "t.csv"
    table.write_text("text,label\ngood,pos\nbad,neg\n")
    other = tmp_path / "v.csv"
    other.write_text("text,label\nfine,neutral\n")
    assert_user_error(cli("finetune", "--model", setup / "distilbert", "--train", table, "--validation", other,
                          "--out", tmp_path / "b", ok=False), "'neutral' is not one of the labels neg, pos")
    assert_user_error(cli("finetune", "--model", setup / "distilbert", "--train", table, "--validation", other,
                          "--label-column", "stars", "--out", tmp_path / "c", ok=False), "no label column 'stars'")
    assert_user_error(cli("finetune", "--model", setup / "distilbert", "--train", table, "--validation", table,
                          "--precision", "fp16", "--out", tmp_path / "d", ok=False), "fp16 needs a CUDA GPU")
    assert not (tmp_path / "d" / "config.json").exists()


OLD_MODEL = {"config.json": "old", "model.safetensors": "old", "pytorch_model.bin": "old", "vocab.txt": "old"}
NEW_MODEL = {"config.json": "new", "model.safetensors": "new", "vocab.txt": "new", "tokenizer.json": "new"}


@pytest.mark.parametrize("cut", range(len(NEW_MODEL) + 1))
def test_the_best_model_never_lands_beside_an_old_config(tmp_path, monkeypatch, cut):
    """--overwrite over a finished model: the move of the best model into --out, stopped at each of its renames
    (a full disk, a kill), leaves the old model, the new one, or no config.json, never new weights beside the
    old config.json; run again (as a resumed run does), it finishes the move."""
    from distilbert.train.finetune import BEST, finish_output

    out = tmp_path / "out"
    (out / BEST).mkdir(parents=True)
    for name, version in OLD_MODEL.items():
        (out / name).write_text(version)
    for name, version in NEW_MODEL.items():
        (out / BEST / name).write_text(version)

    def one_model():
        """A config.json is read with the files beside it: all of one version (the stale .bin only with the old)."""
        if (out / "config.json").exists():
            version = (out / "config.json").read_text()
            beside = {p.name: p.read_text() for p in out.iterdir() if p.name in {*OLD_MODEL, *NEW_MODEL}}
            assert set(beside.values()) == {version}, beside

    real, renames = os.replace, []

    def replace(source, target):
        one_model()
        if len(renames) == cut:
            raise OSError(28, "No space left on device")
        renames.append(target)
        real(source, target)
        one_model()

    monkeypatch.setattr(os, "replace", replace)
    best = {"step": 1, "accuracy": 0.5}
    if cut < len(NEW_MODEL):
        with pytest.raises(OSError):
            finish_output(out, None, best, [best], "accuracy")
        one_model()
        assert not (out / "config.json").exists()  # stopped inside the move: no model rather than a mixed one
    cut = -1
    finish_output(out, None, best, [best], "accuracy")
    assert {p.name: p.read_text() for p in out.iterdir() if p.name != "eval_results.json"} == NEW_MODEL
    assert renames[-1] == out / "config.json"


def test_glue_command_fine_tunes_every_task_found(tmp_path, setup):
    glue = tmp_path / "glue"
    (glue / "SST-2").mkdir(parents=True)
    (glue / "SST-2" / "train.tsv").write_bytes((setup / "train.tsv").read_bytes())
    (glue / "SST-2" / "dev.tsv").write_bytes((setup / "dev.tsv").read_bytes())
    (glue / "RTE").mkdir()
    (glue / "RTE" / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n")  # no train.tsv
    out = tmp_path / "out"
    p = cli("glue", setup / "distilbert", "--data-dir", glue, "--out", out, "--tasks", "sst2", "rte", "--epochs", 1,
            "--batch-size", 16, "--learning-rate", 1e-3)
    assert "missing data, skipped: rte" in p.stdout
    header, ours, distilbert, bert = p.stdout.split("fine-tuning")[-1].splitlines()[-5:-1]
    assert "SST2" in header and distilbert.split()[-1] == "91.3" and bert.split()[-1] == "92.7"
    results = json.loads((out / "glue_results.json").read_text())
    assert results["missing"] == ["rte"] and 0 <= results["scores"]["sst2"] <= 100
    assert (out / "glue.png").read_bytes()[:4] == b"\x89PNG"
    again = cli("glue", setup / "distilbert", "--data-dir", glue, "--out", out, "--tasks", "sst2")  # reuses the run
    assert "fine-tuning" not in again.stdout


@pytest.mark.slow
def test_two_gloo_processes_train_as_one(tmp_path, setup):
    common = ["finetune", "--model", setup / "distilbert", "--glue", "sst2", "--train", setup / "train.tsv",
              "--validation", setup / "dev.tsv", "--epochs", 1, "--batch-size", 4, "--learning-rate", 1e-3,
              "--log-every", 1]
    cli(*common, "--out", tmp_path / "one", "--gradient-accumulation", 2)
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "distilbert.cli", *map(str, common), "--out", str(tmp_path / "two")],
                       capture_output=True, text=True, env=ENV, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    losses = lambda out: [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()  # noqa: E731
                          if "loss" in line]
    np.testing.assert_allclose(losses(tmp_path / "two"), losses(tmp_path / "one"), rtol=1e-5)
    a, b = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5)


SPY = """
import os, pathlib, shutil, sys
out, rank = os.environ["SPY_OUT"], os.environ["RANK"]
def spied(name, real):
    def call(path, *args, **kwargs):
        if os.path.abspath(str(path)).startswith(out):
            with open(os.environ["SPY_LOG"], "a") as log:
                log.write(f"{rank} {name} {path}\\n")
        return real(path, *args, **kwargs)
    return call
shutil.rmtree = spied("rmtree", shutil.rmtree)
pathlib.Path.unlink = spied("unlink", pathlib.Path.unlink)
pathlib.Path.mkdir = spied("mkdir", pathlib.Path.mkdir)
from distilbert.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_overwrite_under_torchrun_leaves_the_output_folder_to_rank_0(tmp_path, setup):
    """Two processes over a finished run with --overwrite: rank 0 alone removes and creates in --out (others wait),
    and the new run finishes there."""
    out = tmp_path / "out"
    (out / "tensorboard").mkdir(parents=True)
    (out / "tensorboard" / "events").write_text("old")
    (out / "best").mkdir()
    (out / "best" / "config.json").write_text("{}")
    (out / "log.jsonl").write_text('{"step": 1, "loss": 99.0}\n')
    (out / "config.json").write_bytes((setup / "distilbert" / "config.json").read_bytes())
    spy = tmp_path / "spy.py"
    spy.write_text(SPY)
    log = tmp_path / "spy.log"
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(spy),
                        "finetune", "--model", str(setup / "distilbert"), "--glue", "sst2", "--train",
                        str(setup / "train.tsv"), "--validation", str(setup / "dev.tsv"), "--epochs", "1",
                        "--batch-size", "4", "--max-steps", "2", "--log-every", "1", "--out", str(out), "--overwrite"],
                       capture_output=True, text=True, env={**ENV, "SPY_OUT": str(out), "SPY_LOG": str(log)},
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    calls = log.read_text().splitlines()
    assert any(c.startswith("0 rmtree") for c in calls), calls  # the old run was removed, by rank 0
    assert [c for c in calls if not c.startswith("0 ")] == []
    assert not (out / "tensorboard" / "events").exists() and not (out / "best").exists()
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines() if "loss" in line] == [1, 2]
    assert json.loads((out / "eval_results.json").read_text())["best"]["step"] == 2


PARITY = {  # name: (task, family, head, data files, settings)
    "ner": ("token-classification", "bert", "ForTokenClassification", ("ner-train.txt", "ner-dev.txt"), {}),
    # 2 micro-batches of 4 a step: the step's mean over all its labelled tokens, as of one batch of 8
    "ner-accumulated": ("token-classification", "bert", "ForTokenClassification", ("ner-train.txt", "ner-dev.txt"),
                        {"batch_size": 4, "gradient_accumulation": 2}),
    # batches of like lengths: the step's summed loss over its rows x the data's mean labelled tokens a row
    "ner-grouped": ("token-classification", "bert", "ForTokenClassification", ("ner-train.txt", "ner-dev.txt"),
                    {"group_by_length": True}),
    "ner-grouped-accumulated": ("token-classification", "bert", "ForTokenClassification",
                                ("ner-train.txt", "ner-dev.txt"),
                                {"group_by_length": True, "batch_size": 4, "gradient_accumulation": 2}),
    "sst2": ("text-classification", "distilbert", "ForSequenceClassification", ("train.tsv", "dev.tsv"),
             {"glue": "sst2", "max_grad_norm": 0.2}),
    "squad": ("question-answering", "distilbert", "ForQuestionAnswering", ("squad-train.json", "squad-dev.json"),
              {"max_length": 64, "doc_stride": 16}),
    "stsb": ("text-classification", "distilbert", "ForSequenceClassification", ("stsb-train.tsv", "stsb-dev.tsv"),
             {"glue": "stsb"}),
    "multi-label": ("text-classification", "bert", "ForSequenceClassification",
                    ("multi-train.jsonl", "multi-dev.jsonl"), {"max_grad_norm": 0.2}),
}


@pytest.mark.parametrize("name", PARITY)
def test_every_step_is_the_trainers_step(tmp_path, setup, name):
    """Our loop and transformers' Trainer, from the same weights over the same batches, without dropout: the same
    loss at every step and the same weights at the end (warm-up, clipping, AdamW's groups, the heads' losses,
    gradient accumulation), with our evaluations (and saves of the best model) between steps. The rows are
    ours (for NER, run_ner's: the test below)."""
    from torch.utils.data import DataLoader

    from distilbert import batching
    from distilbert.data import read
    from distilbert.train.finetune import encode, labels_of, load_student

    task, family, head, (train, dev), extra = PARITY[name]
    settings = dict(model=str(tmp_path / "start"), task=task, train=str(setup / train), validation=str(setup / dev),
                    out=str(tmp_path / "ours"), epochs=1, max_steps=6, batch_size=8, learning_rate=1e-3, warmup=2,
                    weight_decay=0.01, precision="fp32", group_by_length=False, log_every=1, eval_steps=2)
    settings.update(extra)
    recipe = FinetuneRecipe(**settings).resolved()
    examples = read(task, recipe.train, recipe.columns(), recipe.glue)
    id2label, problem = labels_of(recipe, examples)
    no_dropout = (dict(dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0, qa_dropout=0.0)
                  if family == "distilbert" else dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    labels = {} if task == "question-answering" else dict(
        id2label=id2label, label2id={v: k for k, v in id2label.items()})
    if problem in ("regression", "multi_label_classification"):
        labels["problem_type"] = problem
    start = make_reference(family, head, vocab_size=30522, seed=3, **no_dropout, **labels)
    save_reference(start, tmp_path / "start")  # the checkpoint has this task's head: both runs start from it

    # our (micro-)batches, as the loop draws them (rows at random)
    _, config, tokenizer = load_student(recipe, id2label, problem)
    max_length = min(recipe.max_length, config.max_position_embeddings)
    rows = encode(recipe, tokenizer, examples, config, max_length, training=True, where=recipe.train)
    size = recipe.batch_size
    window = batching.WINDOW if recipe.group_by_length else 1
    batches = batching.shuffled_groups(rows.lengths(), size, size * max_length, recipe.seed, 0, window=window)
    assert len(batches) >= 6 * recipe.gradient_accumulation
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "start")
    features = []
    for i in range(len(rows)):
        f = {"input_ids": rows.input_ids[i], "attention_mask": [1] * len(rows.input_ids[i])}
        if family == "bert":
            f["token_type_ids"] = rows.token_type_ids[i]
        if task == "question-answering":
            f["start_positions"], f["end_positions"] = rows.labels[i]
        else:
            f["labels"] = rows.labels[i]
        features.append(f)
    collator = (transformers.DataCollatorForTokenClassification(hf_tokenizer) if task == "token-classification"
                else transformers.DataCollatorWithPadding(hf_tokenizer))

    # With accumulation the Trainer takes each step's micro-batches as one batch: a step is the mean over all
    # its rows' items, as one process with the whole batch computes it (the Trainer's own accumulation, for
    # this head, averages the micro-batches' means instead).
    n = recipe.gradient_accumulation
    steps = [sum(batches[i : i + n], []) for i in range(0, len(batches) - n + 1, n)]

    class SameBatches(transformers.Trainer):
        def get_train_dataloader(self):
            return self.accelerator.prepare(DataLoader(features, batch_sampler=steps, collate_fn=collator))

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "trainer"), per_device_train_batch_size=size * n, max_steps=6, learning_rate=1e-3,
        warmup_steps=2, weight_decay=0.01, max_grad_norm=recipe.max_grad_norm, lr_scheduler_type="linear",
        logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True)
    compute_loss_func = None
    if recipe.group_by_length and task == "token-classification":
        # Batches of like lengths: not the mean over the step's own labelled tokens (a batch of short
        # sentences would give each of its few tokens a large share) but the sum over them divided by the
        # step's rows x the mean labelled tokens a row over the training data.
        per_row = np.mean([sum(label != -100 for label in labels) for labels in rows.labels])

        def compute_loss_func(outputs, labels, num_items_in_batch=None):
            logits = outputs["logits"]
            summed = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                       ignore_index=-100, reduction="sum")
            return summed / (labels.shape[0] * per_row)

        lengths = rows.lengths()
        assert np.std([np.mean([lengths[i] for i in b]) for b in batches[:6]]) > 2  # the batches' lengths differ
    trainer = SameBatches(model=start.train(), args=args, compute_loss_func=compute_loss_func)
    trainer.train()
    theirs = [r["loss"] for r in trainer.state.log_history if "loss" in r]

    finetune(FinetuneRecipe(**settings), progress=False)
    ours = [json.loads(line)["loss"] for line in (tmp_path / "ours" / "log.jsonl").read_text().splitlines()
            if '"loss"' in line]
    assert len(ours) == len(theirs) == 6
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    grad_norms = [r["grad_norm"] for r in trainer.state.log_history if "grad_norm" in r]
    assert max(grad_norms) > recipe.max_grad_norm  # clipping took part
    # The weights after the last step (the run's checkpoint; the kept model is the best evaluation's) are the
    # Trainer's, read through our loader, but for those no loss moves: their gradient is zero but for rounding,
    # which AdamW blows up to steps of the learning rate's size. They are the key biases (softmax ignores a
    # shift of every score) and, for QA, the span head's bias and the last LayerNorm's bias (a shift of every
    # position's logit).
    free = ["attention.k_lin.bias"]
    if task == "question-answering":
        free += ["qa_outputs.bias", f"layer.{config.n_layers - 1}.output_layer_norm.bias"]
    trainer.model.save_pretrained(tmp_path / "theirs")
    theirs_net, _, _ = load(tmp_path / "theirs", task)
    last = torch.load(tmp_path / "ours" / "checkpoint.pt", weights_only=True)["student"]
    assert all(any(name.endswith(f) for name in last) for f in free)
    compared = 0
    for name, p in theirs_net.state_dict().items():
        if not any(name.endswith(f) for f in free):
            torch.testing.assert_close(last[name], p, rtol=1e-5, atol=1e-5, msg=lambda m: f"{name}: {m}")
            compared += 1
    assert compared > 20


def test_ner_rows_are_run_ners_on_all_of_conll(setup):
    """Every CoNLL-2003 training sentence gives run_ner's token ids and labels (tokenize_and_align_labels with
    label_all_tokens off: the first piece of each word labelled, the rest and the special tokens -100)."""
    from distilbert.data import read
    from distilbert.data.ner import tag_names
    from distilbert.tokenizer import Tokenizer
    from distilbert.train.features import encode_tokens

    examples = read("token-classification", data_file("ner", "conll2003", "train.txt"))
    assert len(examples) == 14041
    label2id = {t: i for i, t in enumerate(tag_names(examples))}
    rows = encode_tokens(Tokenizer.from_pretrained(setup / "bert"), examples, 512, label2id)
    hf = transformers.AutoTokenizer.from_pretrained(setup / "bert")
    encodings = hf([e.tokens for e in examples], is_split_into_words=True, truncation=True, max_length=512)
    for i, e in enumerate(examples):
        words = encodings.word_ids(i)
        tags = [-100 if w is None or w == words[t - 1] else label2id[e.tags[w]] for t, w in enumerate(words)]
        assert (encodings["input_ids"][i], tags) == (rows.input_ids[i], rows.labels[i]), e.tokens
