"""The training loop: distillation with the triple loss, or plain masked-LM pretraining (no teacher).

One flat, visible loop. Under torchrun it runs DistributedDataParallel (NCCL on GPUs, gloo on CPUs),
each rank reading its own batches. Every micro-batch's randomness (masking, dropout) is seeded by its
global index, so a resumed run, or a run on more processes with the same global batch, computes exactly
what one uninterrupted process would.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import numpy as np

from ..errors import MissingHead, UserError
from .checkpointing import CHECKPOINT
from .data import Batching, TokenShards, collate, epoch_batches
from .recipe import Recipe


def train(recipe: Recipe, resume: bool = False, progress: bool = True, given: set[str] | None = None) -> dict:
    """Run `recipe` into recipe.out. With `resume`, continue the run there from its last checkpoint; the
    settings named in `given` (default: all of the recipe's) must then equal the run's own."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    from . import checkpointing, distributed
    from .losses import cosine_loss, distillation_loss, mlm_loss, mse_loss
    from .masking import IGNORE, mask_tokens, token_weights
    from .optim import adamw, linear_schedule, optimizer_step, warmup_steps
    from .runlog import RunLog

    recipe.validate()
    out = Path(recipe.out)
    checkpoint_path = out / CHECKPOINT
    env = distributed.setup()
    rank, world, device = env.rank, env.world, env.device
    state = None
    if resume:
        state, recipe = checkpointing.resume(checkpoint_path, world, recipe, given)
    elif checkpoint_path.exists():
        raise UserError(f"{out} already holds a run; pass --resume to continue it, or choose a new --out")
    autocast_dtype = distributed.autocast_dtype(recipe.precision, device)

    data = TokenShards(recipe.data)
    student, config, tokenizer = _load_student(recipe.student, data)
    teacher = _load_teacher(recipe, config) if recipe.teacher else None
    student.to(device).train()
    if teacher is not None:
        teacher.to(device).eval().requires_grad_(False)  # frozen: no gradients, no optimiser state

    special = tokenizer.all_special_ids
    weights = token_weights(data.counts(), special, recipe.mlm_smoothing) if recipe.mlm_smoothing else None
    batching = Batching(recipe.max_tokens, recipe.max_sequences)
    per_epoch = len(epoch_batches(data.lengths, batching, recipe.seed, 0))
    micro_per_step = recipe.gradient_accumulation
    steps_per_epoch = per_epoch // (world * micro_per_step)  # leftover micro-batches of an epoch are skipped
    if steps_per_epoch == 0:
        raise UserError(f"{data.folder} has {per_epoch} batches, fewer than one step needs "
                        f"({world} processes x {micro_per_step} accumulation); lower --gradient-accumulation")
    total_steps = recipe.epochs * steps_per_epoch
    if recipe.max_steps:
        total_steps = min(total_steps, recipe.max_steps)

    optimizer = adamw(student, recipe.learning_rate, recipe.weight_decay, recipe.adam_betas, recipe.adam_epsilon)
    scheduler = linear_schedule(optimizer, warmup_steps(recipe.warmup, total_steps), total_steps)
    use_cuda = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=recipe.precision == "fp16" and use_cuda)
    model = DistributedDataParallel(student, device_ids=[device.index] if use_cuda else None) if world > 1 else student
    parts = dict(student=student, optimizer=optimizer, scheduler=scheduler, scaler=scaler)

    step, epoch, micro = 0, 0, 0
    if state is not None:
        checkpointing.restore(state, **parts)
        step, epoch, micro = state["step"], state["epoch"], state["micro"]

    out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        (out / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=2) + "\n")
    log = RunLog(out, rank == 0, total_steps, progress, initial=step, every=recipe.log_every)
    totals: dict[str, float] = {}
    tokens, started = 0, time.perf_counter()
    while step < total_steps:
        batches = epoch_batches(data.lengths, batching, recipe.seed, epoch)
        while micro < steps_per_epoch * micro_per_step and step < total_steps:
            g = micro * world + rank  # this micro-batch's index in the epoch, across all ranks
            ids, mask = (torch.from_numpy(a) for a in collate(data, batches[g], tokenizer.pad_token_id))
            seed = _batch_seed(recipe.seed, epoch, g)
            torch.manual_seed(seed)  # dropout
            generator = torch.Generator().manual_seed(seed)  # masking
            masked, labels = mask_tokens(ids, mask, special, tokenizer.mask_token_id, config.vocab_size, generator,
                                         recipe.mlm_probability, recipe.mask_split, weights)
            masked, mask, labels = masked.to(device), mask.to(device), labels.to(device)
            real = mask.bool()
            chosen = labels != IGNORE
            # the head runs only where a loss reads it: every real token for distillation, else the masked ones
            at = chosen if teacher is None or recipe.restrict_ce_to_mask else real
            sync = (micro + 1) % micro_per_step == 0
            # DistributedDataParallel all-reduces gradients once a step, not at every accumulated micro-batch
            no_sync = model.no_sync() if world > 1 and not sync else contextlib.nullcontext()
            with no_sync, torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                s = model(masked, mask, logits_at=at)
                terms = {"mlm": mlm_loss(s["logits"], labels[at])}
                if teacher is not None:
                    with torch.no_grad():
                        t = teacher(masked, mask, logits_at=at)
                    terms["ce"] = distillation_loss(s["logits"], t["logits"], temperature=recipe.temperature)
                    if recipe.alpha_cos:
                        terms["cos"] = cosine_loss(s["last_hidden_state"], t["last_hidden_state"], real)
                    if recipe.alpha_mse:
                        terms["mse"] = mse_loss(s["logits"], t["logits"])
                alphas = {"ce": recipe.alpha_ce, "mlm": recipe.alpha_mlm, "cos": recipe.alpha_cos, "mse": recipe.alpha_mse}
                loss = sum(alphas[k] * v for k, v in terms.items())
                scaler.scale(loss / micro_per_step).backward()
            for k, v in {"loss": loss, **terms}.items():
                totals[k] = totals.get(k, 0.0) + float(v.detach()) / micro_per_step
            tokens += int(mask.sum())
            micro += 1
            if not sync:
                continue
            grad_norm, lr = optimizer_step(student, optimizer, scheduler, scaler, recipe.max_grad_norm)
            step += 1
            totals = distributed.global_mean(totals, world)  # the logged numbers are the global batch's
            tokens = distributed.global_sum(tokens, world)
            elapsed = time.perf_counter() - started
            log.step({"step": step, "epoch": epoch, "lr": lr, "grad_norm": grad_norm,
                      "tokens_per_second": tokens / elapsed if elapsed else 0.0,
                      **{f"loss_{k}" if k != "loss" else k: v for k, v in totals.items()}})
            totals, tokens, started = {}, 0, time.perf_counter()
            if step % recipe.checkpoint_every == 0 or step == total_steps:
                if rank == 0:
                    checkpointing.write(checkpoint_path, recipe.to_dict(), world,
                                        {"step": step, "epoch": epoch, "micro": micro}, **parts)
                distributed.barrier(world)
        if step < total_steps:
            epoch, micro = epoch + 1, 0
    log.close()
    if rank == 0:
        _save_final(student, out, tokenizer)
    distributed.finish(world)
    return {"steps": step, "out": str(out)}


def _batch_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.default_rng([seed, epoch, index]).integers(2**62))


def _load_student(model: str, data: TokenShards):
    from ..checkpoint import load
    from ..tokenizer import Tokenizer

    try:
        net, config, folder = load(model, task="fill-mask")
    except MissingHead:
        raise UserError(f"{model} has no masked-LM head; train a ...ForMaskedLM checkpoint (see init-student)") from None
    tokenizer = Tokenizer.from_pretrained(data.folder / "tokenizer")
    used = np.flatnonzero(data.counts())
    if used.size and used[-1] >= config.vocab_size:
        raise UserError(f"the data uses token id {used[-1]}, past {model}'s vocabulary of {config.vocab_size}; "
                        "prepare the data with this model's tokenizer")
    return net, config, tokenizer


def _load_teacher(recipe: Recipe, student_config):
    from ..checkpoint import load

    try:
        teacher, config, _ = load(recipe.teacher, task="fill-mask")
    except MissingHead:
        raise UserError(f"teacher {recipe.teacher} has no masked-LM head; a teacher must be a ...ForMaskedLM checkpoint") from None
    if config.vocab_size != student_config.vocab_size:
        raise UserError(f"the student's vocabulary ({student_config.vocab_size}) differs from the teacher's "
                        f"({config.vocab_size}); distillation compares distributions over one vocabulary")
    if recipe.alpha_cos and config.dim != student_config.dim:
        raise UserError(f"the student's width ({student_config.dim}) differs from the teacher's ({config.dim}); "
                        "the cosine loss needs one width (or set --alpha-cos 0)")
    return teacher


def _save_final(student, out: Path, tokenizer) -> None:
    from ..checkpoint import save

    save(student.eval(), out, "fill-mask", tokenizer)

