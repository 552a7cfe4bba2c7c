"""`pipeline(task, model=...)`: tokenizer -> backend -> post-processing, with no torch in sight."""

from __future__ import annotations

from pathlib import Path

from .. import tasks
from .base import Pipeline


def pipeline(
    task: str | None,
    model: str | Path = "distilbert-base-uncased",
    backend: str | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
    threads: int | None = None,
    precision: str = "fp32",
    max_batch_tokens: int | None = None,
    compile: bool = False,
    **options,
) -> Pipeline:
    """A ready pipeline for `task` (or an alias: "sentiment-analysis", "ner") on `model`, a folder or hub id;
    task None: the head the checkpoint carries.

    backend: "torch", "onnx", "keras" (Keras 3 on TensorFlow, the tf extra; only when named) or "openvino"
    (the ONNX export on OpenVINO, the openvino extra; only when named). By default ONNX Runtime for an exported
    folder, or where a cached export of the checkpoint exists (see backends.export_cache), else PyTorch.
    backend="onnx" or "openvino" on a PyTorch checkpoint exports it once, validated, into that cache.
    precision: "fp32" (exact, the default), "int8" (onnx: model_quantized.onnx; fp16, q4 and q4f16 likewise) or
    "bf16" (torch: bfloat16 weights; openvino: its bfloat16 inference, on CPUs with bfloat16 instructions).
    compile: torch only: torch.compile the network at load (20-40 s; then 5% faster in fp32, 13% in bf16 on a CPU).
    options go to the pipeline (feature-extraction: pooling, normalize; token-classification:
    aggregation_strategy, ignore_labels, stride).
    """
    from ..backends import load_backend
    from ..tokenizer import Tokenizer

    engine = load_backend(model, tasks.get(task).name if task is not None else None, backend, threads=threads,
                          precision=precision, compile=compile)
    tokenizer = Tokenizer.from_pretrained(engine.folder, config=engine.config)
    return tasks.TASKS[engine.task].pipeline_class()(engine, tokenizer, batch_size=batch_size, max_length=max_length,
                                 max_batch_tokens=max_batch_tokens, **options)
