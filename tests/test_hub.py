"""Hub ids resolved from a Hugging Face cache laid out on disk (offline): each caller asks for what it runs.

The cache's tree listing says the repositories also hold PyTorch weights, as real ones do; the snapshots
hold only what a torch-free install would have fetched. A request for weights would fail (the snapshot
is incomplete for it) and is also seen directly: huggingface_hub.snapshot_download is wrapped to record
the patterns asked for, and the real function still runs.
"""

import json
import subprocess
import sys
from fnmatch import fnmatch

import pytest

import distilbert
from distilbert import hub, precisions
from helpers.cli import environment

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TORCH_FILES = ("model.safetensors", "pytorch_model.bin")
METADATA = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt")
TEXT = "Hello I'm a [MASK] model."


def lay_out(cache, repo_id, files, claims_torch=True):
    """A snapshot in the hub cache holding `files` {path in repo: bytes}, its tree listing claiming the weights too
    (unless not claims_torch: a repository of ONNX graphs alone)."""
    storage = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = storage / "snapshots" / COMMIT
    for name, data in files.items():
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).write_bytes(data)
    (storage / "refs").mkdir(parents=True)
    (storage / "refs" / "main").write_text(COMMIT)
    listing = {name: {"size": len(data), "blob_id": "0" * 40} for name, data in files.items()}
    if claims_torch:
        listing.update({name: {"size": 1000, "blob_id": "1" * 40} for name in TORCH_FILES})
    (storage / "trees").mkdir()
    (storage / "trees" / f"{COMMIT}.json").write_text(json.dumps({"format_version": 1, "files": listing}))
    return snapshot


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory, exported):
    """org/onnx-subfolder keeps its graph in onnx/; org/int8-only holds onnx/model_quantized.onnx alone;
    org/onnx-only holds every precision's graph under onnx/ and no PyTorch weights, as the hub's ONNX repositories
    do; org/root-layout keeps model.onnx and model_quantized.onnx in its root (the older layout, Optimum's)."""
    out, source, _ = exported("distilbert", "ForMaskedLM", precisions="fp32,int8,q4")
    cache = tmp_path_factory.mktemp("hub-cache")
    metadata = {name: (out / name).read_bytes() for name in METADATA}
    graphs = {f"onnx/{p.name}": p.read_bytes() for p in (out / "onnx").iterdir()}
    graph = {name: data for name, data in graphs.items() if name.startswith("onnx/model.onnx")}
    int8 = {name: data for name, data in graphs.items() if name.startswith("onnx/model_quantized.onnx")}
    lay_out(cache, "org/onnx-subfolder", {**metadata, **graph})
    lay_out(cache, "org/int8-only", {**metadata, **int8})
    lay_out(cache, "org/onnx-only", {**metadata, **graphs}, claims_torch=False)
    lay_out(cache, "org/root-layout", {**metadata, **{k[len("onnx/"):]: v for k, v in {**graph, **int8}.items()}},
            claims_torch=False)
    return cache, out


@pytest.fixture()
def requested(hub_cache, monkeypatch):
    """Offline on the cache; the patterns each snapshot_download call asked for, in order."""
    import huggingface_hub
    import huggingface_hub.constants

    cache, _ = hub_cache
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    calls = []
    real = huggingface_hub.snapshot_download

    def recording(repo_id, **kwargs):
        calls.append(list(kwargs.get("allow_patterns") or ["*"]))
        return real(repo_id, **kwargs)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", recording)
    return calls


def same(a, b):
    assert [x["token"] for x in a] == [x["token"] for x in b]
    assert max(abs(x["score"] - y["score"]) for x, y in zip(a, b)) < 1e-6


WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model-00001-of-00002.safetensors",
           "pytorch_model-00001-of-00002.bin")  # the weights themselves (their small index files are JSON)


def would_download(patterns, filename):
    return any(fnmatch(filename, p) for p in patterns)


def asks_for_torch_weights(patterns):
    return [p for p in patterns if any(would_download([p], name) for name in WEIGHTS)]


def test_onnx_need_never_asks_for_torch_weights(requested):
    folder = hub.resolve("org/onnx-subfolder", need="onnx")
    assert hub.locate_onnx(folder) == folder / "onnx" / "model.onnx"
    assert hub.locate_onnx(hub.resolve("org/int8-only", need="onnx"), "int8").name == "model_quantized.onnx"
    hub.resolve("org/int8-only", need="tokenizer")
    assert len(requested) == 3
    for patterns in requested:
        assert asks_for_torch_weights(patterns) == [], patterns
    assert all(would_download(requested[0], name) for name in ("onnx/model.onnx", "onnx/model.onnx_data"))
    assert would_download(requested[1], "onnx/model_quantized.onnx")
    # while the torch need does ask for them (and so fails on this torch-free snapshot)
    with pytest.raises(distilbert.UserError, match="cannot download"):
        hub.resolve("org/onnx-subfolder", need="torch")
    assert asks_for_torch_weights(requested[3])


def test_pipelines_run_from_the_cache(requested, hub_cache):
    _, out = hub_cache
    expected = distilbert.pipeline("fill-mask", model=out)(TEXT, top_k=3)
    fill = distilbert.pipeline("fill-mask", model="org/onnx-subfolder", backend="onnx")
    assert fill.backend.path.parent.name == "onnx"
    same(fill(TEXT, top_k=3), expected)
    int8 = distilbert.pipeline("fill-mask", model="org/int8-only", precision="int8")
    assert int8.backend.path.name == "model_quantized.onnx"
    same(int8(TEXT, top_k=3), distilbert.pipeline("fill-mask", model=out, precision="int8")(TEXT, top_k=3))
    assert all(asks_for_torch_weights(patterns) == [] for patterns in requested)


REPOSITORY = [f"onnx/{name}{tail}" for name in precisions.ONNX_FILES.values() for tail in ("", "_data")]


@pytest.mark.parametrize("repo", ["org/onnx-only", "org/root-layout"])
@pytest.mark.parametrize("precision", [None, "int8", "q8", "q4"])
def test_a_repository_of_onnx_graphs_runs_by_default_downloading_one_precision(requested, hub_cache, repo, precision):
    """With PyTorch installed and no backend named, a repository holding only ONNX graphs runs on ONNX Runtime;
    what is asked of the hub is the config, the tokenizer and the one graph (and its weights) that is run."""
    _, out = hub_cache
    if repo == "org/root-layout" and precision == "q4":
        with pytest.raises(distilbert.UserError, match=r"no q4 graph \(model_q4.onnx\) .* it has fp32, int8"):
            distilbert.pipeline("fill-mask", model=repo, precision=precision)
        return
    fill = distilbert.pipeline("fill-mask", model=repo, precision=precision)
    name = precisions.onnx_file(precision or "fp32")
    assert type(fill.backend).__name__ == "OnnxBackend" and fill.backend.path.name == name
    same(fill(TEXT, top_k=3), distilbert.pipeline("fill-mask", model=out, precision=precision)(TEXT, top_k=3))
    files = REPOSITORY + [name[len("onnx/"):] for name in REPOSITORY] + list(METADATA)
    fetched = {f for f in files for patterns in requested if would_download(patterns, f)}
    graphs = {f for f in fetched if ".onnx" in f}
    assert graphs <= {name, name + "_data", f"onnx/{name}", f"onnx/{name}_data"}, graphs
    assert set(METADATA) <= fetched


def test_the_torch_free_path_from_the_cache(hub_cache):
    """Where torch cannot be imported, the default backend resolves the hub id for ONNX alone."""
    cache, out = hub_cache
    script = f"""
import json, sys
sys.modules["torch"] = None  # `import torch` now raises ImportError
import huggingface_hub
import distilbert
calls, real = [], huggingface_hub.snapshot_download
def recording(repo_id, **kwargs):
    calls.append(kwargs.get("allow_patterns"))
    return real(repo_id, **kwargs)
huggingface_hub.snapshot_download = recording
fill = distilbert.pipeline("fill-mask", model="org/onnx-subfolder")
int8 = distilbert.pipeline("fill-mask", model="org/int8-only", precision="int8")
print(json.dumps({{"fill": fill({TEXT!r}, top_k=3), "int8": int8({TEXT!r}, top_k=3), "calls": calls}}))
"""
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                       env=environment(HF_HUB_CACHE=str(cache)))
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout)
    same(result["fill"], distilbert.pipeline("fill-mask", model=out)(TEXT, top_k=3))
    same(result["int8"], distilbert.pipeline("fill-mask", model=out, precision="int8")(TEXT, top_k=3))
    assert result["calls"] and all(asks_for_torch_weights(patterns) == [] for patterns in result["calls"])
