"""backends/: the choice of backend, the natural one for a folder, the ONNX export cache, and thread counts."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from distilbert.backends import BACKENDS, load_backend
from distilbert.backends.export_cache import cache_root
from distilbert.errors import UserError
from helpers.cli import environment

IDS = np.array([[101, 7592, 103, 2088, 102], [101, 103, 102, 0, 0]], dtype=np.int64)
MASK = (IDS != 0).astype(np.int64)


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILBERT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def kind(backend):
    return type(backend).__name__


def test_backend_choices(mlm_checkpoint, exported, cache):
    source, _ = mlm_checkpoint
    out, _, _ = exported("distilbert", "ForMaskedLM", quantize="int8")
    assert BACKENDS == ("torch", "onnx", "keras", "openvino")
    with pytest.raises(UserError, match="unknown backend 'tensorflow'; expected one of torch, onnx, keras, openvino"):
        load_backend(source, backend="tensorflow")
    assert kind(load_backend(source, backend="torch")) == "TorchBackend"
    assert kind(load_backend(out, backend="onnx")) == "OnnxBackend"
    with pytest.raises(UserError, match="not available with the torch backend"):
        load_backend(source, backend="torch", precision="int8")
    with pytest.raises(UserError, match="not available with the onnx backend"):
        load_backend(out, backend="onnx", precision="bf16")
    with pytest.raises(UserError, match="unknown precision 'fp8'"):
        load_backend(out, precision="fp8")
    with pytest.raises(UserError, match="compile is for the torch backend, not the onnx backend"):
        load_backend(out, backend="onnx", compile=True)
    with pytest.raises(UserError, match="compile is for the torch backend, not the onnx backend"):
        load_backend(out, compile=True)  # an exported folder: ONNX Runtime by nature
    # every backend answers the same interface with the same numbers
    a = load_backend(source, backend="torch").run(IDS, MASK)["logits"]
    b = load_backend(out, backend="onnx").run(IDS, MASK)["logits"]
    assert a.shape == b.shape == (2, 5, 30522)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)
    at = IDS == 103
    np.testing.assert_allclose(load_backend(out).run(IDS, MASK, logits_at=at)["logits"], a[at], rtol=0, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("model, precision", [("mlm", "fp32"), ("mlm", "bf16"), ("bert", "fp32")])
def test_a_compiled_torch_backend_gives_the_eager_numbers(checkpoint_factory, cache, model, precision):
    """torch.compile (TorchInductor, dynamic shapes, frozen weights), compiled at load: eager's numbers for
    batch sizes and lengths it has not seen, padded rows, token types and the masked-LM gather (one [MASK] in
    a batch, several, two in a row) included, with no compiling after load. Asked to compile with no backend
    named, a checkpoint runs on PyTorch even where the export cache holds an ONNX export of it."""
    import torch
    from torch._dynamo.utils import counters

    source, _ = (checkpoint_factory("distilbert", "ForMaskedLM", vocab="real") if model == "mlm"
                 else checkpoint_factory("bert", "ForSequenceClassification", vocab="real"))
    eager = load_backend(source, backend="torch", precision=precision)
    before = counters["stats"]["unique_graphs"]
    if model == "mlm" and precision == "fp32":
        load_backend(source, backend="onnx")  # exported into the cache
        assert kind(load_backend(source)) == "OnnxBackend"
        compiled = load_backend(source, compile=True)
    else:
        compiled = load_backend(source, backend="torch", precision=precision, compile=True)
    assert kind(compiled) == "TorchBackend" and isinstance(compiled.net, torch._dynamo.eval_frame.OptimizedModule)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs > before  # compiled at load
    rng = np.random.default_rng(0)
    for rows, length in ((1, 5), (3, 17), (7, 9), (2, 40), (1, 12)):
        ids = rng.integers(1000, 30000, (rows, length))
        ids[:, 0], ids[:, length // 2], ids[0, 1] = 101, 103, 103
        mask = np.ones_like(ids)
        mask[-1, length // 2 + 1:] = 0  # the last row padded
        types = None if model == "mlm" else (np.arange(length) >= length // 2).astype(np.int64)[None].repeat(rows, 0)
        at, first = ids == 103, np.zeros(ids.shape, dtype=bool)
        first[0, 1] = True  # a single [MASK] in the batch
        pairs = [(compiled.run(ids, mask, types), eager.run(ids, mask, types))]
        if model == "mlm":
            pairs += [(compiled.run(ids, mask, logits_at=a), eager.run(ids, mask, logits_at=a)) for a in (at, first)]
        for a, b in pairs:
            x, y = a["logits"], b["logits"]
            x, y = (x[mask.astype(bool)], y[mask.astype(bool)]) if x.ndim == 3 else (x, y)
            if precision == "fp32":
                np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)
            else:  # bfloat16 rounds each fused operation's result once, eager each operation's
                cosine = (x * y).sum(-1) / np.linalg.norm(x, axis=-1) / np.linalg.norm(y, axis=-1)
                assert cosine.min() > 0.999
    assert counters["stats"]["unique_graphs"] == graphs


def test_the_natural_backend(mlm_checkpoint, exported, cache):
    source, _ = mlm_checkpoint
    out, _, _ = exported("distilbert", "ForMaskedLM", quantize="int8")
    assert kind(load_backend(source)) == "TorchBackend"  # a checkpoint, nothing cached: PyTorch
    assert kind(load_backend(out)) == "OnnxBackend"  # an exported folder
    int8 = load_backend(out, precision="int8")
    assert kind(int8) == "OnnxBackend" and int8.path.name == "model_quantized.onnx"
    assert not (cache / "onnx").exists()  # looking for a cached export made none


def test_the_export_cache(tmp_path, mlm_checkpoint, cache, capsys):
    source, _ = mlm_checkpoint
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(source, checkpoint)
    first = load_backend(checkpoint, backend="onnx")
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and said[0].startswith(f"exporting {checkpoint} to ONNX once") and str(cache) in said[0]
    assert first.path.is_relative_to(cache) and first.path.name == "model.onnx"
    assert json.loads((first.folder / "export_report.json").read_text())["task"] == "fill-mask"
    made = first.path.stat().st_mtime_ns

    again = load_backend(checkpoint, backend="onnx")
    assert again.path == first.path and again.path.stat().st_mtime_ns == made
    assert capsys.readouterr().err == ""
    natural = load_backend(checkpoint)  # the default backend now finds the export
    assert kind(natural) == "OnnxBackend" and natural.path == first.path
    assert kind(load_backend(checkpoint, precision="bf16")) == "TorchBackend"  # bf16 is PyTorch's alone
    expected = load_backend(checkpoint, backend="torch").run(IDS, MASK)["logits"]
    np.testing.assert_allclose(natural.run(IDS, MASK)["logits"], expected, rtol=0, atol=1e-4)

    weights = load_file(checkpoint / "model.safetensors")  # retrained: every weight moves
    save_file({k: v + np.float32(0.01) if v.dtype == np.float32 else v for k, v in weights.items()},
              checkpoint / "model.safetensors", metadata={"format": "pt"})
    assert kind(load_backend(checkpoint)) == "TorchBackend"  # its old export no longer applies
    edited = load_backend(checkpoint, backend="onnx")
    assert edited.path != first.path and "exporting" in capsys.readouterr().err
    changed = load_backend(checkpoint, backend="torch").run(IDS, MASK)["logits"]
    np.testing.assert_allclose(edited.run(IDS, MASK)["logits"], changed, rtol=0, atol=1e-4)
    assert cache_root() == cache


def test_the_checkpoint_digest_covers_every_file_a_load_reads(tmp_path, cache, checkpoint_factory):
    """Weight shards (safetensors and .bin, named by an index), tokenizer and sentence-transformers files: an
    edit to any of them is another checkpoint, whose cached export must not be served."""
    import torch

    from distilbert.backends.export_cache import checkpoint_digest
    from helpers.models import VOCAB, save_reference, sentence_transformers_folder

    _, ref = checkpoint_factory("distilbert", "ForMaskedLM", vocab="real")
    folder = save_reference(ref, tmp_path / "sharded", max_shard_size="2MB")
    shards = sorted(set(json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"].values()))
    assert len(shards) >= 2 and not (folder / "model.safetensors").exists()
    shutil.copy(VOCAB, folder / "vocab.txt")  # what a folder without tokenizer.json is read from
    bins = tmp_path / "bins"  # the same weights as pytorch_model-0000i-of-0000n.bin shards
    bins.mkdir()
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        name = f"pytorch_model-{i:05d}-of-{len(shards):05d}.bin"
        tensors = load_file(folder / shard)
        torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, bins / name)
        weight_map.update((k, name) for k in tensors)
    (bins / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    shutil.copy(folder / "config.json", bins / "config.json")

    def bump_safetensors(path):
        tensors = load_file(path)
        save_file({k: v + np.float32(0.01) for k, v in tensors.items()}, path, metadata={"format": "pt"})

    def bump_bin(path):
        torch.save({k: v + 0.01 for k, v in torch.load(path, weights_only=True).items()}, path)

    def edit(path, old, new):
        text = path.read_text()
        assert old in text, (path, old)
        path.write_text(text.replace(old, new, 1))

    st = tmp_path / "st"
    changes = [  # each one a checkpoint that loads differently from all before it
        (folder, lambda: bump_safetensors(folder / shards[-1])),
        (folder, lambda: edit(folder / "vocab.txt", "\nthe\n", "\nthee\n")),
        (folder, lambda: edit(folder / "tokenizer.json", '"the"', '"thee"')),
        (folder, lambda: edit(folder / "tokenizer_config.json", '"do_lower_case": true', '"do_lower_case": false')),
        (folder, lambda: (folder / "special_tokens_map.json").write_text(json.dumps({"unk_token": "[UNK]"}))),
        (st, lambda: sentence_transformers_folder(folder, st, pooling="mean")),
        (st, lambda: edit(st / "1_Pooling" / "config.json", '"pooling_mode_mean_tokens": true',
                          '"pooling_mode_mean_tokens": false, "pooling_mode_max_tokens": true')),
        (st, lambda: (st / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 8}))),
        (bins, lambda: None),
        (bins, lambda: bump_bin(bins / weight_map["vocab_projector.bias"])),
        (bins, lambda: bump_bin(bins / sorted(set(weight_map.values()))[-1])),
    ]
    seen = [checkpoint_digest(folder)]
    for where, change in changes:
        change()
        seen.append(checkpoint_digest(where))
        assert len(set(seen)) == len(seen), f"change {len(seen) - 1} kept the digest of an earlier checkpoint"
    moved = tmp_path / "moved"
    shutil.copytree(st, moved)
    assert checkpoint_digest(moved) == checkpoint_digest(st)  # a moved copy still finds its export


def test_threads_follow_the_cpu_affinity(exported):
    """A process allowed one CPU uses one thread, whatever the machine has (as in a limited container)."""
    out, _, _ = exported("distilbert", "ForMaskedLM")
    script = f"""
import json, os
os.sched_setaffinity(0, {{min(os.sched_getaffinity(0))}})
from distilbert.backends.onnx import OnnxBackend, usable_cores
backend = OnnxBackend.load({str(out)!r})
print(json.dumps([usable_cores(), backend.session.get_session_options().intra_op_num_threads]))
"""
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=environment())
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == [1, 1]


def test_choose_over_every_combination():
    """The one pure choice, over every backend asked (or none), precision, install and set of files: what it
    picks can run the precision, a named backend is honoured, PyTorch is never picked where it is missing, an
    export is planned only where a PyTorch checkpoint and PyTorch are at hand and only of the graph the chosen
    backend reads (OpenVINO: the fp32 graph, for bf16 too), OpenVINO is never picked unless named, and each
    refusal is one line."""
    import itertools

    from distilbert.backends.choice import choose
    from distilbert.precisions import GRAPHS, PRECISIONS, SUPPORTED

    graph_sets = [(), ("fp32",), ("fp32", "int8"), tuple(p for p in PRECISIONS if p in SUPPORTED["onnx"])]
    seen = 0
    for backend, precision, installed, weights, graphs, cached, compile in itertools.product(
            (None, *BACKENDS), PRECISIONS, (False, True), (False, True), graph_sets, ((), ("fp32",), ("int8",)),
            (False, True)):
        if cached and not (weights and installed):
            continue  # only a checkpoint on a machine with PyTorch has a cached export
        try:
            c = choose(backend, precision, torch_installed=installed, torch_weights=weights, graphs=graphs,
                       cached=cached, compile=compile)
        except UserError as e:
            assert "\n" not in str(e)
            reasons = [backend is not None and precision not in SUPPORTED[backend],
                       compile and backend not in (None, "torch"),
                       compile and backend is None and (not weights and bool(graphs) or precision not in SUPPORTED["torch"]),
                       not installed, not weights and bool(graphs)]
            assert any(reasons), (backend, precision, installed, weights, graphs, cached, compile, str(e))
            continue
        seen += 1
        assert precision in SUPPORTED[c.backend] and c.precision == precision
        assert backend is None or c.backend == backend
        assert c.backend != "torch" or installed
        graph = GRAPHS[c.backend][precision] if c.backend in GRAPHS else None
        assert c.graph == graph and (graph is None or graph in SUPPORTED["onnx"])
        assert not c.export or (weights and installed and graph is not None and graph not in graphs)
        assert not c.cached or (graph is not None and graph in cached)
        assert not (c.export and c.cached)
        if graph is not None and graph not in graphs and not c.cached:  # nothing to run but an export
            assert c.export or not (weights and installed)
        if c.backend == "openvino":
            assert graph == "fp32"
        if compile:
            assert c.backend == "torch"
        if backend is None:
            assert c.backend != "openvino"  # opt-in
        if backend is None and not compile:
            if precision == "bf16":
                assert c.backend == "torch"
            elif installed and weights and precision == "fp32":
                assert c.backend == ("onnx" if "fp32" in cached else "torch")
            elif graphs and not weights:
                assert c.backend == "onnx"  # an exported folder, or a hub repository of graphs alone
            elif not installed:
                assert c.backend == "onnx"
    assert seen > 300  # the runnable combinations
