"""The PyTorch backend: our model from checkpoint.py, run on numpy arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..checkpoint import load
from ..config import Config
from ..errors import UserError, first_line
from ..model import task_of


class TorchBackend:
    def __init__(self, net: torch.nn.Module, config: Config, task: str, folder: Path):
        self.net, self.config, self.task, self.folder = net, config, task, folder

    @classmethod
    def load(cls, model, task: str | None = None, threads: int | None = None, precision: str = "fp32",
             compile: bool = False):
        """precision: "fp32" (exact) or "bf16": weights held in bfloat16, the fast mode where the CPU has
        AVX512-BF16 or AMX. Short texts are bound by reading the weights, so half the bytes is about twice the
        speed; autocast would convert the fp32 weights at every call instead.
        compile: run the network through torch.compile (TorchInductor, shapes dynamic, weights frozen in),
        compiled here, at load, for every batch size and length. On two CPU cores, server-sized batches of the
        full-size model took 13% less time in bf16 and 5% less in fp32 (agreeing with eager to 3e-6), after
        20-40 s of compiling."""
        if precision not in ("fp32", "bf16"):
            hint = "; int8 runs on ONNX Runtime: export with --quantize int8 and use the onnx backend" if precision == "int8" else ""
            raise UserError(f"precision {precision!r} is not available with the torch backend (fp32 or bf16){hint}")
        if threads:
            torch.set_num_threads(threads)
        net, config, folder = load(model, task, dtype=torch.bfloat16 if precision == "bf16" else None)
        backend = cls(net, config, task_of(net), folder)
        if compile:
            backend.compile()
        return backend

    def compile(self) -> None:
        """torch.compile the network and compile it now, for every shape: a graph with dynamic batch and length,
        one for a batch of one row, and for a masked LM the same with logits at one or several positions."""
        net = self.net
        self.net = torch.compile(net, dynamic=True, options={"freezing": True})
        ids = np.full((2, 8), self.config.pad_token_id, dtype=np.int64)
        mask = np.ones_like(ids)
        types = np.zeros_like(ids) if self.config.type_vocab_size else None
        one, two = np.zeros(ids.shape, dtype=bool), np.zeros(ids.shape, dtype=bool)
        one[0, 1] = two[0, 1] = two[0, 2] = True  # one [MASK] in the batch, and two
        try:
            for rows in (1, 2):  # dynamo compiles a size of 1 apart from the others: rows, and masks below
                for logits_at in (None, one[:rows], two[:rows]) if self.task == "fill-mask" else (None,):
                    self.run(ids[:rows], mask[:rows], None if types is None else types[:rows], logits_at)
        except Exception as e:  # TorchInductor builds C++ on CPUs: no compiler, or one it cannot use
            self.net = net
            cause = getattr(e, "inner_exception", None) or e.__cause__ or e  # dynamo wraps the backend's error
            raise UserError(f"torch.compile failed ({type(cause).__name__}: {first_line(cause)}); on a CPU it needs "
                            "a C++ compiler (g++); leave compile out") from None

    @torch.inference_mode()
    def run(self, input_ids, attention_mask, token_type_ids=None, logits_at=None) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(input_ids, dtype=np.int64)),
                torch.from_numpy(np.ascontiguousarray(attention_mask, dtype=np.int64))]
        types = None if token_type_ids is None else torch.from_numpy(np.ascontiguousarray(token_type_ids, dtype=np.int64))
        kwargs = ({"logits_at": torch.from_numpy(np.asarray(logits_at, dtype=bool)), "logits_only": True}
                  if logits_at is not None else {})
        out = self.net(*args, types, **kwargs)
        return {k: v.float().numpy() for k, v in out.items() if isinstance(v, torch.Tensor)}
