"""ONNX export: parity over the shape grid for every task and family, fusions, int8, Optimum, no torch."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import distilbert
from distilbert import precisions
from distilbert.backends.onnx import OnnxBackend
from distilbert.checkpoint import load
from distilbert.errors import UserError
from distilbert.onnx import export
from distilbert.onnx.export import shape_grid, validation_batch
from distilbert.tokenizer import Tokenizer
from helpers.models import ARCHS, ROOT, TASK_OF_ARCH

OPTIMUM_PYTHON = ROOT / ".venv-optimum" / "bin" / "python"
quiet = lambda line: None  # noqa: E731


@pytest.mark.parametrize("family", ["distilbert", "bert"])
@pytest.mark.parametrize("arch", ARCHS)
def test_export_matches_torch_on_the_shape_grid(exported, family, arch):
    out, source, report = exported(family, arch)
    task = TASK_OF_ARCH[arch]
    assert report["task"] == task
    assert (out / "onnx" / "model.onnx").is_file() and (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    assert len(report["validation"]["shapes"]) == len(shape_grid(64)) == 9  # the tiny model's limit is 64
    assert all(v <= 1e-4 for v in report["validation"]["worst"].values())
    # independently of the exporter's own check: the ONNX backend against the torch model on a fresh batch
    net, config, _ = load(source)
    backend = OnnxBackend.load(out)
    assert backend.task == task
    arrays = validation_batch(7, 40, config, Tokenizer.from_pretrained(out), seed=5)
    got = backend.run(**arrays)
    with torch.no_grad():
        expected = net(*(torch.from_numpy(arrays[k]) if k in arrays else None
                         for k in ("input_ids", "attention_mask", "token_type_ids")))
    for name, value in got.items():
        assert not np.isnan(value).any()
        np.testing.assert_allclose(value, expected[name].numpy(), rtol=0, atol=1e-4)
    if task == "fill-mask":  # the head at [MASK] alone, as fill-mask asks for it
        at = arrays["input_ids"] == backend.mask_token_id
        assert at.sum() >= 6
        got = backend.run(**arrays, logits_at=at)["logits"]
        np.testing.assert_allclose(got, expected["logits"].numpy()[at], rtol=0, atol=1e-4)
    model = onnx.load(str(out / "onnx" / "model.onnx"))
    defaults = {t.name for t in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in defaults]
    assert inputs == ["input_ids", "attention_mask"] + (["token_type_ids"] if family == "bert" else [])
    assert [i.name for i in model.graph.input if i.name in defaults] == (["all_positions"] if task == "fill-mask" else [])
    for i in model.graph.input:
        if i.name in defaults:
            continue
        assert i.type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert [d.dim_param for d in i.type.tensor_type.shape.dim] == ["batch_size", "sequence_length"]


def test_onnx_pipelines_match_torch_pipelines(exported):
    out, source, _ = exported("distilbert", "ForMaskedLM")
    onnx_fill = distilbert.pipeline("fill-mask", model=out)
    assert type(onnx_fill.backend).__name__ == "OnnxBackend"  # picked by itself: the folder has only model.onnx
    torch_fill = distilbert.pipeline("fill-mask", model=source, backend="torch")
    for text in ("Hello I'm a [MASK] model.", "The [MASK] sat on the [MASK]."):
        a, b = onnx_fill(text, top_k=4), torch_fill(text, top_k=4)
        assert json.loads(json.dumps(a)) == a  # plain JSON types: no numpy scalars or arrays
        flat_a = a if isinstance(a[0], dict) else sum(a, [])
        flat_b = b if isinstance(b[0], dict) else sum(b, [])
        assert [x["token"] for x in flat_a] == [x["token"] for x in flat_b]
        assert max(abs(x["score"] - y["score"]) for x, y in zip(flat_a, flat_b)) < 1e-6
    fe_out, fe_source, _ = exported("bert", "Model")
    texts = ["one text", "and a second, longer one with more words in it"]
    a = distilbert.pipeline("feature-extraction", model=fe_out)(texts, pooling="mean")
    b = distilbert.pipeline("feature-extraction", model=fe_source, backend="torch")(texts, pooling="mean")
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_optimize_fuses_and_validates_again(exported):
    out, _, report = exported("distilbert", "Model", optimize=True)
    # two layers here: DistilBERT-base's six give 1, 6, 6 and 12 (Add + LayerNormalization, left unfused)
    assert report["fused_operators"] == {"EmbedLayerNormalization": 1, "Attention": 2, "BiasGelu": 2, "LayerNormalization": 4}
    assert all(v <= 1e-4 for v in report["validation_optimized"]["worst"].values())
    types = {n.op_type for n in onnx.load(str(out / "onnx" / "model.onnx")).graph.node}
    assert {"Attention", "EmbedLayerNormalization", "LayerNormalization"} <= types and "SkipLayerNormalization" not in types


def test_fill_mask_graph_holds_one_encoder_and_one_head(exported):
    out, _, report = exported("bert", "ForMaskedLM", optimize=True)
    # 2 layers, 2 attentions: one encoder pass
    assert report["fused_operators"]["Attention"] == 2 and report["fused_operators"]["EmbedLayerNormalization"] == 1
    proto = onnx.load(str(out / "onnx" / "model.onnx"))
    assert [n.op_type for n in proto.graph.node].count("Attention") == 2
    assert [o.name for o in proto.graph.output] == ["logits"]
    # the tied embedding: the head reads its own copy (ONNX Runtime pre-packs it once; a weight the lookup
    # also reads it packs again on every run), and nothing else in the graph is shared by a product
    vocab_sized = {t.name for t in proto.graph.initializer if 30522 in t.dims and len(t.dims) == 2}
    assert len(vocab_sized) == 2, vocab_sized
    readers = [name for n in proto.graph.node for name in n.input]
    products = [n.input[1] for n in proto.graph.node if n.op_type in ("Gemm", "MatMul")]
    assert all(readers.count(name) == 1 for name in products if name in vocab_sized)
    # the [MASK]-only head was validated against PyTorch, batch by batch
    assert report["validation_optimized"]["worst"]["logits at [MASK]"] <= 1e-4


@pytest.mark.parametrize("arch", ["ForMaskedLM", "Model"])
def test_int8_report_on_real_text(exported, arch):
    from helpers.models import data_file

    lines = [l for l in data_file("text", "wikitext-2-valid.txt").read_text(encoding="utf-8").splitlines() if len(l.split()) > 8]
    out, _, report = exported("distilbert", arch, optimize=True, quantize="int8", drift_texts=tuple(lines[:64]))
    saved = json.loads((out / "quantization_report.json").read_text())["int8"]
    assert saved == report["int8"] and saved["texts"] == 64 and saved["file"] == "onnx/model_quantized.onnx"
    # fp32 stores the tied embedding once; int8 twice (the lookup's table and the head's, quantized apart),
    # which in this vocabulary-heavy tiny model is most of the file
    assert saved["bytes"] < saved["bytes_fp32"] * (0.6 if arch == "ForMaskedLM" else 0.5)
    if arch == "ForMaskedLM":
        assert saved["top1_agreement"] >= 0.8 and saved["top5_overlap"] >= 0.8
    else:
        assert saved["cosine_min"] > 0.99
    int8 = distilbert.pipeline("fill-mask" if arch == "ForMaskedLM" else "feature-extraction", model=out, precision="int8")
    assert int8.backend.path.name == "model_quantized.onnx"


def test_pipelines_run_where_torch_cannot_be_imported(exported):
    out, source, _ = exported("distilbert", "ForMaskedLM")
    fe_out, _, _ = exported("bert", "Model")
    script = f"""
import sys, json
sys.modules["torch"] = None  # `import torch` now raises ImportError
import distilbert
fill = distilbert.pipeline("fill-mask", model={str(out)!r})
features = distilbert.pipeline("feature-extraction", model={str(fe_out)!r})
print(json.dumps({{"fill": fill("Hello I'm a [MASK] model.", top_k=3),
                  "embedding": features("some text", pooling="cls").tolist()}}))
try:
    distilbert.pipeline("fill-mask", model={str(source)!r})
except distilbert.UserError as e:
    print("ERROR", e)
"""
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout.splitlines()[0])
    expected = distilbert.pipeline("fill-mask", model=source, backend="torch")("Hello I'm a [MASK] model.", top_k=3)
    assert [r["token"] for r in result["fill"]] == [r["token"] for r in expected]
    assert len(result["embedding"]) == 39
    assert p.stdout.splitlines()[1].startswith("ERROR")  # torch weights without torch: a clear error


@pytest.mark.slow
@pytest.mark.skipif(not OPTIMUM_PYTHON.exists(), reason="Optimum's virtual environment .venv-optimum is not set up (scripts/test makes it)")
@pytest.mark.parametrize("family, arch, cls, output", [
    ("distilbert", "ForMaskedLM", "ORTModelForMaskedLM", "logits"),
    ("distilbert", "Model", "ORTModelForFeatureExtraction", "last_hidden_state"),
    ("bert", "ForMaskedLM", "ORTModelForMaskedLM", "logits"),
    ("bert", "Model", "ORTModelForFeatureExtraction", "last_hidden_state"),
])
def test_optimum_loads_our_export(tmp_path, exported, family, arch, cls, output):
    """from_pretrained(folder) finds onnx/model.onnx; another precision is subfolder="onnx", file_name=its graph."""
    out, _, _ = exported(family, arch, precisions="fp32,int8,q4")
    config = distilbert.Config.from_file(out / "config.json")
    arrays = validation_batch(3, 12, config, Tokenizer.from_pretrained(out), seed=3)
    np.savez(tmp_path / "in.npz", **arrays)
    for precision in ("fp32", "int8", "q4"):
        graph = [] if precision == "fp32" else [precisions.ONNX_FILES[precision]]
        p = subprocess.run([str(OPTIMUM_PYTHON), str(ROOT / "tests" / "helpers" / "optimum_outputs.py"), str(out), cls,
                            str(tmp_path / "in.npz"), str(tmp_path / "out.npz"), *graph],
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-3000:]
        theirs = np.load(tmp_path / "out.npz")[output]
        ours = OnnxBackend.load(out, precision=precision).run(**arrays)[output]
        np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-6)


def test_weights_beside_the_graph(tmp_path, exported):
    out, _, _ = exported("distilbert", "Model", quantize="int8")
    for name in ("model.onnx", "model_quantized.onnx"):
        graph = out / "onnx" / name
        assert (out / "onnx" / (name + "_data")).stat().st_size > 10 * graph.stat().st_size
        assert (out / "onnx" / (name + "_data")).stat().st_mode == graph.stat().st_mode  # not owner-only
    # the folder moves as a whole: the graph finds its weights by a relative path
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    arrays = validation_batch(2, 9, distilbert.Config.from_file(out / "config.json"), Tokenizer.from_pretrained(out))
    np.testing.assert_allclose(OnnxBackend.load(moved).run(**arrays)["last_hidden_state"],
                               OnnxBackend.load(out).run(**arrays)["last_hidden_state"], rtol=0, atol=0)


def test_bad_input(tmp_path, exported, checkpoint_factory):
    source, _ = checkpoint_factory("distilbert", "ForMaskedLM", vocab="real")
    with pytest.raises(UserError, match="does not exist"):
        export(tmp_path / "not-a-model", tmp_path / "o1", log=quiet)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        export(tmp_path / "empty", tmp_path / "o2", log=quiet)
    with pytest.raises(UserError, match="unknown task 'translation'"):
        export(source, tmp_path / "o3", task="translation", log=quiet)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        export(source, tmp_path / "file", log=quiet)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.geteuid() != 0:  # root writes anywhere; a read-only mount stands in
        with pytest.raises(UserError, match="cannot write"):
            export(source, locked / "out", log=quiet)
    with pytest.raises(UserError, match="cannot write"):
        export(source, Path("/proc/distilbert-export"), log=quiet)
    out, _, _ = exported("distilbert", "ForMaskedLM")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        (broken / name).write_bytes((out / name).read_bytes())
    (broken / "model.onnx").write_bytes((out / "onnx" / "model.onnx").read_bytes())
    for damage in ("graph", "weights", "no weights"):
        graph, weights = (out / "onnx" / "model.onnx").read_bytes(), (out / "onnx" / "model.onnx_data").read_bytes()
        (broken / "model.onnx").write_bytes(graph[: len(graph) // 2] if damage == "graph" else graph)
        (broken / "model.onnx_data").write_bytes(weights[: len(weights) // 2] if damage == "weights" else weights)
        if damage == "no weights":
            (broken / "model.onnx_data").unlink()
        with pytest.raises(UserError, match="not a loadable ONNX model") as e:
            distilbert.pipeline("fill-mask", model=broken)
        assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="exported for fill-mask .* not feature-extraction"):
        distilbert.pipeline("feature-extraction", model=out)
    with pytest.raises(UserError, match=r"no int8 graph \(model_quantized.onnx\)"):
        distilbert.pipeline("fill-mask", model=out, precision="int8")


def test_cli_export_and_bad_input(tmp_path, checkpoint_factory):
    from helpers.cli import assert_user_error, run

    source, _ = checkpoint_factory("bert", "ForSequenceClassification", vocab="real")
    p = run("export", source, tmp_path / "cls", "--optimize")
    assert "worst |onnx - torch| for logits" in p.stderr and "fused operators" in p.stderr
    report = json.loads((tmp_path / "cls" / "export_report.json").read_text())
    assert report["task"] == "text-classification" and report["fused_operators"]["Attention"] == 2
    assert_user_error(run("export", tmp_path / "nothing", tmp_path / "x", ok=False), "does not exist")
    usage = run("export", source, tmp_path / "y", "--task", "translation", ok=False)
    assert usage.returncode == 2 and "invalid choice" in usage.stderr and "Traceback" not in usage.stderr
    assert_user_error(run("export", source, "/proc/no-such-place/out", ok=False), "cannot write")
    (tmp_path / "cls" / "onnx" / "model.onnx").write_bytes(b"\x08\x07garbage")
    assert_user_error(run("embed", "--model", tmp_path / "cls", stdin="text\n", ok=False), "not a loadable ONNX model")


def test_validation_fails_on_a_graph_that_differs(tmp_path, exported, checkpoint_factory):
    from distilbert.onnx.export import validate

    out, source, _ = exported("distilbert", "Model")
    proto = onnx.load(str(out / "onnx" / "model.onnx"))
    for tensor in proto.graph.initializer:  # one weight off by a little
        if tensor.dims == [39, 37] or tensor.dims == [37, 39]:
            values = onnx.numpy_helper.to_array(tensor).copy()
            values[0, 0] += 0.05
            tensor.CopyFrom(onnx.numpy_helper.from_array(values, tensor.name))
            break
    else:
        pytest.fail("no feed-forward weight found")
    onnx.save(proto, str(tmp_path / "model.onnx"))
    net, config, _ = load(source, task="feature-extraction")
    with pytest.raises(UserError, match=r"validation failed: .* differs from PyTorch by .* in last_hidden_state"):
        validate(net, tmp_path / "model.onnx", config, Tokenizer.from_pretrained(out), "feature-extraction", quiet)


def test_an_export_replaces_what_an_earlier_one_left(tmp_path, checkpoint_factory, exported):
    """Re-exporting without --quantize must not leave the earlier int8 graph for --precision int8 to run."""
    earlier, _, _ = exported("distilbert", "ForMaskedLM", quantize="int8")
    out = tmp_path / "out"
    shutil.copytree(earlier, out)
    for name in ("model_quantized.onnx", "model_quantized.onnx_data"):  # the older layout's copy too
        shutil.copy(earlier / "onnx" / name, out / name)
    said = []
    source, _ = checkpoint_factory("bert", "ForMaskedLM", vocab="real")  # another model into the same folder
    export(source, out, log=said.append)
    assert not list(out.rglob("model_quantized.onnx*")) and not (out / "quantization_report.json").exists()
    assert any("removed model_quantized.onnx" in line for line in said)
    assert any("removed onnx/model_quantized.onnx" in line for line in said)
    with pytest.raises(UserError, match=r"no int8 graph \(model_quantized.onnx\)"):
        distilbert.pipeline("fill-mask", model=out, precision="int8")
    assert distilbert.pipeline("fill-mask", model=out).backend.config.family == "bert"


# --- the hub's layout and precisions ------------------------------------------------------------------------

ALL = "fp32,int8,fp16,q4,q4f16"


@pytest.mark.parametrize("arch", ["ForMaskedLM", "Model", "ForSequenceClassification"])
def test_every_precision_is_written_validated_and_measured(exported, arch):
    """One folder, the hub's layout: graphs under onnx/ named as transformers.js names its dtypes, each validated
    against fp32 on the shape grid, measured on real text, and run by our pipelines with `precision=`."""
    from distilbert.onnx.quantize import TOLERANCES

    out, _, report = exported("distilbert", arch, precisions=ALL)
    assert report["precisions"] == ALL.split(",")
    for precision, name in precisions.ONNX_FILES.items():
        assert (out / "onnx" / name).is_file() and (out / "onnx" / (name + "_data")).is_file(), name
        assert not (out / name).exists()  # no second copy in the root
    config = json.loads((out / "config.json").read_text())
    assert config["transformers.js_config"]["use_external_data_format"] == {n: 1 for n in precisions.ONNX_FILES.values()}
    saved = json.loads((out / "quantization_report.json").read_text())
    assert set(saved) == {"int8", "fp16", "q4", "q4f16"}
    for precision, measured in saved.items():
        assert measured == report[precision]
        assert measured["file"] == f"onnx/{precisions.ONNX_FILES[precision]}"
        assert 0 < measured["bytes"] < measured["bytes_fp32"]
        worst = measured["validation"]["worst_relative"]
        assert max(worst.values()) <= TOLERANCES[precision] == measured["validation"]["tolerance"]
        assert measured["texts"] == 4
    assert max(saved["fp16"]["validation"]["worst_relative"].values()) < 2e-3  # float16's three digits
    assert saved["fp16"]["bytes"] < 0.6 * saved["fp16"]["bytes_fp32"]
    assert saved["q4"]["bytes"] < saved["int8"]["bytes"] and saved["q4f16"]["bytes"] < saved["q4"]["bytes"]
    ops = {p: {n.op_type for n in onnx.load(str(out / "onnx" / precisions.ONNX_FILES[p]), load_external_data=False).graph.node}
           for p in ("q4", "q4f16")}
    for found in ops.values():  # the products, the head, and the embedding tables in 4-bit blocks
        assert {"MatMulNBits", "GatherBlockQuantized"} <= found and "Gemm" not in found
    task = TASK_OF_ARCH[arch]
    text = {"fill-mask": "Hello I'm a [MASK] model.", "feature-extraction": "Hello world",
            "text-classification": "I loved it."}[task]
    exact = distilbert.pipeline(task, model=out)(text)
    for precision in ("int8", "q8", "fp16", "q4", "q4f16"):
        pipe = distilbert.pipeline(task, model=out, precision=precision)
        assert pipe.backend.path.name == precisions.onnx_file(precision)
        got = pipe(text)
        if task == "feature-extraction":
            tolerance = 2e-3 if precision == "fp16" else 0.25
            assert np.abs(got - exact).max() <= tolerance * np.abs(exact).max(), precision
        elif precision == "fp16":
            assert got[0]["score"] == pytest.approx(exact[0]["score"], rel=1e-2)
    # fp16 keeps the ops float16 would lose in float32, and its inputs and outputs as they were
    proto = onnx.load(str(out / "onnx" / "model_fp16.onnx"), load_external_data=False)
    assert [i.type.tensor_type.elem_type for i in proto.graph.output] == [onnx.TensorProto.FLOAT] * len(proto.graph.output)
    norms = [n for n in proto.graph.node if n.op_type == "LayerNormalization"]
    assert norms and all(proto_input_is_float32(proto, n.input[0]) for n in norms)


def proto_input_is_float32(proto, name: str) -> bool:
    """Whether a tensor of the graph is float32: made by a Cast to float, or typed so."""
    for node in proto.graph.node:
        if name in node.output and node.op_type == "Cast":
            return next(a.i for a in node.attribute if a.name == "to") == onnx.TensorProto.FLOAT
    infos = {v.name: v for v in list(proto.graph.value_info) + list(proto.graph.input)}
    return name in infos and infos[name].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_precision_bad_input(tmp_path, exported, checkpoint_factory):
    """A precision the folder lacks, an unknown one, and q4 on a model too small for 4-bit blocks: one line
    each, and nothing written."""
    from helpers.cli import assert_user_error, run

    out, source, _ = exported("distilbert", "ForMaskedLM")
    with pytest.raises(UserError, match=r"no q4 graph \(model_q4.onnx\) in .*; it has fp32: pass one of those, or "
                                        r"export it with `distilbert export MODEL OUT --precision q4`"):
        distilbert.pipeline("fill-mask", model=out, precision="q4", backend="onnx")
    with pytest.raises(UserError, match="unknown precision 'fp8'"):
        export(source, tmp_path / "x", precisions="fp32,fp8", log=quiet)
    with pytest.raises(UserError, match="bf16 is not an ONNX export precision"):
        export(source, tmp_path / "x", precisions="bf16", log=quiet)
    small, _ = checkpoint_factory("distilbert", "ForMaskedLM", vocab="real", dim=16, n_heads=2, hidden_dim=20)
    for precisions_ in ("q4", "fp16,q4f16"):
        with pytest.raises(UserError, match="hidden size is 16 and its feed-forward size 20: too small for 4-bit blocks"):
            export(small, tmp_path / "small", precisions=precisions_, log=quiet)
        assert not (tmp_path / "small").exists()
    assert_user_error(run("export", small, tmp_path / "small", "--precision", "q4", ok=False), "too small for 4-bit")
    assert not (tmp_path / "small").exists()
    assert_user_error(run("export", source, tmp_path / "y", "--precision", "fp32,int4", ok=False),
                      "unknown precision 'int4'")
    assert_user_error(run("fill-mask", "a [MASK].", "--model", out, "--precision", "fp16", ok=False),
                      "no fp16 graph (model_fp16.onnx)", "it has fp32")
    assert not (tmp_path / "y").exists()
    quantized, _, _ = exported("distilbert", "ForMaskedLM", precisions="fp32,q4")
    for damage in ("truncated", "missing"):  # a q4 graph whose weights file is cut short, or gone
        broken = tmp_path / f"q4-{damage}"
        shutil.copytree(quantized, broken)
        weights = broken / "onnx" / "model_q4.onnx_data"
        if damage == "missing":
            weights.unlink()
        else:
            weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        assert_user_error(run("fill-mask", "a [MASK].", "--model", broken, "--precision", "q4", ok=False),
                          "model_q4.onnx is not a loadable ONNX model")


def test_cli_exports_precisions_and_runs_each(tmp_path, checkpoint_factory):
    from helpers.cli import run

    source, _ = checkpoint_factory("bert", "ForMaskedLM", vocab="real")
    p = run("export", source, tmp_path / "out", "--precision", "fp16,q8", "--drift-text", str(data_file_lines(tmp_path)))
    assert "onnx/model.onnx, onnx/model_quantized.onnx, onnx/model_fp16.onnx" in p.stdout
    report = json.loads((tmp_path / "out" / "quantization_report.json").read_text())
    assert set(report) == {"int8", "fp16"} and report["fp16"]["texts"] == 8
    for precision in ("fp32", "q8", "fp16"):
        p = run("fill-mask", "Paris is the [MASK] of France.", "--model", tmp_path / "out", "--precision", precision,
                "--top-k", "2", "--json")
        assert len(json.loads(p.stdout)) == 2


def data_file_lines(tmp_path):
    path = tmp_path / "drift.txt"
    path.write_text("\n".join(f"line {i} of some text about paris and france and the things there" for i in range(8)))
    return path
