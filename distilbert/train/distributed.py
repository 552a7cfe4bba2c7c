"""Processes and devices: torchrun's environment, the autocast precision the device supports, global means."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import UserError


@dataclass
class Setup:
    rank: int
    world: int
    device: object  # torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup() -> Setup:
    """(rank, world size, device) from torchrun's environment; one process without it.

    NCCL on GPUs, gloo on CPUs.
    """
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        keep_freed_memory()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Setup(rank, world, device)


def keep_freed_memory() -> bool:
    """Ask the C library (glibc) to keep freed memory for reuse instead of giving it back to the system.

    Every training step frees and allocates again the same large tensors: the word embedding's dense gradient
    is 30,522 x dim floats (47 MB for MiniLM, 94 MB for DistilBERT-base). glibc maps each block over 32 MB
    afresh and unmaps it when freed, so every step faults in new pages: zeroing that gradient took 14 ms on
    fresh pages against 1.2 ms on pages already mapped. With mmap off for the main thread's allocations (glibc
    still maps blocks over 64 MB for other threads) and a 1 GB trim threshold, a MiniLM CoNLL step (batch 8,
    two cores) went from 131 to 110 ms. The cost is that the process keeps its peak memory. Training runs call
    it (`setup`); `DISTILBERT_KEEP_FREED_MEMORY=0` turns it off.
    Returns False where it does nothing: not Linux, no glibc `mallopt`, or turned off.
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux") or os.environ.get("DISTILBERT_KEEP_FREED_MEMORY") == "0":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # malloc.h
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 1 << 30))


def autocast_dtype(precision: str, device):
    """The autocast dtype for `precision` on `device`; None for fp32. fp16 needs a GPU (a gradient scaler)."""
    import torch

    if precision == "fp32":
        return None
    if precision == "fp16":
        if device.type != "cuda":
            raise UserError("--precision fp16 needs a CUDA GPU (its gradient scaler does not run on a CPU); "
                            "use bf16 or fp32 here")
        return torch.float16
    if precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError("this GPU has no bfloat16; use --precision fp16 or fp32")
        return torch.bfloat16
    raise UserError(f"precision must be fp32, bf16 or fp16, got {precision!r}")


def best_precision(device) -> str:
    """bf16 where the hardware computes it natively, else fp32.

    Natively: recent GPUs, and CPUs with AMX (Intel Sapphire Rapids and later), where bf16 autocast trains
    MiniLM 1.4x (batch 8 x 40 tokens) to 1.9x (32 x 100) faster than fp32 on two cores. Other CPUs emulate
    bf16 and run it slower than fp32.
    """
    import torch

    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_amx() else "fp32"


def cpu_has_amx() -> bool:
    import torch

    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # torch >= 2.3
    try:
        return bool(probe()) if probe is not None else False
    except RuntimeError:
        return False


def global_mean(values: dict[str, float], world: int) -> dict[str, float]:
    """Each rank's numbers averaged over the ranks (for the log: the global batch's numbers)."""
    if world == 1:
        return values
    import torch
    import torch.distributed as dist

    keys = sorted(values)
    packed = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(packed)
    return {k: float(v) / world for k, v in zip(keys, packed)}


def global_sum(value: float, world: int) -> float:
    if world == 1:
        return value
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t[0])


def broadcast(value, world: int):
    """Rank 0's picklable `value` on every rank."""
    if world == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def finish(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
