"""The PyTorch backend: our model from checkpoint.py, run on numpy arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..checkpoint import load
from ..config import Config
from ..errors import UserError
from ..model import task_of


class TorchBackend:
    def __init__(self, net: torch.nn.Module, config: Config, task: str, folder: Path):
        self.net, self.config, self.task, self.folder = net, config, task, folder

    @classmethod
    def load(cls, model, task: str | None = None, threads: int | None = None, precision: str = "fp32"):
        """precision: "fp32" (exact) or "bf16": weights held in bfloat16, the fast mode where the CPU has
        AVX512-BF16 or AMX. Short texts are bound by reading the weights, so half the bytes is about twice the
        speed; autocast would convert the fp32 weights at every call instead."""
        if precision not in ("fp32", "bf16"):
            hint = "; int8 runs on ONNX Runtime: export with --quantize int8 and use the onnx backend" if precision == "int8" else ""
            raise UserError(f"precision {precision!r} is not available with the torch backend (fp32 or bf16){hint}")
        if threads:
            torch.set_num_threads(threads)
        net, config, folder = load(model, task, dtype=torch.bfloat16 if precision == "bf16" else None)
        return cls(net, config, task_of(net), folder)

    @torch.inference_mode()
    def run(self, input_ids, attention_mask, token_type_ids=None, logits_at=None) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(input_ids, dtype=np.int64)),
                torch.from_numpy(np.ascontiguousarray(attention_mask, dtype=np.int64))]
        types = None if token_type_ids is None else torch.from_numpy(np.ascontiguousarray(token_type_ids, dtype=np.int64))
        kwargs = {"logits_at": torch.from_numpy(np.asarray(logits_at, dtype=bool))} if logits_at is not None else {}
        out = self.net(*args, types, **kwargs)
        return {k: v.float().numpy() for k, v in out.items() if isinstance(v, torch.Tensor)}
