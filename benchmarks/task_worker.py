"""One peer, one downstream workload, in a process of its own: prints one JSON line (timings and answers).

usage: task_worker.py PEER WORKLOAD CACHE_DIR
  PEER: ours-onnx-fp32 | ours-onnx-int8 | ours-torch-fp32 | ours-openvino-fp32 | ours-openvino-bf16 | transformers | optimum
  WORKLOAD: W5 (classification throughput) | W6 (question answering latency) | W7 (NER throughput)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

BATCH = 32  # the batch size the peers' documentation shows for CPU pipelines
TASKS = {"W5": ("text-classification", "cls"), "W6": ("question-answering", "qa"), "W7": ("token-classification", "ner")}


def make(peer: str, workload: str, cache: Path):
    """A function: inputs -> answers in one format (label dicts, answer dicts, entity lists)."""
    task, name = TASKS[workload]
    if peer.startswith("ours-"):
        import distilbert

        _, backend, precision = peer.split("-")
        model = cache / (f"ours-{name}" if backend in ("onnx", "openvino") else f"hf-{name}")
        p = distilbert.pipeline(task, model=model, backend=backend, precision=precision, batch_size=BATCH)
    else:
        # DistilBERT's own tokenizer class: with the saved BertTokenizer, transformers 4.57's question-answering
        # pipeline feeds token_type_ids, which DistilBERT does not take
        from transformers import DistilBertTokenizerFast

        folder = str(cache / (f"hf-{name}" if peer == "transformers" else f"optimum-{name}"))
        tokenizer = DistilBertTokenizerFast.from_pretrained(folder)
        if peer == "transformers":
            from transformers import pipeline

            p = pipeline(task, model=folder, tokenizer=tokenizer)
        else:
            from optimum.pipelines import pipeline

            p = pipeline(task, model=folder, tokenizer=tokenizer, accelerator="ort")
    ours = peer.startswith("ours-")
    if workload == "W5":
        options = {} if ours else {"batch_size": BATCH, "truncation": True}
        return lambda texts: p(texts, **options)
    if workload == "W7":
        options = {} if ours else {"batch_size": BATCH}
        return lambda texts: p(texts, aggregation_strategy="simple", **options)
    return lambda item: p(question=item["question"], context=item["context"])


def plain(x):
    """numpy scalars (the peers' scores) as JSON numbers."""
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [plain(v) for v in x]
    return x.item() if hasattr(x, "item") else x


def main() -> None:
    peer, workload, cache = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    run = make(peer, workload, cache)
    if workload in ("W5", "W7"):
        texts = json.loads((cache / ("w5-texts.json" if workload == "W5" else "w7-texts.json")).read_text())
        run(texts[:64])  # warm up: sessions, allocators, thread pools
        start = time.perf_counter()
        answers = run(texts)
        seconds = time.perf_counter() - start
        print(json.dumps({"n": len(texts), "seconds": seconds, "per_s": len(texts) / seconds, "answers": plain(answers)}))
        return
    import numpy as np

    groups = json.loads((cache / "w6-questions.json").read_text())
    out = {"median_ms": {}, "p99_ms": {}, "answers": []}
    for group, items in groups.items():
        for item in items[:3]:
            run(item)
        times = []
        for item in items:
            start = time.perf_counter()
            answer = run(item)
            times.append(time.perf_counter() - start)
            out["answers"].append(plain(answer))
        out["median_ms"][group] = 1e3 * float(np.median(times))
        out["p99_ms"][group] = 1e3 * float(np.percentile(times, 99))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
