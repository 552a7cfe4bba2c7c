"""The PyTorch backend: our model from checkpoint.py, run on numpy arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..checkpoint import load
from ..config import Config


class TorchBackend:
    def __init__(self, net: torch.nn.Module, config: Config, task: str, folder: Path, autocast: torch.dtype | None = None):
        self.net, self.config, self.task, self.folder = net, config, task, folder
        self.autocast = autocast  # torch.bfloat16: the fast mode on CPUs with AMX / AVX512-BF16

    @classmethod
    def load(cls, model, task: str | None = None, threads: int | None = None, autocast: str | None = None):
        if threads:
            torch.set_num_threads(threads)
        net, config, folder = load(model, task)
        dtype = {None: None, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}[autocast]
        return cls(net, config, _task_of(net), folder, dtype)

    @torch.inference_mode()
    def run(self, input_ids, attention_mask, token_type_ids=None, logits_at=None) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(input_ids, dtype=np.int64)),
                torch.from_numpy(np.ascontiguousarray(attention_mask, dtype=np.int64))]
        types = None if token_type_ids is None else torch.from_numpy(np.ascontiguousarray(token_type_ids, dtype=np.int64))
        kwargs = {"logits_at": torch.from_numpy(np.asarray(logits_at, dtype=bool))} if logits_at is not None else {}
        with torch.autocast("cpu", dtype=self.autocast, enabled=self.autocast is not None):
            out = self.net(*args, types, **kwargs)
        return {k: v.float().numpy() for k, v in out.items() if isinstance(v, torch.Tensor)}


def _task_of(net: torch.nn.Module) -> str:
    from ..model import HEADS

    return next(task for task, cls in HEADS.items() if type(net) is cls)
