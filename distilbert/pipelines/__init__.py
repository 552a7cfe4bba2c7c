"""`pipeline(task, model=...)`: tokenizer -> backend -> post-processing, with no torch in sight."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .base import Pipeline
from .features import FeatureExtractionPipeline
from .fill_mask import FillMaskPipeline

PIPELINES: dict[str, type[Pipeline]] = {
    "fill-mask": FillMaskPipeline,
    "feature-extraction": FeatureExtractionPipeline,
}


def pipeline(
    task: str,
    model: str | Path = "distilbert-base-uncased",
    backend: str | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
    threads: int | None = None,
    precision: str = "fp32",
    **options,
) -> Pipeline:
    """A ready pipeline for `task` on `model`, a local folder or a hub id.

    backend: "torch" or "onnx"; by default ONNX Runtime for a folder holding only model.onnx, else torch.
    precision: "fp32" (exact, the default), "int8" (onnx: model_quantized.onnx) or "bf16" (torch, bfloat16 weights).
    options go to the pipeline (feature-extraction: pooling, normalize).
    """
    from ..backends import load_backend
    from ..tokenizer import Tokenizer

    if task not in PIPELINES:
        raise UserError(f"unknown task {task!r}; expected one of {', '.join(PIPELINES)}")
    engine = load_backend(model, task, backend, threads=threads, precision=precision)
    tokenizer = Tokenizer.from_pretrained(engine.folder)
    return PIPELINES[task](engine, tokenizer, batch_size=batch_size, max_length=max_length, **options)
