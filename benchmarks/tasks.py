"""The downstream tasks side by side: our pipelines against transformers and Optimum, each peer in its own process.

usage: benchmarks/tasks.sh [--texts N] [--only W5,W6,W7] [--peers ...]   (tasks.sh prepares the peers' environment)

Full-size random-weight DistilBERT heads (distilbert-base-uncased's sizes) are made here; our exports are
fused and quantised as `distilbert export --optimize --quantize int8` makes them, Optimum's with its own
exporter.
  W5  sentiment classification throughput over real text of varied length (SST-2 and WikiText-2 paragraphs)
  W6  question answering latency, one question at a time, on SQuAD dev questions whose contexts need one,
      two, and three or more windows (384 tokens, stride 128)
  W7  NER throughput on CoNLL-2003 validation sentences (aggregation "simple")
Agreement with our exact (ONNX fp32) answers is printed beside each peer. Writes benchmarks/results-tasks.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
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
WORKER = ROOT / "benchmarks" / "task_worker.py"
HEADS = {"W5": ("DistilBertForSequenceClassification", "cls"), "W6": ("DistilBertForQuestionAnswering", "qa"),
         "W7": ("DistilBertForTokenClassification", "ner")}
CONLL_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
# peer -> its python; transformers 5 has no question-answering pipeline, so W6's transformers is 4.57 (Optimum's)
PEERS = {"ours-onnx-fp32": OURS, "ours-onnx-int8": OURS, "ours-torch-fp32": OURS, "ours-openvino-fp32": OURS,
         "ours-openvino-bf16": OURS, "transformers": OURS, "optimum": PEERS_PY}


def prepare(n_texts: int) -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    vocab = DATA / "vocab" / "bert-base-uncased-vocab.txt"
    for workload, (cls, name) in HEADS.items():
        folder = CACHE / f"hf-{name}"
        if not (folder / "model.safetensors").exists():
            labels = {"cls": ["NEGATIVE", "POSITIVE"], "ner": CONLL_LABELS, "qa": ["LABEL_0", "LABEL_1"]}[name]
            script = f"""
import torch, transformers
torch.manual_seed(0)
config = transformers.DistilBertConfig(id2label=dict(enumerate({labels!r})), label2id={{l: i for i, l in enumerate({labels!r})}})
model = getattr(transformers, {cls!r})(config)
model.save_pretrained({str(folder)!r})
transformers.BertTokenizerFast({str(vocab)!r}).save_pretrained({str(folder)!r})
"""
            subprocess.run([str(OURS), "-c", script], check=True)
        if not (CACHE / f"ours-{name}" / "onnx" / "model_quantized.onnx").exists():
            subprocess.run([str(OURS), "-m", "distilbert.cli", "export", str(folder), str(CACHE / f"ours-{name}"),
                            "--optimize", "--quantize", "int8"], check=True, stdout=subprocess.DEVNULL)
        if not (CACHE / f"optimum-{name}" / "model.onnx").exists():
            ort_cls = {"cls": "ORTModelForSequenceClassification", "ner": "ORTModelForTokenClassification",
                       "qa": "ORTModelForQuestionAnswering"}[name]
            script = f"""
from optimum.onnxruntime import {ort_cls}
from transformers import AutoTokenizer
{ort_cls}.from_pretrained({str(folder)!r}, export=True).save_pretrained({str(CACHE / f'optimum-{name}')!r})
AutoTokenizer.from_pretrained({str(folder)!r}).save_pretrained({str(CACHE / f'optimum-{name}')!r})
"""
            subprocess.run([str(PEERS_PY), "-c", script], check=True)
    inputs(n_texts)


def inputs(n_texts: int) -> None:
    rng = np.random.default_rng(0)
    with open(DATA / "glue" / "SST-2" / "train.tsv", encoding="utf-8", newline="") as f:
        sst = [row[0] for row in list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]]
    wiki = [l.strip() for l in (DATA / "text" / "wikitext-2-valid.txt").read_text(encoding="utf-8").splitlines()
            if len(l.split()) >= 8 and not l.strip().startswith("=")]
    n_wiki = int(n_texts * 0.3)
    corpus = list(rng.choice(sst, n_texts - n_wiki, replace=False)) + list(rng.choice(wiki, n_wiki, replace=False))
    (CACHE / "w5-texts.json").write_text(json.dumps([corpus[i] for i in rng.permutation(len(corpus))]))

    sentences, words = [], []
    for line in (DATA / "ner" / "conll2003" / "valid.txt").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("-DOCSTART-"):
            if words:
                sentences.append(" ".join(words))
            words = []
        else:
            words.append(line.split()[0])
    (CACHE / "w7-texts.json").write_text(json.dumps(sentences))

    sys.path.insert(0, str(ROOT))
    from distilbert.tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained(CACHE / "hf-qa")
    groups: dict[str, list] = {"1 window": [], "2 windows": [], "3+ windows": []}
    squad = json.loads((DATA / "squad" / "dev-v1.1.json").read_text(encoding="utf-8"))["data"]
    for article in squad:
        for paragraph in article["paragraphs"]:
            qa = paragraph["qas"][0]
            windows = len(tok(qa["question"], paragraph["context"], truncation="only_second", max_length=384, stride=128,
                              return_overflowing_tokens=True)["input_ids"])
            group = "1 window" if windows == 1 else "2 windows" if windows == 2 else "3+ windows"
            if len(groups[group]) < 20:
                groups[group].append({"question": qa["question"], "context": paragraph["context"]})
    (CACHE / "w6-questions.json").write_text(json.dumps(groups))


def worker(peer: str, workload: str) -> dict:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    python = PEERS_PY if peer == "transformers" and workload == "W6" else PEERS[peer]
    p = subprocess.run([str(python), str(WORKER), peer, workload, str(CACHE)], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"{peer} {workload} failed:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def agreement(workload: str, exact: list, other: list) -> float:
    if workload == "W5":
        return float(np.mean([a["label"] == b["label"] for a, b in zip(exact, other)]))
    if workload == "W6":
        return float(np.mean([(a["start"], a["end"]) == (b["start"], b["end"]) for a, b in zip(exact, other)]))
    spans = lambda xs: [{(e["entity_group"], e["start"], e["end"]) for e in x} for x in xs]  # noqa: E731
    return float(np.mean([a == b for a, b in zip(spans(exact), spans(other))]))


def table(results: dict) -> str:
    lines = []
    for workload, title in (("W5", "W5: sentiment classification throughput"), ("W7", "W7: NER throughput")):
        rows = results.get(workload)
        if not rows:
            continue
        base = rows.get("optimum", {}).get("per_s")
        lines += [f"#### {title} ({rows[next(iter(rows))]['n']} texts)", "",
                  "| peer | seconds | texts/s | x Optimum | x transformers | agreement with ours fp32 |", "|---|---|---|---|---|---|"]
        tr = rows.get("transformers", {}).get("per_s")
        for peer, r in rows.items():
            lines.append(f"| {peer} | {r['seconds']:.1f} | {r['per_s']:.1f} | {r['per_s'] / base:.2f} | "
                         f"{r['per_s'] / tr:.2f} | {r.get('agreement', 1.0):.3f} |" if base and tr else
                         f"| {peer} | {r['seconds']:.1f} | {r['per_s']:.1f} | | | {r.get('agreement', 1.0):.3f} |")
        lines.append("")
    rows = results.get("W6")
    if rows:
        groups = list(next(iter(rows.values()))["median_ms"])
        base = rows.get("optimum")
        lines += ["#### W6: question answering latency, one question at a time (median / p99 ms; ratio = ours / Optimum median)", "",
                  "| peer | " + " | ".join(groups) + " | ratio to Optimum | exact-answer agreement |", "|---" * (len(groups) + 3) + "|"]
        for peer, r in rows.items():
            cells = [f"{r['median_ms'][g]:.1f} / {r['p99_ms'][g]:.1f}" for g in groups]
            ratio = " / ".join(f"{r['median_ms'][g] / base['median_ms'][g]:.2f}" for g in groups) if base else ""
            lines.append(f"| {peer} | " + " | ".join(cells) + f" | {ratio} | {r.get('agreement', 1.0):.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=5000, help="W5 corpus size")
    parser.add_argument("--only", default="W5,W6,W7")
    parser.add_argument("--peers", default=",".join(PEERS))
    args = parser.parse_args()
    prepare(args.texts)
    path = ROOT / "benchmarks" / "results-tasks.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    peers = args.peers.split(",")
    for workload in args.only.split(","):
        rows = results.setdefault(workload, {})
        for peer in [p for p in PEERS if p in peers]:
            out = worker(peer, workload)
            (CACHE / f"answers-{workload}-{peer}.json").write_text(json.dumps(out.pop("answers")))
            rows[peer] = out
            print(f"  {workload} {peer}: " + json.dumps({k: v for k, v in out.items() if k != "p99_ms"}))
        exact_file = CACHE / f"answers-{workload}-ours-onnx-fp32.json"
        if exact_file.exists():  # agreement with our exact answers, also for peers measured in an earlier run
            exact = json.loads(exact_file.read_text())
            for peer in rows:
                if (CACHE / f"answers-{workload}-{peer}.json").exists():
                    other = json.loads((CACHE / f"answers-{workload}-{peer}.json").read_text())
                    rows[peer]["agreement"] = agreement(workload, exact, other)
        results["when"] = time.strftime("%Y-%m-%d")
    path.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(table(results))


if __name__ == "__main__":
    main()
