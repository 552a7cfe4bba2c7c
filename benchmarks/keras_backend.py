"""The keras backend beside torch and ONNX Runtime, with XLA compilation off and on; the tf extra's size.

usage: .venv/bin/python benchmarks/keras_backend.py [--texts 256] [--rounds 3]

On run.py's full-size random-weight distilbert-base-uncased (made here if missing), each peer in a
process of its own (worker.py), all fp32:
  W1  the card sentence's fill-mask latency, one call at a time (median and p99 of 40 calls per round;
      rounds interleave the peers, as run.py does, so drift in the machine's speed is shared)
  W2  embedding throughput (mean pooling, batch 32) over the first N texts of run.py's corpus; with XLA
      this includes compiling each new (batch, length) shape, as a user's first pass would
  W3  cold start to the first fill-mask result, and that process's peak memory (one run each)
Prints a table with ratios to ONNX Runtime and to PyTorch, and writes benchmarks/results-keras.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (benchmarks/run.py: the checkpoint, the corpus, the worker runner)

PEERS = ["ours-onnx-fp32", "ours-torch-fp32", "ours-keras-fp32", "ours-keras-xla"]
CARD = "Hello I'm a [MASK] model."


def prepare(n_texts: int) -> Path:
    """run.py's checkpoint, fp32 ONNX exports and corpus; a folder of links with this script's smaller inputs."""
    run.prepare_ours(exports=())  # the checkpoint alone: run.py's exports add int8, which this script does not run
    hf = run.CACHE / "hf"
    for task, name in (("fill-mask", "ours-fill-mask"), ("feature-extraction", "ours-features")):
        if not (run.CACHE / name / "onnx" / "model.onnx").exists():
            subprocess.run([str(run.OURS), "-m", "distilbert.cli", "export", str(hf), str(run.CACHE / name), "--task", task,
                            "--optimize"], check=True, stdout=subprocess.DEVNULL)
    if not (run.CACHE / "corpus.txt").exists():
        run._texts(5000)  # run.py's default corpus; W2 here takes its first texts
    cache = run.CACHE / "keras"
    cache.mkdir(exist_ok=True)
    for name in ("hf", "ours-fill-mask", "ours-features"):
        if not (cache / name).exists():
            (cache / name).symlink_to(run.CACHE / name)
    (cache / "latency-texts.json").write_text(json.dumps({"card": CARD}))
    texts = (run.CACHE / "corpus.txt").read_text(encoding="utf-8").splitlines()[:n_texts]
    (cache / "corpus.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    return cache


def install_size() -> dict:
    """Bytes on disk of keras, tensorflow-cpu and everything they pull in, and of the part that the base and
    torch installs do not already have (what `pip install 'distilbert[tf]'` adds)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    def extra(name: str) -> list[Requirement]:  # our requirements for that extra ("" for the base install)
        requirements = [Requirement(r) for r in metadata.distribution("distilbert").requires or []]
        return [r for r in requirements if (r.marker is None and not name) or (r.marker and r.marker.evaluate({"extra": name}))]

    def closure(requirements: list[Requirement]) -> set[str]:
        seen: set[str] = set()
        stack = list(requirements)
        while stack:
            name = re.sub(r"[-_.]+", "-", stack.pop().name).lower()
            if name in seen:
                continue
            try:
                dist = metadata.distribution(name)
            except metadata.PackageNotFoundError:
                continue
            seen.add(name)
            stack += [r for r in map(Requirement, dist.requires or []) if r.marker is None or r.marker.evaluate({"extra": ""})]
        return seen

    tf = closure(extra("tf"))
    already = closure(extra("")) | closure(extra("torch"))

    def size(names: set[str]) -> int:
        total = 0
        for name in names:
            for f in metadata.distribution(name).files or []:
                path = Path(f.locate())
                total += path.stat().st_size if path.is_file() else 0
        return total

    return {"packages": sorted(tf), "added": sorted(tf - already), "mib": size(tf) / 2**20,
            "added_mib": size(tf - already) / 2**20, "tensorflow_cpu_mib": size({"tensorflow-cpu"}) / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=256, help="W2 corpus size (the first texts of run.py's)")
    parser.add_argument("--rounds", type=int, default=3, help="W1 rounds")
    parser.add_argument("--peers", default=",".join(PEERS))
    args = parser.parse_args()
    peers = args.peers.split(",")
    cache = prepare(args.texts)
    results: dict = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                                 "load_average_at_start": os.getloadavg()[0]},
                     "texts": args.texts, "install": install_size(), "W1": {}, "W2": {}, "W3": {}}
    samples: dict[str, list[float]] = {p: [] for p in peers}
    for _ in range(args.rounds):
        for peer in peers:
            out, _, _ = run.worker(peer, "latency", cache)
            samples[peer] += out["seconds"]["card"]
            results["W1"][peer] = {"top5": out["top5"]["card"]}
    for peer in peers:
        t = np.array(samples[peer]) * 1e3
        results["W1"][peer].update(median_ms=float(np.median(t)), p99_ms=float(np.percentile(t, 99)))
        print(f"  W1 {peer}: {results['W1'][peer]['median_ms']:.1f} ms", file=sys.stderr)
    for peer in peers:
        out, _, _ = run.worker(peer, "throughput", cache)
        results["W2"][peer] = {"seconds": out["seconds"], "texts_per_s": out["texts"] / out["seconds"]}
        print(f"  W2 {peer}: {results['W2'][peer]['texts_per_s']:.1f} texts/s", file=sys.stderr)
    reference = np.load(cache / f"embeddings-{peers[0]}.npy")
    for peer in peers:
        other = np.load(cache / f"embeddings-{peer}.npy")
        cos = (reference * other).sum(1) / (np.linalg.norm(reference, axis=1) * np.linalg.norm(other, axis=1))
        results["W2"][peer]["cosine_vs_" + peers[0]] = float(cos.min())
    for peer in peers:
        _, wall, peak = run.worker(peer, "cold", cache)
        results["W3"][peer] = {"seconds": wall, "peak_mib": peak / 2**20}
    results["machine"]["load_average_at_end"] = os.getloadavg()[0]
    (run.ROOT / "benchmarks" / "results-keras.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table(results, peers))


def table(results: dict, peers: list[str]) -> str:
    install, machine = results["install"], results["machine"]
    w1, w2, w3 = results["W1"], results["W2"], results["W3"]
    onnx, torch = "ours-onnx-fp32", "ours-torch-fp32"

    def ratio(workload: dict, peer: str, key: str, base: str) -> str:
        return f"{workload[peer][key] / workload[base][key]:.2f}" if base in workload else ""

    lines = ["(x onnx, x torch: ratios of W1 latency and of W2 throughput to those backends'.)", "",
             f"Full-size random-weight distilbert-base-uncased, fp32, on {machine['cores']} cores shared with other "
             f"work (load average {machine['load_average_at_start']:.1f} at start, {machine['load_average_at_end']:.1f} "
             f"at end): short runs, read the ratios rather than the absolute figures.", "",
             "| peer | W1 card fill-mask, median / p99 ms | x onnx | x torch | same top-5 as onnx | W2 texts/s "
             f"({results['texts']} texts) | x onnx | x torch | W3 cold start s | peak MiB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for peer in peers:
        a, b, c = w1[peer], w2[peer], w3[peer]
        same = a["top5"] == w1[onnx]["top5"] if onnx in w1 else ""
        lines.append(f"| {peer} | {a['median_ms']:.1f} / {a['p99_ms']:.1f} | {ratio(w1, peer, 'median_ms', onnx)} | "
                     f"{ratio(w1, peer, 'median_ms', torch)} | {same} | {b['texts_per_s']:.1f} | "
                     f"{ratio(w2, peer, 'texts_per_s', onnx)} | {ratio(w2, peer, 'texts_per_s', torch)} | "
                     f"{c['seconds']:.1f} | {c['peak_mib']:.0f} |")
    lines += ["", f"tf extra: keras + tensorflow-cpu and their dependencies take {install['mib']:.0f} MiB "
                  f"(tensorflow-cpu alone {install['tensorflow_cpu_mib']:.0f} MiB); {install['added_mib']:.0f} MiB of it "
                  f"is not already in the base and torch installs ({', '.join(install['added'])})."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
