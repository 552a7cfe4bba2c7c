"""Fill-mask latency of the model card's text on ONNX Runtime fp32, OpenVINO f32 and OpenVINO bf16, and how often
OpenVINO's answers agree with ONNX Runtime's. Writes benchmarks/results-openvino.json.

usage: python benchmarks/openvino_latency.py [--model EXPORT] [--calls 30]

EXPORT: a full-size DistilBERT fill-mask export (default benchmarks/.cache/ours-fill-mask, which run.py makes; if
it is absent, a random-weight distilbert-base-uncased-sized checkpoint is made and exported with --optimize, as
run.py does, fp32 only). Each runtime is a fill-mask pipeline with its default threads; calls alternate between
runtimes in rounds, so the machine's drift over minutes lands on all of them alike. Also measured: the start
(pipeline load) of each, and OpenVINO's own model cache (CACHE_DIR), which the backend does not use.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CACHE = ROOT / "benchmarks" / ".cache"
DATA = ROOT.parent / "shared" / "data"
CARD = "Hello I'm a [MASK] model."
RUNTIMES = {"onnxruntime-fp32": ("onnx", "fp32"), "openvino-f32": ("openvino", "fp32"),
            "openvino-bf16": ("openvino", "bf16")}


def make_export(out: Path) -> None:
    """A random full-size DistilBERT masked LM (run.py's, seed 0) exported as run.py exports it, fp32 alone."""
    checkpoint = CACHE / "hf"
    if not (checkpoint / "model.safetensors").exists():
        vocab = DATA / "vocab" / "bert-base-uncased-vocab.txt"
        script = f"""
import torch, transformers
torch.manual_seed(0)
model = transformers.DistilBertForMaskedLM(transformers.DistilBertConfig())  # distilbert-base-uncased's sizes
model.save_pretrained({str(checkpoint)!r})
transformers.BertTokenizerFast({str(vocab)!r}).save_pretrained({str(checkpoint)!r})
"""
        subprocess.run([sys.executable, "-c", script], check=True)
    print(f"exporting {checkpoint} to {out} (about a minute)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "distilbert.cli", "export", str(checkpoint), str(out), "--task", "fill-mask",
                    "--optimize"], check=True, stdout=subprocess.DEVNULL, cwd=ROOT)


def masked_lines(n: int) -> list[str]:
    """WikiText-2 lines of 8 to 60 words, one word in the middle masked: texts to compare answers on."""
    path = DATA / "text" / "wikitext-2-valid.txt"
    lines = [line.split() for line in path.read_text(encoding="utf-8").splitlines() if 8 <= len(line.split()) <= 60]
    rng = np.random.default_rng(0)
    texts = []
    for i in rng.choice(len(lines), n, replace=False):
        words = list(lines[i])
        words[len(words) // 2] = "[MASK]"
        texts.append(" ".join(words))
    return texts


def model_cache(export: Path) -> dict:
    """OpenVINO's CACHE_DIR: compile seconds with none, with an empty cache (it writes the blob), with a warm one."""
    import openvino as ov

    from distilbert.backends.openvino import feed_all_positions

    seconds, size = {}, 0
    with tempfile.TemporaryDirectory() as cache:
        for name in ("none", "cold", "warm"):
            core = ov.Core()
            if name != "none":
                core.set_property({"CACHE_DIR": cache})
            start = time.perf_counter()
            net = core.read_model(str(export / "onnx" / "model.onnx"))
            feed_all_positions(ov, net)
            compiled = core.compile_model(net, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "ENABLE_CPU_PINNING": False})
            seconds[name] = time.perf_counter() - start
            del compiled
        size = sum(p.stat().st_size for p in Path(cache).rglob("*") if p.is_file())
    return {"read_and_compile_s": seconds, "blob_mib": size / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(CACHE / "ours-fill-mask"))
    parser.add_argument("--calls", type=int, default=30, help="timed calls per runtime (the median is reported)")
    parser.add_argument("--texts", type=int, default=100, help="texts for top-1 / top-5 agreement")
    args = parser.parse_args()

    import onnxruntime
    import openvino

    import distilbert
    from distilbert.backends.openvino import bf16_supported

    export = Path(args.model)
    if not (export / "onnx" / "model.onnx").exists():
        make_export(export)
    runtimes = dict(RUNTIMES)
    if not bf16_supported():
        print("this CPU has no bfloat16 instructions: openvino-bf16 left out", file=sys.stderr)
        runtimes.pop("openvino-bf16")

    load_before = os.getloadavg()[0]  # other jobs on these cores move every figure; recorded beside them
    pipes, load_s = {}, {}
    for name, (backend, precision) in runtimes.items():
        start = time.perf_counter()
        pipes[name] = distilbert.pipeline("fill-mask", model=export, backend=backend, precision=precision)
        pipes[name](CARD)  # the first call: shapes, allocators, thread pools
        load_s[name] = time.perf_counter() - start

    samples: dict[str, list[float]] = {name: [] for name in pipes}
    rounds = 3
    for _ in range(rounds):  # alternating: each runtime a third of its calls per round
        for name, fill in pipes.items():
            for _ in range(3):
                fill(CARD)
            for _ in range(-(-args.calls // rounds)):
                start = time.perf_counter()
                fill(CARD)
                samples[name].append(time.perf_counter() - start)
    median = {name: 1e3 * float(np.median(t[: args.calls])) for name, t in samples.items()}

    texts = [CARD] + masked_lines(args.texts - 1)
    answers = {name: [[r["token"] for r in answer] for answer in fill(texts, top_k=5)] for name, fill in pipes.items()}
    exact = answers["onnxruntime-fp32"]
    agreement = {name: {"top1": float(np.mean([a[0] == b[0] for a, b in zip(got, exact)])),
                        "top5_overlap": float(np.mean([len(set(a) & set(b)) / 5 for a, b in zip(got, exact)]))}
                 for name, got in answers.items() if name != "onnxruntime-fp32"}
    logits = {name: fill.backend.run(**_arrays(fill, CARD))["logits"] for name, fill in pipes.items()}
    for name in agreement:
        agreement[name]["max_abs_logit_diff_card"] = float(np.abs(logits[name] - logits["onnxruntime-fp32"]).max())

    core = openvino.Core()
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpu": {"model": _cpu_model(), "openvino_device": core.get_property("CPU", "FULL_DEVICE_NAME"),
                "openvino_capabilities": list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")),
                "threads": pipes["openvino-f32"].backend.compiled.get_property("INFERENCE_NUM_THREADS")},
        "versions": {"python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
                     "openvino": openvino.get_version(), "numpy": np.__version__, "distilbert": _git_revision()},
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "model": str(export), "text": CARD, "calls": args.calls,
        "latency_median_ms": median,
        "ratio_to_onnxruntime_fp32": {name: m / median["onnxruntime-fp32"] for name, m in median.items()},
        "agreement_with_onnxruntime_fp32": {"texts": len(texts), **agreement},
        "load_and_first_call_s": load_s,
        "openvino_model_cache": model_cache(export),
    }
    (ROOT / "benchmarks" / "results-openvino.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"card fill-mask latency, median of {args.calls} ({result['cpu']['threads']} threads, {_cpu_model()}, "
          f"load average {load_before:.1f}):")
    for name, m in median.items():
        line = f"  {name:18} {m:7.2f} ms  x{result['ratio_to_onnxruntime_fp32'][name]:.2f}"
        if name in agreement:
            a = agreement[name]
            line += (f"  top-1 {a['top1']:.2f}, top-5 {a['top5_overlap']:.2f} of {len(texts)} texts, "
                     f"max |logit diff| {a['max_abs_logit_diff_card']:.1e}")
        print(line)
    cache = result["openvino_model_cache"]
    print("  OpenVINO read+compile: " + ", ".join(f"{k} cache {v:.2f} s" for k, v in cache["read_and_compile_s"].items())
          + f"; blob {cache['blob_mib']:.0f} MiB")
    print(f"wrote {ROOT / 'benchmarks' / 'results-openvino.json'}")


def _arrays(fill, text: str) -> dict:
    ids = np.array(fill.tokenizer([text])["input_ids"], dtype=np.int64)  # (1, T)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_revision() -> str | None:
    p = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return p.stdout.strip() or None


if __name__ == "__main__":
    main()
