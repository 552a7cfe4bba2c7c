"""The loop every training run shares (distillation, pretraining, fine-tuning), in nanoGPT's order.

For each micro-batch: its inputs, its seed, forward and backward (gradients accumulate; under torchrun
DistributedDataParallel all-reduces them once a step). At each step's last micro-batch: clip and step
(optim.optimizer_step, which also advances the learning-rate schedule), log, the caller's evaluation,
checkpoint. What differs between runs comes in as two functions: `batch` (the inputs of one micro-batch)
and `forward` (its loss and the loss's terms).

Every micro-batch's randomness (masking, dropout) is seeded by its place in the epoch across all ranks, so a
resumed run, or a run on more processes with the same global batch, computes exactly what one uninterrupted
process would. The arithmetic that decides a step (`plan`, `batch_items`, `loss_divisor`, `batch_seed`, and
optim.lr_factor) is pure and tested on its own (tests/test_train_loop.py).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

# --- the arithmetic of a run: pure --------------------------------------------------------------------------


def batch_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of the micro-batch at `index` of `epoch` (its dropout, its masking)."""
    return int(np.random.default_rng([seed, epoch, index]).integers(2**62))


@dataclass(frozen=True)
class Plan:
    """Which micro-batches make which step: `accumulation` micro-batches on each of `world` ranks a step."""

    steps_per_epoch: tuple[int, ...]
    total_steps: int
    accumulation: int
    world: int

    def micro_batches(self, epoch: int) -> int:
        """This rank's micro-batches in `epoch` (the epoch's leftovers, too few for a step, are skipped)."""
        return self.steps_per_epoch[epoch] * self.accumulation

    def epoch_ends(self) -> set[int]:
        """The global step at which each epoch ends."""
        return set(np.cumsum(self.steps_per_epoch).tolist())


def plan(batches_per_epoch: list[int], world: int, accumulation: int, max_steps: int | None = None) -> Plan:
    """The steps of a run of len(batches_per_epoch) epochs; `max_steps` cuts it short. An epoch with fewer
    batches than one step takes has no steps: the caller says what to change."""
    steps = tuple(n // (world * accumulation) for n in batches_per_epoch)
    total = sum(steps)
    if max_steps:
        total = min(total, max_steps)
    return Plan(steps, total, accumulation, world)


def batch_items(batches: list[list[int]], row_items: list[int], by_length: bool) -> list[float]:
    """How many items (what a loss averages over: rows, labels, labelled tokens) each batch holds.

    Batches of like lengths (`by_length`) hold like counts of items: a step of short sentences would give each of
    its few tokens a large share. Such a batch counts as its rows times the mean items a row over the data
    instead: a step weighs its items as a step of as many rows drawn at random does, on average.
    """
    if by_length:
        per_row = sum(row_items) / max(1, len(row_items))
        return [len(b) * per_row for b in batches]
    return [sum(row_items[i] for i in b) for b in batches]


def loss_divisor(items: list[float], micro: int, accumulation: int, world: int) -> float:
    """What the loss of this rank's micro-batch `micro` is divided by: the items of all the micro-batches of its
    step, on every rank (`items`: the epoch's batch_items). Every loss summed over its items and divided by
    this, a step is one batch of all its rows, not the mean of each micro-batch's mean (which transformers'
    Trainer takes for these heads: its num_items_in_batch reaches only heads whose loss function takes it)."""
    first = (micro - micro % accumulation) * world  # the step's first micro-batch, across ranks
    return sum(items[first : first + accumulation * world]) or 1


# --- the loop ------------------------------------------------------------------------------------------------


@dataclass
class Position:
    """Where a run is: optimizer steps done, the epoch, and this rank's micro-batches done in it."""

    step: int = 0
    epoch: int = 0
    micro: int = 0


@dataclass(frozen=True)
class MicroBatch:
    epoch: int
    micro: int  # this rank's count in the epoch
    index: int  # its batch among the epoch's, across all ranks
    seed: int  # batch_seed of (epoch, index): the same on any number of processes


@dataclass
class Optimisation:
    """The student, the module the forward pass runs (DistributedDataParallel's wrapper under torchrun), and
    what steps it."""

    student: Any
    model: Any
    optimizer: Any
    scheduler: Any
    scaler: Any

    def parts(self) -> dict:
        """What a checkpoint holds the state of."""
        return dict(student=self.student, optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.scaler)


def optimisation(student, recipe, total_steps: int, precision: str, device, world: int) -> Optimisation:
    """AdamW with BERT's groups, the linear schedule, the fp16 gradient scaler (GPUs), the DDP wrapper."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    from .optim import adamw, linear_schedule, warmup_steps

    optimizer = adamw(student, recipe.learning_rate, recipe.weight_decay, recipe.adam_betas, recipe.adam_epsilon)
    scheduler = linear_schedule(optimizer, warmup_steps(recipe.warmup, total_steps), total_steps)
    use_cuda = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16" and use_cuda)
    model = DistributedDataParallel(student, device_ids=[device.index] if use_cuda else None) if world > 1 else student
    return Optimisation(student, model, optimizer, scheduler, scaler)


def run(
    plan: Plan,
    start: Position,
    opt: Optimisation,
    *,
    rank: int,
    seed: int,
    device,
    autocast_dtype,
    max_grad_norm: float,
    checkpoint_every: int,
    log,
    batch: Callable[[MicroBatch], dict],
    forward: Callable[[dict, MicroBatch], tuple[Any, dict]],
    mean_of_micro_batches: bool,
    save: Callable[[Position], None],
    evaluate: Callable[[int, int], tuple[bool, bool]] | None = None,
) -> tuple[Position, bool]:
    """Train from `start` to plan.total_steps; returns where it ended and whether `evaluate` stopped it.

    batch(micro_batch): the inputs, a dict of tensors with the "attention_mask" (1 = attend, 0 = padding).
    forward(inputs, micro_batch): the loss and its named terms (tensors), run under autocast. With
        `mean_of_micro_batches` each is the micro-batch's own mean and a step is the mean of its micro-batches;
        without, each is already the micro-batch's share of the step's loss (loss_divisor).
    save(position): write the checkpoint (rank 0); after every `checkpoint_every` steps, the last, and every
        evaluation. evaluate(step, epoch) -> (evaluated, stop), after every step.
    """
    import torch

    from . import distributed
    from .optim import optimizer_step

    world, accumulation = plan.world, plan.accumulation
    step, epoch, micro = start.step, start.epoch, start.micro
    totals: dict[str, float] = {}
    tokens, started = 0, time.perf_counter()
    stop = False
    while step < plan.total_steps and not stop:
        while micro < plan.micro_batches(epoch) and step < plan.total_steps:
            index = micro * world + rank  # this micro-batch's index in the epoch, across all ranks
            this = MicroBatch(epoch, micro, index, batch_seed(seed, epoch, index))
            inputs = batch(this)
            torch.manual_seed(this.seed)  # dropout
            sync = (micro + 1) % accumulation == 0
            # DistributedDataParallel all-reduces gradients once a step, not at every accumulated micro-batch
            no_sync = opt.model.no_sync() if world > 1 and not sync else contextlib.nullcontext()
            with no_sync, torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                loss, terms = forward(inputs, this)
                opt.scaler.scale(loss / accumulation if mean_of_micro_batches else loss).backward()
            for k, v in {"loss": loss, **terms}.items():
                value = float(v.detach())
                totals[k] = totals.get(k, 0.0) + (value / accumulation if mean_of_micro_batches else value)
            tokens += int(inputs["attention_mask"].sum())
            micro += 1
            if not sync:
                continue
            grad_norm, lr = optimizer_step(opt.student, opt.optimizer, opt.scheduler, opt.scaler, max_grad_norm)
            step += 1
            totals = distributed.global_mean(totals, world)  # the logged numbers are the global batch's
            tokens = distributed.global_sum(tokens, world)
            elapsed = time.perf_counter() - started
            log.step({"step": step, "epoch": epoch, "lr": lr, "grad_norm": grad_norm,
                      "tokens_per_second": tokens / elapsed if elapsed else 0.0,
                      **{f"loss_{k}" if k != "loss" else k: v for k, v in totals.items()}})
            totals, tokens, started = {}, 0, time.perf_counter()
            evaluated, stop = evaluate(step, epoch) if evaluate is not None else (False, False)
            if evaluated or step % checkpoint_every == 0 or step == plan.total_steps:
                if rank == 0:
                    save(Position(step, epoch, micro))
                distributed.barrier(world)
            if stop:
                break
        if step < plan.total_steps and not stop:
            epoch, micro = epoch + 1, 0
    return Position(step, epoch, micro), stop
