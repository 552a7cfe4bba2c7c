"""Side by side on this machine: our package against transformers, Optimum and sentence-transformers.

usage: benchmarks/run.sh [--texts N] [--only W1,W2,W3]   (run.sh prepares the peers' environment)

Every peer runs in a process of its own (workers.py), on the same inputs and the same full-size
random-weight distilbert-base-uncased made here. Prints a table of medians, p99 and ratios, and writes
benchmarks/results.json.
  W1  fill-mask latency, one text at a time: the card's sentence, and texts of 32 and 128 tokens
  W2  embedding throughput (mean pooling) over a real, variable-length corpus from ../shared/data
  W3  cold start: a new process from nothing to its first fill-mask result
  W4  peak memory (max RSS) of that process
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / ".cache"
DATA = Path(os.environ.get("DISTILBERT_DATA", ROOT.parent / "shared" / "data"))
OURS = ROOT / ".venv" / "bin" / "python"
PEERS_PY = ROOT / ".venv-peers" / "bin" / "python"
WORKER = ROOT / "benchmarks" / "worker.py"

# peer -> (python, exact or fast or peer)
PEERS = {
    "ours-onnx-fp32": (OURS, "exact"),
    "ours-torch-fp32": (OURS, "exact"),
    "ours-openvino-fp32": (OURS, "exact"),
    "ours-onnx-int8": (OURS, "fast"),
    "ours-onnx-fp16": (OURS, "fast"),
    "ours-onnx-q4": (OURS, "fast"),
    "ours-onnx-q4f16": (OURS, "fast"),
    "ours-torch-bf16": (OURS, "fast"),
    "ours-openvino-bf16": (OURS, "fast"),
    "transformers": (OURS, "peer"),
    "optimum": (PEERS_PY, "peer"),
    "st-torch": (PEERS_PY, "peer"),
    "st-onnx": (PEERS_PY, "peer"),
}
FILL_MASK_PEERS = [p for p in PEERS if not p.startswith("st-")]
DRIFT_PEERS = [p for p in PEERS if p.startswith("ours-") and p != "ours-onnx-fp32"]  # each against ours-onnx-fp32


def prepare(n_texts: int, exports: tuple[str, ...] = ("fill-mask", "feature-extraction")) -> None:
    """The full-size checkpoint, the exports the workloads read, and the inputs; made once into benchmarks/.cache."""
    prepare_ours(exports)
    if not (CACHE / "optimum-features" / "model.onnx").exists():
        script = f"""
from optimum.onnxruntime import ORTModelForMaskedLM, ORTModelForFeatureExtraction
from transformers import AutoTokenizer
from sentence_transformers import SentenceTransformer
tok = AutoTokenizer.from_pretrained({str(CACHE / 'hf')!r})
for cls, name in ((ORTModelForMaskedLM, "optimum-fill-mask"), (ORTModelForFeatureExtraction, "optimum-features")):
    m = cls.from_pretrained({str(CACHE / 'hf')!r}, export=True)
    m.save_pretrained({str(CACHE)!r} + "/" + name)
    tok.save_pretrained({str(CACHE)!r} + "/" + name)
SentenceTransformer({str(CACHE / 'hf')!r}, backend="onnx", device="cpu").save_pretrained({str(CACHE / 'st-onnx')!r})
"""
        subprocess.run([str(PEERS_PY), "-c", script], check=True)
    _texts(n_texts)


def prepare_ours(exports: tuple[str, ...] = ("fill-mask", "feature-extraction")) -> None:
    """The full-size random-weight checkpoint and our exports of it for these tasks, in every precision."""
    CACHE.mkdir(parents=True, exist_ok=True)
    vocab = DATA / "vocab" / "bert-base-uncased-vocab.txt"
    if not (CACHE / "hf" / "model.safetensors").exists():
        script = f"""
import torch, transformers
torch.manual_seed(0)
model = transformers.DistilBertForMaskedLM(transformers.DistilBertConfig())  # distilbert-base-uncased's sizes
model.save_pretrained({str(CACHE / 'hf')!r})
transformers.BertTokenizerFast({str(vocab)!r}).save_pretrained({str(CACHE / 'hf')!r})
"""
        subprocess.run([str(OURS), "-c", script], check=True)
    for task, name in (("fill-mask", "ours-fill-mask"), ("feature-extraction", "ours-features")):
        if task in exports and not (CACHE / name / "onnx" / "model_q4f16.onnx").exists():
            subprocess.run([str(OURS), "-m", "distilbert.cli", "export", str(CACHE / "hf"), str(CACHE / name), "--task", task,
                            "--optimize", "--precision", EXPORTED, "--drift-text", str(DATA / "text" / "wikitext-2-valid.txt")],
                           check=True, stdout=subprocess.DEVNULL)


EXPORTED = "fp32,int8,fp16,q4,q4f16"


def sizes(results: dict) -> None:
    """Each precision's graph and weights on disk, and its drift from fp32 as the export measured it."""
    for name in ("ours-fill-mask", "ours-features"):
        if not (CACHE / name / "quantization_report.json").exists():
            continue
        report = json.loads((CACHE / name / "quantization_report.json").read_text())
        fp32 = next(iter(report.values()))["bytes_fp32"]
        results["sizes"][name] = {"fp32": {"bytes": fp32, "ratio": 1.0}}
        for precision, r in report.items():
            drift = {k: r[k] for k in ("top1_agreement", "top5_overlap", "cosine_min", "cosine_mean") if k in r}
            results["sizes"][name][precision] = {"bytes": r["bytes"], "ratio": r["bytes"] / fp32, **drift}


def _texts(n_texts: int) -> None:
    """W1's three texts and W2's corpus: SST-2 sentences and WikiText-2 paragraphs, shuffled together."""
    sys.path.insert(0, str(ROOT))
    from distilbert.tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained(CACHE / "hf")
    wiki = [l.strip() for l in (DATA / "text" / "wikitext-2-valid.txt").read_text(encoding="utf-8").splitlines()
            if len(l.split()) >= 8 and not l.strip().startswith("=")]

    def of_length(n: int) -> str:  # words of one paragraph until the text is n tokens with [CLS] and [SEP]
        words = [w for w in " ".join(wiki[:40]).split() if "@" not in w]
        for k in range(len(words)):
            text = " ".join(words[:k])
            if len(tok(text)["input_ids"]) >= n:
                text_words = words[:k]
                text_words[k // 2] = "[MASK]"
                return " ".join(text_words)
        raise RuntimeError("paragraphs too short")

    latency = {"card": "Hello I'm a [MASK] model.", "32 tokens": of_length(32), "128 tokens": of_length(128)}
    (CACHE / "latency-texts.json").write_text(json.dumps(latency, indent=2))
    with open(DATA / "glue" / "SST-2" / "train.tsv", encoding="utf-8", newline="") as f:
        sst = [row[0] for row in list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]]
    rng = np.random.default_rng(0)
    n_wiki = int(n_texts * 0.3)
    corpus = list(rng.choice(sst, n_texts - n_wiki, replace=False)) + list(rng.choice(wiki, n_wiki, replace=False))
    corpus = [corpus[i] for i in rng.permutation(len(corpus))]
    (CACHE / "corpus.txt").write_text("\n".join(corpus) + "\n", encoding="utf-8")


def worker(peer: str, workload: str, cache: Path = CACHE) -> tuple[dict, float, int]:
    """Run one worker; returns its JSON, its wall time and its peak memory (bytes)."""
    python = PEERS[peer][0] if peer in PEERS else OURS
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    start = time.perf_counter()
    p = subprocess.Popen([str(python), str(WORKER), peer, workload, str(cache)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env, text=True)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - start
    out, err = p.stdout.read(), p.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{peer} {workload} failed:\n{err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1]), wall, usage.ru_maxrss * 1024


def latency(results: dict, peers: list[str], rounds: int = 3) -> None:
    """Every peer once per round, in turn, and the samples of all rounds pooled: this machine's speed drifts
    by 10-20% over minutes, which would otherwise land on whichever peer ran at the time."""
    fill_peers = [p for p in FILL_MASK_PEERS if p in peers]
    samples: dict = {peer: {} for peer in fill_peers}
    for _ in range(rounds):
        for peer in fill_peers:
            out, _, _ = worker(peer, "latency")
            for name, t in out["seconds"].items():
                samples[peer].setdefault(name, []).extend(t)
            results["W1"][peer] = {"top5": out["top5"]}
    for peer in fill_peers:
        results["W1"][peer].update({name: {"median_ms": 1e3 * float(np.median(t)), "p99_ms": 1e3 * float(np.percentile(t, 99))}
                                    for name, t in samples[peer].items()})
        print(f"  W1 {peer}: " + ", ".join(f"{n} {v['median_ms']:.1f} ms" for n, v in results["W1"][peer].items() if n != "top5"))


def throughput(results: dict, peers: list[str]) -> None:
    tok_counts = _token_counts()
    for peer in [p for p in PEERS if p in peers]:
        out, _, _ = worker(peer, "throughput")
        results["W2"][peer] = {"seconds": out["seconds"], "texts_per_s": out["texts"] / out["seconds"],
                               "real_tokens_per_s": tok_counts.sum() / out["seconds"]}
        print(f"  W2 {peer}: {out['seconds']:.1f} s, {results['W2'][peer]['texts_per_s']:.1f} texts/s")
    exact = np.load(CACHE / "embeddings-ours-onnx-fp32.npy")
    for peer in DRIFT_PEERS:
        if peer not in results["W2"]:
            continue
        other = np.load(CACHE / f"embeddings-{peer}.npy")
        cos = (exact * other).sum(1) / (np.linalg.norm(exact, axis=1) * np.linalg.norm(other, axis=1))
        results["W2"][peer]["cosine_vs_fp32"] = {"min": float(cos.min()), "mean": float(cos.mean())}


def _token_counts() -> np.ndarray:
    from distilbert.tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained(CACHE / "hf")
    texts = (CACHE / "corpus.txt").read_text(encoding="utf-8").splitlines()
    return np.array([min(len(ids), 512) for ids in tok(texts)["input_ids"]])


def cold(results: dict, peers: list[str], repeats: int = 3) -> None:
    for peer in [p for p in FILL_MASK_PEERS if p in peers]:
        walls, peaks = [], []
        for _ in range(repeats):
            _, wall, peak = worker(peer, "cold")
            walls.append(wall)
            peaks.append(peak)
        results["W3"][peer] = {"median_s": float(np.median(walls)), "peak_mib": float(np.median(peaks)) / 2**20}
        print(f"  W3/W4 {peer}: {results['W3'][peer]['median_s']:.2f} s, {results['W3'][peer]['peak_mib']:.0f} MiB")


def agreement(results: dict) -> None:
    """Fast modes against exact on W1's texts: top-1 and top-5 agreement."""
    exact = results["W1"]["ours-onnx-fp32"]["top5"]
    for peer in DRIFT_PEERS:
        if peer in results["W1"]:
            fast = results["W1"][peer]["top5"]
            results["W1"][peer]["top1_agreement"] = float(np.mean([exact[n][0] == fast[n][0] for n in exact]))
            results["W1"][peer]["top5_overlap"] = float(np.mean([len(set(exact[n]) & set(fast[n])) / 5 for n in exact]))


def table(results: dict) -> str:
    lines = []
    if results["W1"]:
        names = ["card", "32 tokens", "128 tokens"]
        lines += ["### W1: fill-mask latency, one text at a time (median / p99 ms; ratio = ours / Optimum median)", "",
                  "| peer | " + " | ".join(names) + " | ratio to Optimum | drift vs fp32 |", "|---" * (len(names) + 3) + "|"]
        base = results["W1"].get("optimum")
        for peer, r in results["W1"].items():
            cells = [f"{r[n]['median_ms']:.1f} / {r[n]['p99_ms']:.1f}" for n in names]
            ratio = " / ".join(f"{r[n]['median_ms'] / base[n]['median_ms']:.2f}" for n in names) if base else ""
            drift = f"top-1 {r['top1_agreement']:.2f}, top-5 {r['top5_overlap']:.2f}" if "top1_agreement" in r else ""
            lines.append(f"| {peer} | " + " | ".join(cells) + f" | {ratio} | {drift} |")
        lines.append("")
    if results["W2"]:
        lines += [f"### W2: embeddings of {results['corpus']['texts']} texts (median {results['corpus']['median_tokens']:.0f}, "
                  f"p90 {results['corpus']['p90_tokens']:.0f} tokens)", "",
                  "| peer | seconds | texts/s | real tokens/s | x Optimum | x best sentence-transformers | cosine vs fp32 (min) |",
                  "|---|---|---|---|---|---|---|"]
        w2 = results["W2"]
        best_st = max((w2[p]["texts_per_s"] for p in ("st-torch", "st-onnx") if p in w2), default=None)
        for peer, r in w2.items():
            x_opt = f"{r['texts_per_s'] / w2['optimum']['texts_per_s']:.2f}" if "optimum" in w2 else ""
            x_st = f"{r['texts_per_s'] / best_st:.2f}" if best_st else ""
            cos = f"{r['cosine_vs_fp32']['min']:.4f}" if "cosine_vs_fp32" in r else ""
            lines.append(f"| {peer} | {r['seconds']:.1f} | {r['texts_per_s']:.1f} | {r['real_tokens_per_s']:.0f} | {x_opt} | {x_st} | {cos} |")
        lines.append("")
    if results.get("sizes"):
        lines += ["### Size on disk of each precision (graph and weights), and its drift from fp32 on WikiText-2", "",
                  "| export | precision | MB | x fp32 | drift |", "|---|---|---|---|---|"]
        for name, by_precision in results["sizes"].items():
            for precision, r in by_precision.items():
                drift = ", ".join(f"{k} {v:.3f}" for k, v in r.items() if k not in ("bytes", "ratio"))
                lines.append(f"| {name} | {precision} | {r['bytes'] / 1e6:.1f} | {r['ratio']:.3f} | {drift} |")
        lines.append("")
    if results["W3"]:
        lines += ["### W3 and W4: cold start to the first fill-mask result, and that process's peak memory", "",
                  "| peer | seconds | x transformers | peak MiB | x transformers |", "|---|---|---|---|---|"]
        base = results["W3"].get("transformers")
        for peer, r in results["W3"].items():
            xs = f"{r['median_s'] / base['median_s']:.2f}" if base else ""
            xm = f"{r['peak_mib'] / base['peak_mib']:.2f}" if base else ""
            lines.append(f"| {peer} | {r['median_s']:.2f} | {xs} | {r['peak_mib']:.0f} | {xm} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=5000, help="W2 corpus size")
    parser.add_argument("--only", default="W1,W2,W3")
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated; the others keep their last figures")
    args = parser.parse_args()
    only = args.only.split(",")
    prepare(args.texts, ("fill-mask",) + (("feature-extraction",) if "W2" in only else ()))
    counts = _token_counts()
    results = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
               "corpus": {"texts": len(counts), "median_tokens": float(np.median(counts)), "p90_tokens": float(np.percentile(counts, 90))},
               "W1": {}, "W2": {}, "W3": {}, "sizes": {}}
    only, peers = args.only.split(","), args.peers.split(",")
    path = ROOT / "benchmarks" / "results.json"
    if path.exists():  # a run of some workloads or peers keeps the others' latest figures
        previous = json.loads(path.read_text())
        for workload in ("W1", "W2", "W3"):
            results[workload] = {p: r for p, r in previous.get(workload, {}).items() if workload not in only or p not in peers}
    sizes(results)  # of the exports at hand
    if "W1" in only:
        latency(results, peers)
        agreement(results)
    if "W2" in only:
        throughput(results, peers)
    if "W3" in only:
        cold(results, peers)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(table(results))


if __name__ == "__main__":
    main()
