"""The real `distilbert` command in a subprocess."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import distilbert
from helpers.cli import assert_user_error, environment, run


def test_fill_mask_table_and_json(mlm_checkpoint):
    folder, _ = mlm_checkpoint
    text = "Hello I'm a [MASK] model."
    expected = distilbert.pipeline("fill-mask", model=folder)(text, top_k=3)
    p = run("fill-mask", text, "--model", folder, "--top-k", 3, "--json")
    got = json.loads(p.stdout)
    assert [g["token"] for g in got] == [e["token"] for e in expected]
    assert [g["sequence"] for g in got] == [e["sequence"] for e in expected]
    table = run("fill-mask", text, "The [MASK] and the [MASK].", "--model", folder, "--top-k", 3).stdout
    assert text in table and "score" in table and expected[0]["sequence"] in table and "(mask 2 of 2)" in table
    targets = json.loads(run("fill-mask", text, "--model", folder, "--targets", "dog", "cat", "--json").stdout)
    assert sorted(t["token_str"] for t in targets) == ["cat", "dog"]


def test_embed_stdout_and_npy(tmp_path, mlm_checkpoint):
    folder, _ = mlm_checkpoint
    lines = ["first line", "the second, longer line of text", "third"]
    p = run("embed", "-", "--model", folder, "--pooling", "mean", stdin="\n".join(lines) + "\n")
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    expected = distilbert.pipeline("feature-extraction", model=folder)(lines, pooling="mean")
    np.testing.assert_allclose(np.array(rows), expected, atol=1e-6)
    (tmp_path / "in.txt").write_text("\n".join(lines))
    run("embed", tmp_path / "in.txt", "--model", folder, "--normalize", "--pooling", "cls", "--output", tmp_path / "out.npy")
    matrix = np.load(tmp_path / "out.npy")
    assert matrix.shape == (3, 39) and matrix.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1, atol=1e-5)


def test_embed_pooling_none_prints_token_features(tmp_path, mlm_checkpoint):
    """On a sentence-transformers folder too (which pools by default): one (tokens, dim) matrix a line."""
    import torch
    import transformers

    from helpers.models import sentence_transformers_folder

    folder, ref = mlm_checkpoint
    st = sentence_transformers_folder(folder, tmp_path / "st", pooling="mean", normalize=True)
    lines = ["first line", "the second, longer line of text"]
    p = run("embed", "-", "--model", st, "--pooling", "none", stdin="\n".join(lines) + "\n")
    rows = [np.array(json.loads(line)) for line in p.stdout.splitlines()]
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    assert len(rows) == len(lines)
    for row, line in zip(rows, lines):
        with torch.no_grad():
            expected = ref.distilbert(**tok(line, return_tensors="pt")).last_hidden_state[0].numpy()
        assert row.shape == expected.shape
        np.testing.assert_allclose(row, expected, atol=1e-5)
    pooled = run("embed", "-", "--model", st, stdin=lines[0] + "\n").stdout
    assert np.array(json.loads(pooled)).shape == (39,)
    assert_user_error(run("embed", "-", "--model", st, "--pooling", "none", "--output", tmp_path / "t.npy",
                          stdin="x\n", ok=False), "--pooling none", "--output")


def test_progress_bar_for_long_inputs(tmp_path, mlm_checkpoint):
    folder, _ = mlm_checkpoint
    (tmp_path / "many.txt").write_text("\n".join(f"line {i}" for i in range(300)))
    p = run("embed", tmp_path / "many.txt", "--model", folder, "--output", tmp_path / "e.npy")
    assert "300/300" in p.stderr and np.load(tmp_path / "e.npy").shape == (300, 39)
    q = run("tokenize", tmp_path / "many.txt", "--model", folder)
    assert "300/300" in q.stderr and len(q.stdout.splitlines()) == 300


def test_tokenize_singles_and_pairs(tmp_path, mlm_checkpoint):
    folder, _ = mlm_checkpoint
    p = run("tokenize", "--model", folder, stdin="Hello world\nsecond line\n")
    first = json.loads(p.stdout.splitlines()[0])
    assert first == {"input_ids": [101, 7592, 2088, 102], "token_type_ids": [0] * 4, "attention_mask": [1] * 4}
    q = run("tokenize", "--model", folder, "--pairs", "--max-length", 6, stdin="a b c d\te f g h\n")
    row = json.loads(q.stdout)
    assert len(row["input_ids"]) == 6 and row["token_type_ids"] == [0, 0, 0, 1, 1, 1]


def test_info(mlm_checkpoint):
    folder, ref = mlm_checkpoint
    out = run("info", folder).stdout
    assert "family:            distilbert" in out and "DistilBertForMaskedLM" in out and "layers:            2" in out
    assert f"{sum(p.numel() for p in ref.parameters()):,}" in out
    assert "30522" in out


@pytest.mark.parametrize("family, arch", [("distilbert", "ForQuestionAnswering"), ("bert", "ForTokenClassification"),
                                          ("bert", "ForSequenceClassification"), ("distilbert", "ForMaskedLM")])
def test_info_names_the_task_load_finds_without_architectures(tmp_path, checkpoint_factory, capsys, family, arch):
    from distilbert import cli
    from distilbert.checkpoint import load
    from distilbert.model import task_of

    source, _ = checkpoint_factory(family, arch)
    folder = shutil.copytree(source, tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    del config["architectures"]
    (folder / "config.json").write_text(json.dumps(config))
    cli.info(str(folder))
    rows = dict(line.split(":", 1) for line in capsys.readouterr().out.splitlines())
    assert rows["task"].strip() == task_of(load(folder)[0]) != "feature-extraction"


@pytest.fixture()
def broken(tmp_path, mlm_checkpoint):
    folder, _ = mlm_checkpoint

    def make(name, change):
        target = tmp_path / name
        shutil.copytree(folder, target)
        change(target)
        return target

    return make


def test_bad_input_is_one_line_and_exit_2(tmp_path, broken, mlm_checkpoint):
    folder, _ = mlm_checkpoint
    assert_user_error(run("fill-mask", "no mask at all", "--model", folder, ok=False), "no [MASK]")
    assert_user_error(run("fill-mask", "", "--model", folder, ok=False), "no text")
    (tmp_path / "empty.txt").write_text("\n\n")
    assert_user_error(run("embed", tmp_path / "empty.txt", "--model", folder, ok=False), "is empty")
    assert_user_error(run("embed", tmp_path / "absent.txt", "--model", folder, ok=False), "does not exist")
    assert_user_error(run("fill-mask", "a [MASK]", "--model", tmp_path / "nowhere", ok=False), "does not exist")
    half = broken("half", lambda f: (f / "model.safetensors").unlink())
    assert_user_error(run("fill-mask", "a [MASK]", "--model", half, ok=False), "no weights")
    def corrupt(f):
        data = (f / "model.safetensors").read_bytes()
        (f / "model.safetensors").write_bytes(data[: len(data) // 3])
    assert_user_error(run("fill-mask", "a [MASK]", "--model", broken("corrupt", corrupt), ok=False), "corrupted")
    def mismatch(f):
        config = json.loads((f / "config.json").read_text())
        config["dim"] = 42
        (f / "config.json").write_text(json.dumps(config))
    assert_user_error(run("embed", "--model", broken("mismatch", mismatch), stdin="x\n", ok=False), "mis-shaped")
    assert_user_error(run("tokenize", "--model", folder, "--pairs", stdin="no tab here\n", ok=False), "line 1 has no tab")
    assert_user_error(run("info", broken("noconfig", lambda f: (f / "config.json").unlink()), ok=False), "no config.json")
    assert_user_error(run("fill-mask", "a [MASK]", "--model", "distilbert-base-uncased", ok=False), "pass its path")
    usage = run("fill-mask", ok=False)
    assert usage.returncode == 2 and "Traceback" not in usage.stderr


def test_each_option_declared_once_and_matching_its_function():
    """Every command's options are exactly its function's parameters, defaults and choices from one place."""
    import inspect

    from distilbert import cli
    from distilbert.backends import BACKENDS
    from distilbert.onnx.export import DEFAULT_OPSET
    from distilbert.pipelines.features import NO_POOLING, POOLINGS
    from distilbert.tasks import TASKS

    subcommands = next(a for a in cli.parser()._actions if a.dest == "command").choices
    for name, (function, _) in cli.COMMANDS.items():
        actions = {a.dest: a for a in subcommands[name]._actions if a.dest not in ("help", "debug")}
        parameters = inspect.signature(function).parameters
        named = {p for p, v in parameters.items() if v.kind is not v.VAR_KEYWORD}
        assert named <= set(actions), (name, named - set(actions))
        for dest, action in actions.items():
            if dest in parameters and parameters[dest].default is not inspect.Parameter.empty:
                assert action.default == parameters[dest].default, (name, dest)
    fill_mask = {a.dest: a for a in subcommands["fill-mask"]._actions}
    assert tuple(fill_mask["backend"].choices) == BACKENDS
    assert tuple({a.dest: a for a in subcommands["embed"]._actions}["pooling"].choices) == (*POOLINGS, NO_POOLING)
    assert tuple({a.dest: a for a in subcommands["serve"]._actions}["pooling"].choices) == POOLINGS
    export = {a.dest: a for a in subcommands["export"]._actions}
    assert tuple(export["task"].choices) == tuple(TASKS) and export["opset"].default == DEFAULT_OPSET
    assert cli.parser().parse_args(["--debug", "info", "x"]).debug
    assert cli.parser().parse_args(["info", "x", "--debug"]).debug
    assert not cli.parser().parse_args(["info", "x"]).debug


def test_debug_shows_the_traceback_of_a_user_error(tmp_path):
    missing = tmp_path / "nowhere"
    plain = run("info", missing, ok=False)
    assert_user_error(plain, "does not exist")
    for p in (run("--debug", "info", missing, ok=False),
              run("info", missing, ok=False, env=environment(DISTILBERT_DEBUG="1"))):
        assert p.returncode == 2, p.stderr
        assert "Traceback (most recent call last)" in p.stderr and "UserError" in p.stderr
        assert p.stderr.strip().splitlines()[-1].startswith("error: ") and "does not exist" in p.stderr


def test_our_own_bugs_are_not_reported_as_bad_input(tmp_path, monkeypatch, exported, capsys):
    """Only the exceptions that mean a damaged file become a UserError; a bug keeps its type and traceback."""
    import onnxruntime
    import torch

    from distilbert import cli
    from distilbert.checkpoint import read_state_dict

    def bug(*args, **kwargs):
        raise TypeError("a bug of ours")

    out, _, _ = exported("distilbert", "ForMaskedLM")
    (tmp_path / "bin").mkdir()
    torch.save({"weight": torch.ones(3)}, tmp_path / "bin" / "pytorch_model.bin")
    monkeypatch.setattr(onnxruntime, "InferenceSession", bug)
    with pytest.raises(TypeError, match="a bug of ours"):
        cli.main(["fill-mask", "a [MASK].", "--model", str(out)])
    assert "corrupt" not in capsys.readouterr().err
    monkeypatch.setattr(torch, "load", bug)
    with pytest.raises(TypeError, match="a bug of ours"):
        read_state_dict(tmp_path / "bin")


def test_python_dash_m_is_the_same_command(tmp_path):
    """`python -m distilbert` (where the console script is not on PATH): same commands, same exit codes."""
    p = subprocess.run([sys.executable, "-m", "distilbert", "--help"], capture_output=True, text=True,
                       env=environment(), timeout=120)
    assert p.returncode == 0 and "finetune" in p.stdout
    q = subprocess.run([sys.executable, "-m", "distilbert", "fill-mask", "x [MASK]", "--model", tmp_path / "none"],
                       capture_output=True, text=True, env=environment(), timeout=120)
    assert_user_error(q, "none")


def test_first_line_of_an_error():
    from distilbert.errors import first_line

    assert first_line(ValueError("\n\n  the cause \nmore detail")) == "the cause"
    assert first_line(AssertionError()) == "AssertionError"  # no text: its type
    assert first_line(RuntimeError("x" * 500), 10) == "x" * 10
