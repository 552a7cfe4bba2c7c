"""The training loop: distillation with the triple loss, or plain masked-LM pretraining (no teacher).

The loop is the one every run shares (loop.py); this module gives it a micro-batch (collated token ids,
masked afresh with the micro-batch's own seed) and its loss (Sanh et al. 2019, section 2: alpha-weighted
distillation, masked-LM and cosine terms). Under torchrun it runs DistributedDataParallel (NCCL on GPUs,
gloo on CPUs), each rank reading its own batches; a resumed run, or a run on more processes with the same
global batch, computes exactly what one uninterrupted process would.
"""

from __future__ import annotations

import functools
import json
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

    from . import checkpointing, distributed, loop
    from .losses import cosine_loss, distillation_loss, mlm_loss, mse_loss
    from .masking import IGNORE, mask_tokens, token_weights
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
    plan = loop.plan([per_epoch] * recipe.epochs, world, recipe.gradient_accumulation, recipe.max_steps)
    if plan.steps_per_epoch[0] == 0:
        raise UserError(f"{data.folder} has {per_epoch} batches, fewer than one step needs "
                        f"({world} processes x {plan.accumulation} accumulation); lower --gradient-accumulation")
    opt = loop.optimisation(student, recipe, plan.total_steps, recipe.precision, device, world)
    position = loop.Position()
    if state is not None:
        checkpointing.restore(state, **opt.parts())
        position = loop.Position(state["step"], state["epoch"], state["micro"])

    out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        (out / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=2) + "\n")
    log = RunLog(out, rank == 0, plan.total_steps, progress, initial=position.step, every=recipe.log_every)
    batches_of = functools.lru_cache(maxsize=1)(lambda epoch: epoch_batches(data.lengths, batching, recipe.seed, epoch))

    def batch(at: loop.MicroBatch) -> dict:
        rows = batches_of(at.epoch)[at.index]
        ids, mask = (torch.from_numpy(a) for a in collate(data, rows, tokenizer.pad_token_id))
        generator = torch.Generator().manual_seed(at.seed)  # masking
        masked, labels = mask_tokens(ids, mask, special, tokenizer.mask_token_id, config.vocab_size, generator,
                                     recipe.mlm_probability, recipe.mask_split, weights)
        return {"input_ids": masked.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}

    def forward(inputs: dict, at: loop.MicroBatch):
        masked, mask, labels = inputs["input_ids"], inputs["attention_mask"], inputs["labels"]
        real = mask.bool()
        chosen = labels != IGNORE
        # the head runs only where a loss reads it: every real token for distillation, else the masked ones
        where = chosen if teacher is None or recipe.restrict_ce_to_mask else real
        s = opt.model(masked, mask, logits_at=where)
        terms = {"mlm": mlm_loss(s["logits"], labels[where])}
        if teacher is not None:
            with torch.no_grad():
                t = teacher(masked, mask, logits_at=where)
            terms["ce"] = distillation_loss(s["logits"], t["logits"], temperature=recipe.temperature)
            if recipe.alpha_cos:
                terms["cos"] = cosine_loss(s["last_hidden_state"], t["last_hidden_state"], real)
            if recipe.alpha_mse:
                terms["mse"] = mse_loss(s["logits"], t["logits"])
        alphas = {"ce": recipe.alpha_ce, "mlm": recipe.alpha_mlm, "cos": recipe.alpha_cos, "mse": recipe.alpha_mse}
        return sum(alphas[k] * v for k, v in terms.items()), terms

    def save(at: loop.Position) -> None:
        checkpointing.write(checkpoint_path, recipe.to_dict(), world,
                            {"step": at.step, "epoch": at.epoch, "micro": at.micro}, **opt.parts())

    position, _ = loop.run(plan, position, opt, rank=rank, seed=recipe.seed, device=device,
                           autocast_dtype=autocast_dtype, max_grad_norm=recipe.max_grad_norm,
                           checkpoint_every=recipe.checkpoint_every, log=log, batch=batch, forward=forward,
                           mean_of_micro_batches=True, save=save)
    log.close()
    if rank == 0:
        _save_final(student, out, tokenizer)
    distributed.finish(world)
    return {"steps": position.step, "out": str(out)}


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

