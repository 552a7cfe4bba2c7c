"""The training loop: distillation with the triple loss, or plain masked-LM pretraining (no teacher).

One flat, visible loop. Under torchrun it runs DistributedDataParallel (NCCL on GPUs, gloo on CPUs),
each rank reading its own batches. Every micro-batch's randomness (masking, dropout) is seeded by its
global index, so a resumed run, or a run on more processes with the same global batch, computes exactly
what one uninterrupted process would.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from ..errors import UserError
from .data import Batching, TokenShards, collate, epoch_batches
from .recipe import Recipe

CHECKPOINT = "checkpoint.pt"


def train(recipe: Recipe, resume: bool = False, progress: bool = True) -> dict:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from .losses import cosine_loss, distillation_loss, mlm_loss, mse_loss
    from .masking import IGNORE, mask_tokens, token_weights

    recipe.validate()
    out = Path(recipe.out)
    checkpoint_path = out / CHECKPOINT
    state = None
    if resume:
        state = read_checkpoint(checkpoint_path)
        recipe = Recipe.from_dict({**state["recipe"], "out": recipe.out})  # the run's own settings
    elif checkpoint_path.exists():
        raise UserError(f"{out} already holds a run; pass --resume to continue it, or choose a new --out")

    rank, world, device = _distributed()
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
    warmup_steps = math.ceil(recipe.warmup * total_steps)

    decay, no_decay = [], []
    for name, p in student.named_parameters():
        (no_decay if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=recipe.learning_rate, betas=recipe.adam_betas, eps=recipe.adam_epsilon,
    )

    def schedule(step: int) -> float:  # linear warm-up, then linear decay to zero
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    use_cuda = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=recipe.precision == "fp16" and use_cuda)
    autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[recipe.precision]
    model = DistributedDataParallel(student, device_ids=[device.index] if use_cuda else None) if world > 1 else student

    step, epoch, micro = 0, 0, 0
    if state is not None:
        student.load_state_dict(state["student"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        step, epoch, micro = state["step"], state["epoch"], state["micro"]

    out.mkdir(parents=True, exist_ok=True)
    log = _Log(out, rank == 0, recipe, total_steps, progress, initial=step)
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
            with no_sync, torch.autocast(device.type, dtype=autocast_dtype,
                                                                       enabled=autocast_dtype is not None):
                s = model(masked, mask, logits_at=at)
                parts = {"mlm": mlm_loss(s["logits"], labels[at])}
                if teacher is not None:
                    with torch.no_grad():
                        t = teacher(masked, mask, logits_at=at)
                    parts["ce"] = distillation_loss(s["logits"], t["logits"], temperature=recipe.temperature)
                    if recipe.alpha_cos:
                        parts["cos"] = cosine_loss(s["last_hidden_state"], t["last_hidden_state"], real)
                    if recipe.alpha_mse:
                        parts["mse"] = mse_loss(s["logits"], t["logits"])
                alphas = {"ce": recipe.alpha_ce, "mlm": recipe.alpha_mlm, "cos": recipe.alpha_cos, "mse": recipe.alpha_mse}
                loss = sum(alphas[k] * v for k, v in parts.items())
                scaler.scale(loss / micro_per_step).backward()
            for k, v in {"loss": loss, **parts}.items():
                totals[k] = totals.get(k, 0.0) + float(v.detach()) / micro_per_step
            tokens += int(mask.sum())
            micro += 1
            if not sync:
                continue
            scaler.unscale_(optimizer)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(student.parameters(), recipe.max_grad_norm))
            scaler.step(optimizer)
            scaler.update()
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if world > 1:  # the logged numbers are the global batch's
                packed = torch.tensor([totals[k] for k in sorted(totals)] + [tokens], dtype=torch.float64)
                dist.all_reduce(packed)
                totals = {k: float(v) / world for k, v in zip(sorted(totals), packed[:-1])}
                tokens = int(packed[-1])
            elapsed = time.perf_counter() - started
            log.step({"step": step, "epoch": epoch, "lr": lr, "grad_norm": grad_norm,
                      "tokens_per_second": tokens / elapsed if elapsed else 0.0, **{f"loss_{k}" if k != "loss" else k: v for k, v in totals.items()}})
            totals, tokens, started = {}, 0, time.perf_counter()
            if step % recipe.checkpoint_every == 0 or step == total_steps:
                if rank == 0:
                    write_checkpoint(checkpoint_path, recipe, student, optimizer, scheduler, scaler, step, epoch, micro)
                if world > 1:
                    dist.barrier()
        if step < total_steps:
            epoch, micro = epoch + 1, 0
    log.close()
    if rank == 0:
        _save_final(student, out, tokenizer)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return {"steps": step, "out": str(out)}


def _batch_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.default_rng([seed, epoch, index]).integers(2**62))


def _distributed():
    """(rank, world size, device) from torchrun's environment; one process without it."""
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
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def _load_student(model: str, data: TokenShards):
    from ..checkpoint import load
    from ..tokenizer import Tokenizer

    try:
        net, config, folder = load(model, task="fill-mask")
    except UserError as e:
        if "missing keys: vocab" in str(e):
            raise UserError(f"{model} has no masked-LM head; train a ...ForMaskedLM checkpoint (see init-student)") from None
        raise
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
    except UserError as e:
        if "missing keys: vocab" in str(e):
            raise UserError(f"teacher {recipe.teacher} has no masked-LM head; a teacher must be a ...ForMaskedLM checkpoint") from None
        raise
    if config.vocab_size != student_config.vocab_size:
        raise UserError(f"the student's vocabulary ({student_config.vocab_size}) differs from the teacher's "
                        f"({config.vocab_size}); distillation compares distributions over one vocabulary")
    if recipe.alpha_cos and config.dim != student_config.dim:
        raise UserError(f"the student's width ({student_config.dim}) differs from the teacher's ({config.dim}); "
                        "the cosine loss needs one width (or set --alpha-cos 0)")
    return teacher


def write_checkpoint(path: Path, recipe, student, optimizer, scheduler, scaler, step, epoch, micro) -> None:
    """Everything a resumed run needs, written to a temporary name and renamed: never half a file."""
    import torch

    state = {
        "format": "distilbert-train-checkpoint/1",
        "recipe": recipe.to_dict(),
        "student": student.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": {"torch": torch.get_rng_state()},
        "step": step,
        "epoch": epoch,
        "micro": micro,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_checkpoint(path: Path) -> dict:
    import torch

    if not path.is_file():
        raise UserError(f"nothing to resume: {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("format") != "distilbert-train-checkpoint/1":
            raise ValueError("not a checkpoint of this trainer")
        return state
    except Exception as e:
        raise UserError(f"checkpoint {path} is corrupt or unreadable ({type(e).__name__}); it was left as it is") from None


def _save_final(student, out: Path, tokenizer) -> None:
    from ..checkpoint import save

    save(student.eval(), out, "fill-mask", tokenizer)


class _Log:
    """Each step to log.jsonl, TensorBoard (when installed) and a progress bar; rank 0 only."""

    def __init__(self, out: Path, active: bool, recipe: Recipe, total: int, progress: bool, initial: int):
        self.active = active
        if not active:
            return
        from tqdm import tqdm

        (out / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=2) + "\n")
        self.file = open(out / "log.jsonl", "a", encoding="utf-8")
        self.bar = tqdm(total=total, initial=initial, desc="training", unit="step", disable=not progress)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tensorboard"))
        except ImportError:
            self.writer = None
        self.every = recipe.log_every

    def step(self, record: dict) -> None:
        if not self.active:
            return
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{record['loss']:.3f}")
        if record["step"] % self.every:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.writer is not None:
            for key, value in record.items():
                if key not in ("step", "epoch"):
                    self.writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.active:
            self.bar.close()
            self.file.close()
            if self.writer is not None:
                self.writer.close()
