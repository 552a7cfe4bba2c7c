"""One peer, one workload, in a process of its own: prints one JSON line.

usage: worker.py PEER WORKLOAD CACHE_DIR
  PEER: ours-BACKEND-PRECISION (ours-onnx-fp32, ours-torch-bf16, ours-openvino-bf16, ...) | ours-keras-xla |
        transformers | optimum | st-torch | st-onnx
  WORKLOAD: latency (W1) | throughput (W2) | cold (W3/W4: from nothing to the first fill-mask result)
Peers import only what they use, so a cold start measures the peer's own imports.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

CARD = "Hello I'm a [MASK] model."
BATCH = 32  # the batch size each peer's documentation shows for CPU feature extraction


def ours(task: str, peer: str, cache: Path, **kwargs):
    """Our pipeline; ours-keras-xla is the keras backend compiled by XLA (a backend option, not a pipeline one)."""
    import distilbert

    _, backend, precision = peer.split("-")
    if precision == "xla":
        from distilbert.backends.keras import KerasBackend
        from distilbert.tasks import TASKS
        from distilbert.tokenizer import Tokenizer

        engine = KerasBackend.load(cache / "hf", task, jit_compile=True)
        tokenizer = Tokenizer.from_pretrained(engine.folder, config=engine.config)
        return TASKS[task].pipeline_class()(engine, tokenizer, **kwargs)
    # the ONNX runtimes read our export (openvino: its fp32 graph, fused as ONNX Runtime runs it); the others the checkpoint
    model = cache / (("ours-fill-mask" if task == "fill-mask" else "ours-features") if backend in ("onnx", "openvino") else "hf")
    return distilbert.pipeline(task, model=model, backend=backend, precision=precision, **kwargs)


def fill_mask(peer: str, cache: Path):
    if peer.startswith("ours-"):
        return ours("fill-mask", peer, cache)
    if peer == "transformers":
        from transformers import pipeline

        return pipeline("fill-mask", model=str(cache / "hf"))
    if peer == "optimum":
        from optimum.pipelines import pipeline

        return pipeline("fill-mask", model=str(cache / "optimum-fill-mask"), accelerator="ort")
    raise SystemExit(f"{peer} has no fill-mask")


def embedder(peer: str, cache: Path):
    """A function: list of texts -> (n, dim) mean-pooled float32 embeddings."""
    import numpy as np

    if peer.startswith("ours-"):
        p = ours("feature-extraction", peer, cache, batch_size=BATCH)
        return lambda texts: p(texts, pooling="mean")
    if peer in ("transformers", "optimum"):
        if peer == "transformers":
            from transformers import pipeline

            p = pipeline("feature-extraction", model=str(cache / "hf"))
        else:
            from optimum.pipelines import pipeline

            p = pipeline("feature-extraction", model=str(cache / "optimum-features"), accelerator="ort")
        # the pipeline gives token features; the mean over a text's tokens is its embedding
        return lambda texts: np.stack([f[0].numpy().mean(0) for f in p(texts, batch_size=BATCH, truncation=True, return_tensors=True)])
    if peer.startswith("st-"):
        from sentence_transformers import SentenceTransformer

        backend = peer.split("-")[1]
        model = SentenceTransformer(str(cache / ("hf" if backend == "torch" else "st-onnx")), backend=backend, device="cpu")
        # DistilBERT takes no token_type_ids (distilbert-base-uncased's own tokenizer does not make them)
        model.tokenizer.model_input_names = ["input_ids", "attention_mask"]
        return lambda texts: model.encode(texts, batch_size=BATCH, convert_to_numpy=True)
    raise SystemExit(f"unknown peer {peer}")


def top_tokens(result) -> list[int]:
    first = result[0] if isinstance(result[0], list) else result
    return [r["token"] for r in first]


def main() -> None:
    peer, workload, cache = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    if workload == "cold":
        result = fill_mask(peer, cache)(CARD)
        print(json.dumps({"token": top_tokens(result)[0]}))
        return
    if workload == "latency":
        texts = json.loads((cache / "latency-texts.json").read_text())
        fill = fill_mask(peer, cache)
        out = {"seconds": {}, "top5": {}}
        for name, text in texts.items():
            for _ in range(5):
                fill(text)
            times = []
            for _ in range(40):
                start = time.perf_counter()
                result = fill(text)
                times.append(time.perf_counter() - start)
            out["seconds"][name] = times
            out["top5"][name] = top_tokens(result)[:5]
        print(json.dumps(out))
        return
    if workload == "throughput":
        import numpy as np

        texts = (cache / "corpus.txt").read_text(encoding="utf-8").splitlines()
        embed = embedder(peer, cache)
        embed(texts[:64])  # warm up: sessions, allocators, thread pools
        start = time.perf_counter()
        vectors = embed(texts)
        seconds = time.perf_counter() - start
        np.save(cache / f"embeddings-{peer}.npy", np.asarray(vectors, dtype=np.float32))
        print(json.dumps({"seconds": seconds, "texts": len(texts)}))
        return
    raise SystemExit(f"unknown workload {workload}")


if __name__ == "__main__":
    main()
