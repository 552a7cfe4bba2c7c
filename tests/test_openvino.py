"""The OpenVINO backend: the same parity tests as PyTorch's and ONNX Runtime's (every head, both families,
padded batches, a batch equal to its rows, the [MASK]-only head) on the plain graph and on ONNX Runtime's fused
one; bf16 where the CPU has it; every entry point; and the openvino extra alone, without PyTorch."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino", reason="OpenVINO is not installed (the openvino extra: pip install 'distilbert[openvino]')")

import torch  # noqa: E402
from helpers.cli import assert_user_error, environment, run  # noqa: E402
from helpers.models import ARCHS, TASK_OF_ARCH, data_file, make_reference, save_reference  # noqa: E402
from helpers.venvs import fresh_install  # noqa: E402

import distilbert  # noqa: E402
from distilbert import tasks  # noqa: E402
from distilbert.backends import load_backend  # noqa: E402
from distilbert.backends import openvino as ov_backend  # noqa: E402
from distilbert.backends.choice import Choice, locate  # noqa: E402
from distilbert.backends.openvino import OpenVinoBackend, bf16_supported  # noqa: E402
from distilbert.checkpoint import load  # noqa: E402
from distilbert.errors import UserError  # noqa: E402
from distilbert.onnx import export  # noqa: E402
from distilbert.onnx.export import validation_batch  # noqa: E402
from distilbert.tokenizer import Tokenizer  # noqa: E402

TOLERANCE = 1e-5  # fp32, as the other exact backends
needs_bf16 = pytest.mark.skipif(not bf16_supported(), reason="this CPU has no bfloat16 instructions (OpenVINO's "
                                "OPTIMIZATION_CAPABILITIES lacks BF16), so the openvino backend refuses bf16 here")
GRAPHS = {"plain": {}, "fused": {"optimize": True}}  # model.onnx as exported, and fused by ONNX Runtime's optimizer


def torch_outputs(net, arrays: dict) -> dict:
    with torch.inference_mode():
        out = net(*(torch.from_numpy(arrays[k]) if k in arrays else None
                    for k in ("input_ids", "attention_mask", "token_type_ids")))
    return {k: v.numpy() for k, v in out.items()}


def rows_of(output: np.ndarray, name: str, task: str, r: int, n: int) -> np.ndarray:
    """Row r of a batch output, its first n tokens where the output is per token."""
    return output[r, :n] if tasks.TASKS[task].token_level(name) else output[r]


@pytest.mark.parametrize("graph", list(GRAPHS))
@pytest.mark.parametrize("family", ["distilbert", "bert"])
@pytest.mark.parametrize("arch", ARCHS)
def test_every_head_matches_torch(exported, family, arch, graph):
    """Every output against our PyTorch model on padded batches (rows of different lengths, one all padding but
    [CLS], token types for BERT), and each row alone against its row in the batch."""
    out, source, _ = exported(family, arch, **GRAPHS[graph])
    task = TASK_OF_ARCH[arch]
    net, config, _ = load(source)
    backend = OpenVinoBackend.load(out)
    assert backend.task == task and backend.precision == "fp32" and backend.path == out / "onnx" / "model.onnx"
    assert (backend.mask_token_id is not None) == (task == "fill-mask")
    tokenizer = Tokenizer.from_pretrained(out)
    for batch, length, seed in ((7, 40, 5), (2, 64, 6), (1, 1, 7), (3, 9, 8)):  # 64: the tiny model's limit
        arrays = validation_batch(batch, length, config, tokenizer, seed=seed)
        got, expected = backend.run(**arrays), torch_outputs(net, arrays)
        assert set(got) == set(tasks.TASKS[task].outputs)  # (BERT's pooler_output is not exported)
        for name, value in got.items():
            assert value.dtype == np.float32 and not np.isnan(value).any()
            np.testing.assert_allclose(value, expected[name], rtol=0, atol=TOLERANCE, err_msg=f"{name} {batch}x{length}")
        for r in range(batch):  # batch equals single
            n = int(arrays["attention_mask"][r].sum())
            alone = backend.run(**{k: v[r : r + 1, :n] for k, v in arrays.items()})
            for name, value in alone.items():
                np.testing.assert_allclose(rows_of(got[name], name, task, r, n), value[0], rtol=0, atol=TOLERANCE,
                                           err_msg=f"{name}, row {r} of {batch}x{length} alone")
        if task == "fill-mask" and length > 2:
            at = arrays["input_ids"] == tokenizer.mask_token_id  # the [MASK]-only head, as fill-mask asks for it
            assert at.any()
            np.testing.assert_allclose(backend.run(**arrays, logits_at=at)["logits"], expected["logits"][at],
                                       rtol=0, atol=TOLERANCE)
            other = arrays["attention_mask"].astype(bool)  # any other positions: the full head, then those rows
            np.testing.assert_allclose(backend.run(**arrays, logits_at=other)["logits"], expected["logits"][other],
                                       rtol=0, atol=TOLERANCE)


def test_the_mask_only_head_runs_at_the_masks_alone(exported, monkeypatch):
    """all_positions is an input of the compiled model: false where fill-mask asks for the [MASK] rows, and the
    head then gives (masks, 1, vocab), not (batch, length, vocab)."""
    out, _, _ = exported("distilbert", "ForMaskedLM")
    backend = OpenVinoBackend.load(out)
    assert "all_positions" in backend.input_names
    fed, infer = [], backend._infer

    def spy(feed):
        result = infer(feed)
        fed.append((bool(feed["all_positions"]), result["logits"].shape))
        return result

    monkeypatch.setattr(backend, "_infer", spy)
    ids = np.array([[101, 7592, 103, 2088, 102], [101, 103, 103, 102, 0]])
    mask = (ids != 0).astype(np.int64)
    backend.run(ids, mask, logits_at=ids == 103)
    backend.run(ids, mask)
    assert fed == [(False, (3, 1, 30522)), (True, (2, 5, 30522))]


@pytest.mark.parametrize("family", ["distilbert", "bert"])
def test_pipelines_match_torch_pipelines(exported, family):
    """Each task's pipeline on OpenVINO against the same pipeline on PyTorch, to 1e-5, texts of different
    lengths in one call (the pipelines' length grouping, run with OpenVINO's dynamic shapes)."""
    texts = ["Hello world.", "A somewhat longer sentence about the distillation of language models, with commas.",
             "x", "Paris is the capital of France and its largest city."]
    cases = {
        "ForMaskedLM": ("fill-mask", [f"text {i} with a [MASK] " + "and more " * i for i in range(6)]
                        + ["The [MASK] sat on the [MASK]."], {"top_k": 4}),
        "Model": ("feature-extraction", texts, {"pooling": "mean"}),
        "ForSequenceClassification": ("text-classification", texts + [{"text": "a premise", "text_pair": "a hypothesis"}],
                                      {"top_k": None}),
        "ForTokenClassification": ("token-classification", texts, {}),
        "ForQuestionAnswering": ("question-answering", [{"question": "What is the capital?", "context": t} for t in texts],
                                 {"top_k": 2}),
    }
    for arch, (task, inputs, kwargs) in cases.items():
        out, source, _ = exported(family, arch)
        ours = distilbert.pipeline(task, model=out, backend="openvino")
        assert type(ours.backend).__name__ == "OpenVinoBackend"
        theirs = distilbert.pipeline(task, model=source, backend="torch")
        assert_close(ours(inputs, **kwargs), theirs(inputs, **kwargs), TOLERANCE, task)
        one_by_one = [ours(item, **kwargs) for item in inputs]
        assert_close(ours(inputs, **kwargs), one_by_one, TOLERANCE, f"{task}, batched against one by one")


def assert_close(ours, theirs, tolerance, where=""):
    """The same structure and values; numbers within `tolerance`."""
    if isinstance(theirs, np.ndarray) or isinstance(ours, np.ndarray):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=0, atol=tolerance, err_msg=where)
    elif isinstance(theirs, dict):
        assert isinstance(ours, dict) and set(ours) == set(theirs), (where, ours, theirs)
        for key in theirs:
            assert_close(ours[key], theirs[key], tolerance, f"{where}.{key}")
    elif isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), (where, ours, theirs)
        for a, b in zip(ours, theirs):
            assert_close(a, b, tolerance, where)
    elif isinstance(theirs, float):
        assert abs(ours - theirs) <= tolerance, (where, ours, theirs)
    else:
        assert ours == theirs, (where, ours, theirs)


@needs_bf16
@pytest.mark.parametrize("family, arch", [("distilbert", "ForMaskedLM"), ("bert", "Model"),
                                          ("distilbert", "ForSequenceClassification")])
def test_bf16_stays_close_to_fp32(exported, family, arch):
    """OpenVINO's bfloat16 inference: within a loose tolerance of fp32, the same top-1 token or label nearly
    everywhere, and a fill-mask pipeline's top-1 equal to fp32's."""
    out, source, _ = exported(family, arch)
    net, config, _ = load(source)
    backend = OpenVinoBackend.load(out, precision="bf16")
    assert backend.compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "bf16"
    arrays = validation_batch(7, 40, config, Tokenizer.from_pretrained(out), seed=5)
    got, expected = backend.run(**arrays), torch_outputs(net, arrays)
    for name, value in got.items():
        assert value.dtype == np.float32 and not np.isnan(value).any()
        scale = np.abs(expected[name]).max()
        assert np.abs(value - expected[name]).max() <= 0.05 * scale, name  # bfloat16: 8 bits of mantissa
        if name == "logits":
            rows = arrays["attention_mask"].astype(bool) if value.ndim == 3 else slice(None)
            agree = (value.argmax(-1) == expected[name].argmax(-1))[rows].mean()
            assert agree >= 0.9, agree
    if arch == "ForMaskedLM":
        text = "Paris is the [MASK] of France."
        fast = distilbert.pipeline("fill-mask", model=out, backend="openvino", precision="bf16")(text, top_k=5)
        exact = distilbert.pipeline("fill-mask", model=out, backend="openvino")(text, top_k=5)
        assert fast[0]["token"] == exact[0]["token"]
        assert len({r["token"] for r in fast} & {r["token"] for r in exact}) >= 3


def test_bf16_where_the_cpu_lacks_it_is_one_line(exported, monkeypatch):
    out, _, _ = exported("distilbert", "ForMaskedLM")
    monkeypatch.setattr(ov_backend, "bf16_supported", lambda core=None: False)
    with pytest.raises(UserError) as e:
        distilbert.pipeline("fill-mask", model=out, backend="openvino", precision="bf16")
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("bf16 on the openvino backend needs a CPU with bfloat16 instructions")
    assert "use precision fp32" in message
    distilbert.pipeline("fill-mask", model=out, backend="openvino")  # fp32 asks nothing of the CPU


def test_choice_and_bad_input(tmp_path, exported, mlm_checkpoint):
    out, source, _ = exported("distilbert", "ForMaskedLM", quantize="int8")
    assert type(load_backend(out)).__name__ == "OnnxBackend"  # opt-in: never the natural choice
    assert locate(out, "openvino", "bf16")[0] == Choice("openvino", "bf16")  # reads the fp32 graph
    choice, folder = locate(source, "openvino", "bf16", task="fill-mask")  # a checkpoint: its fp32 graph exported
    assert choice == Choice("openvino", "bf16", export=True) and choice.graph == "fp32" and folder == source
    with pytest.raises(UserError, match=r"precision 'int8' is not available with the openvino backend \(it runs "
                                        r"fp32, bf16\); int8 runs on ONNX Runtime \(the onnx backend\)"):
        load_backend(out, backend="openvino", precision="int8")
    with pytest.raises(UserError, match="precision 'q4' is not available with the openvino backend"):
        OpenVinoBackend.load(out, precision="q4")
    with pytest.raises(UserError, match="compile is for the torch backend, not the openvino backend"):
        load_backend(out, backend="openvino", compile=True)
    with pytest.raises(UserError, match="exported for fill-mask .* not feature-extraction"):
        distilbert.pipeline("feature-extraction", model=out, backend="openvino")
    broken = tmp_path / "broken"
    (broken / "onnx").mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        (broken / name).write_bytes((out / name).read_bytes())
    graph, weights = (out / "onnx" / "model.onnx").read_bytes(), (out / "onnx" / "model.onnx_data").read_bytes()
    for damage in ("graph", "weights", "no weights"):
        (broken / "onnx" / "model.onnx").write_bytes(graph[: len(graph) // 2] if damage == "graph" else graph)
        (broken / "onnx" / "model.onnx_data").write_bytes(weights[: len(weights) // 2] if damage == "weights" else weights)
        if damage == "no weights":
            (broken / "onnx" / "model.onnx_data").unlink()
        with pytest.raises(UserError, match="OpenVINO cannot read") as e:
            distilbert.pipeline("fill-mask", model=broken, backend="openvino")
        assert "\n" not in str(e.value) and "Exception from" not in str(e.value), damage
    (broken / "onnx" / "model.onnx").unlink()
    (broken / "onnx" / "model_quantized.onnx").write_bytes(b"")
    with pytest.raises(UserError, match=r"no fp32 graph \(model.onnx\) in .*which the openvino backend reads for bf16"):
        distilbert.pipeline("fill-mask", model=broken, backend="openvino", precision="bf16")


def test_a_checkpoint_is_exported_once_then_run(tmp_path, checkpoint_factory, monkeypatch, capsys):
    """backend="openvino" on a PyTorch checkpoint: exported once into the cache, as for onnx, and the same cached
    export serves both backends and both precisions; the thread count is the one asked for."""
    monkeypatch.setenv("DISTILBERT_CACHE", str(tmp_path / "cache"))
    source, _ = checkpoint_factory("bert", "ForSequenceClassification", vocab="real")
    first = load_backend(source, backend="openvino", threads=1)
    said = capsys.readouterr().err
    assert "exporting" in said and "to ONNX once" in said and first.path.is_relative_to(tmp_path / "cache")
    assert first.compiled.get_property("INFERENCE_NUM_THREADS") == 1
    assert first.compiled.get_property("ENABLE_CPU_PINNING") is False
    assert load_backend(source, backend="onnx").path == first.path and capsys.readouterr().err == ""
    if bf16_supported():
        assert load_backend(source, backend="openvino", precision="bf16").path == first.path
    texts = ["one text", "and a second, longer one"]
    a = distilbert.pipeline("text-classification", model=source, backend="openvino")(texts, top_k=None)
    b = distilbert.pipeline("text-classification", model=source, backend="torch")(texts, top_k=None)
    assert_close(a, b, TOLERANCE)


def test_cli(tmp_path, exported):
    out, source, _ = exported("distilbert", "ForMaskedLM")
    text = "Hello I'm a [MASK] model."
    p = run("fill-mask", text, "--model", out, "--backend", "openvino", "--json", "--top-k", "3")
    expected = distilbert.pipeline("fill-mask", model=source, backend="torch")(text, top_k=3)
    assert_close(json.loads(p.stdout), expected, TOLERANCE)
    if bf16_supported():
        p = run("fill-mask", text, "--model", out, "--backend", "openvino", "--precision", "bf16", "--json")
        assert len(json.loads(p.stdout)) == 5
    assert_user_error(run("fill-mask", text, "--model", out, "--backend", "openvino", "--precision", "int8", ok=False),
                      "not available with the openvino backend")


def test_evaluate_and_bias(tmp_path, exported):
    from distilbert.analysis import bias
    from distilbert.evaluate import evaluate

    lines = data_file("glue", "SST-2", "dev.tsv").read_text().splitlines()
    (tmp_path / "dev.tsv").write_text("\n".join(lines[:41]) + "\n")
    source = save_reference(make_reference("distilbert", "ForSequenceClassification", 30522,
                                           id2label={0: "negative", 1: "positive"}), tmp_path / "sst2")
    out = tmp_path / "sst2-onnx"
    export(source, out, log=lambda line: None)
    ours = evaluate(str(out), None, str(tmp_path / "dev.tsv"), glue="sst2", backend="openvino", progress=False,
                    predictions_file=str(tmp_path / "ov.jsonl"))
    theirs = evaluate(str(source), None, str(tmp_path / "dev.tsv"), glue="sst2", backend="torch", progress=False,
                      predictions_file=str(tmp_path / "torch.jsonl"))
    assert ours["metrics"] == theirs["metrics"] and ours["examples"] == 40
    assert_close(*([json.loads(line) for line in (tmp_path / name).read_text().splitlines()]
                   for name in ("ov.jsonl", "torch.jsonl")), TOLERANCE)
    mlm, mlm_source, _ = exported("distilbert", "ForMaskedLM")
    data_file("bias", "crows_pairs_anonymized.csv")
    ours = bias.run(str(mlm), probes="crows-pairs", limit=12, backend="openvino", log=lambda line: None)
    theirs = bias.run(str(mlm_source), probes="crows-pairs", limit=12, backend="torch", log=lambda line: None)
    assert_close(ours, theirs, 1e-4)


def test_serve(tmp_path, exported):
    """`distilbert serve --backend openvino`: /info names the backend, and answers equal the pipeline's."""
    import httpx

    pytest.importorskip("fastapi")
    out, _, _ = exported("distilbert", "ForMaskedLM")
    port = _free_port()
    log = tmp_path / "server.log"
    with open(log, "w") as f:
        process = subprocess.Popen([sys.executable, "-m", "distilbert.cli", "serve", str(out), "--port", str(port),
                                    "--backend", "openvino", "--threads", "1"], stdout=f, stderr=subprocess.STDOUT,
                                   env=environment())
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                if httpx.get(url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        assert httpx.get(url + "/info", timeout=30).json()["backend"] == "openvino"
        text = "The [MASK] sat on the mat."
        answer = httpx.post(url + "/pipeline/fill-mask", json={"inputs": text}, timeout=60).json()
        assert_close(answer, distilbert.pipeline("fill-mask", model=out, backend="openvino")(text), 1e-6)
    finally:
        process.terminate()
        process.wait(60)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ray(tmp_path, exported):
    """`--ray --backend openvino`: each actor opens the export on OpenVINO with the CPUs Ray gave it."""
    pytest.importorskip("ray")
    pq = pytest.importorskip("pyarrow.parquet")
    from distilbert import ray as on_ray

    out, _, _ = exported("distilbert", "Model")
    texts = [f"text number {i} " + "word " * (i % 13) for i in range(40)]
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(texts) + "\n")
    on_ray.run_job("feature-extraction", str(source), str(tmp_path / "out.parquet"), model=str(out), num_actors=1,
                   batch_size=8, backend="openvino", num_cpus=1, log=lambda line: None, pooling="mean")
    got = np.array(pq.read_table(tmp_path / "out.parquet").column("embedding").to_pylist(), dtype=np.float32)
    expected = distilbert.pipeline("feature-extraction", model=out, backend="openvino")(texts, pooling="mean")
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


TORCH_FREE = """
import json, sys
try:
    import torch  # noqa: F401
    sys.exit("torch is importable in the openvino-only install")
except ImportError:
    pass
"""


@pytest.mark.slow
def test_the_openvino_extra_alone_runs_an_export(tmp_path, exported):
    """`pip install '.[openvino]'` in a fresh venv, no PyTorch there: `distilbert fill-mask --backend openvino` on
    an exported folder gives this environment's answer."""
    out, _, _ = exported("distilbert", "ForMaskedLM", optimize=True)
    python, work = fresh_install(tmp_path, "openvino")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    check = subprocess.run([python, "-c", TORCH_FREE], capture_output=True, text=True, timeout=120, cwd=work, env=env)
    assert check.returncode == 0, check.stderr + check.stdout
    text = "The [MASK] sat on the [MASK] near the river."
    p = subprocess.run([str(Path(python).parent / "distilbert"), "fill-mask", text, "--model", str(out), "--backend",
                        "openvino", "--json"], capture_output=True, text=True, timeout=300, cwd=work, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    there = json.loads(p.stdout)
    assert_close(there, distilbert.pipeline("fill-mask", model=out, backend="openvino")(text), 1e-6)
    assert_close(there, distilbert.pipeline("fill-mask", model=out, backend="onnx")(text), TOLERANCE)
