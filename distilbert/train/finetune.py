"""Fine-tuning: a new task head on any DistilBERT or BERT checkpoint, trained on labelled data.

The loop every run shares (loop.py, on optim, distributed, checkpointing, runlog): AdamW without decay on
biases and LayerNorms, linear warm-up then decay, clipping, batches grouped by length under a token budget
(batching.shuffled_groups), gradient accumulation, DDP under torchrun, bf16 autocast where the hardware has
it, full-state checkpoints and bit-identical resume. A step's
loss is the mean over all its rows' items (rows, or labelled tokens for NER) whatever the micro-batches
and ranks that hold them: the same step as one process with the whole batch. With batches grouped by length
the divisor is the step's rows times the data's mean items a row, so a step of short NER sentences weighs
its tokens as a step of as many random rows does on average (loop.batch_items, loop.loss_divisor).
The validation set is scored every epoch (or every `eval_steps`) with the task's metric; the best model by
`metric` is the one kept. With a teacher (a model fine-tuned on the same task) the loss adds the KL of
softened outputs (Sanh et al. 2019, section 4.1, "distillation during fine-tuning").

Defaults are those of transformers' run_glue / run_ner / run_qa (batch 32, 3 epochs, 2e-5, QA 3e-5 at 384
tokens with stride 128), with BERT's warm-up over the first 10% of steps and weight decay 0.01.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import batching, metrics, tasks
from ..data import Columns, read
from ..errors import UserError
from .checkpointing import CHECKPOINT
from .features import IGNORE, Rows, encode_qa, encode_text, encode_tokens, predict_answers, predict_tags, predict_text
from .recipe import Settings

TASKS = ("text-classification", "token-classification", "question-answering")
BEST = "best"  # the best model so far, a complete model folder; moved into the output folder at the end
RESULTS = "eval_results.json"


@dataclass
class FinetuneRecipe(Settings):
    TUPLES = ("adam_betas",)

    # what
    model: str = ""
    task: str = "text-classification"
    train: str = ""
    validation: str = ""
    out: str = ""
    glue: str | None = None  # a GLUE task name: its TSV layout and label names (train/validation from data_dir)
    data_dir: str | None = None
    teacher: str | None = None
    # columns (see distilbert.data.Columns)
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    tag_column: int = -1
    problem_type: str | None = None
    # sizes
    max_length: int | None = None  # None: 128, QA 384
    doc_stride: int = 128
    batch_size: int = 32  # sequences in a micro-batch (at most)
    max_tokens: int | None = None  # padded tokens in a micro-batch; None: batch_size x max_length
    group_by_length: bool = True  # batches of like lengths (little padding); off: random batches, as the Trainer's
    gradient_accumulation: int = 1
    # optimisation
    epochs: int = 3
    max_steps: int | None = None
    learning_rate: float | None = None  # None: 2e-5, QA 3e-5
    warmup: float = 0.1  # fraction of the steps (below 1) or steps
    weight_decay: float = 0.01
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    precision: str = "auto"  # auto: bf16 autocast where the hardware has it (recent GPU, AMX CPU), else fp32
    seed: int = 42
    # distillation during fine-tuning
    temperature: float = 2.0
    alpha_distil: float = 0.5  # loss = alpha x KL(teacher || student) x T^2 + (1 - alpha) x task loss
    # evaluation
    eval_steps: int | None = None  # None: at the end of every epoch
    metric: str | None = None  # the main metric; None: the task's (GLUE's, accuracy, pearson, overall_f1, f1)
    early_stopping: int | None = None  # stop after this many evaluations without improvement
    n_best: int = 20
    max_answer_length: int = 30
    # bookkeeping
    checkpoint_every: int = 500  # optimizer steps (and after every evaluation)
    log_every: int = 10
    threads: int | None = None

    def resolved(self) -> FinetuneRecipe:
        """Defaults that depend on the task filled in; files found from --glue and --data-dir; checked."""
        r = self
        if not r.model:
            raise UserError("no model to fine-tune: give --model (a DistilBERT or BERT folder or hub id)")
        if not r.out:
            raise UserError("no output folder: give --out")
        if not r.max_grad_norm > 0:
            raise UserError(f"--max-grad-norm must be above 0, got {r.max_grad_norm}")
        task = tasks.get(r.task).name
        if task not in TASKS:
            raise UserError(f"finetune trains {', '.join(TASKS)}, not {task}")
        qa = task == "question-answering"
        changes: dict = {"task": task}
        if r.glue:
            from ..data.glue import files, get

            if task != "text-classification":
                raise UserError(f"--glue is text classification; drop --task {task}")
            glue = get(r.glue)
            changes["glue"] = glue.name
            if r.data_dir:
                train, validation = files(glue.name, r.data_dir)
                changes["train"] = r.train or str(train)
                changes["validation"] = r.validation or str(validation)
        changes["max_length"] = r.max_length or (384 if qa else 128)
        changes["learning_rate"] = r.learning_rate or (3e-5 if qa else 2e-5)
        r = self.replace(**changes)
        if not r.train:
            raise UserError("no training data: give --train FILE (or --glue NAME --data-dir DIR)")
        if not r.validation:
            raise UserError("no validation data: give --validation FILE (or --glue NAME --data-dir DIR)")
        if r.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise UserError(f"precision must be auto, fp32, bf16 or fp16, got {r.precision!r}")
        for name in ("epochs", "batch_size", "gradient_accumulation", "checkpoint_every", "log_every", "n_best",
                     "max_answer_length"):
            if getattr(r, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(r, name)}")
        if not 0 <= r.alpha_distil <= 1 or r.temperature <= 0:
            raise UserError("alpha_distil must be in [0, 1] and temperature above 0")
        return r

    def columns(self) -> Columns:
        return Columns(self.text_column, self.text_pair_column, self.label_column, self.tag_column, self.problem_type)


def finetune(recipe: FinetuneRecipe, resume: bool = False, overwrite: bool = False, progress: bool = True,
             given: set[str] | None = None) -> dict:
    """Fine-tune recipe.model into recipe.out; returns the best evaluation and where the model is."""
    import torch

    from . import checkpointing, distributed, loop
    from .runlog import RunLog

    recipe = recipe.resolved()
    out = Path(recipe.out)
    checkpoint_path = out / CHECKPOINT
    env = distributed.setup()
    rank, world, device = env.rank, env.world, env.device
    state = None
    if resume:
        state, recipe = checkpointing.resume(checkpoint_path, world, recipe, given)
    else:
        prepare_output(out, overwrite, rank, world)
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    precision = distributed.best_precision(device) if recipe.precision == "auto" else recipe.precision
    autocast_dtype = distributed.autocast_dtype(precision, device)

    # data, labels and the model
    task = recipe.task
    train_examples = read(task, recipe.train, recipe.columns(), recipe.glue)
    eval_examples = read(task, recipe.validation, recipe.columns(), recipe.glue)
    id2label, problem = labels_of(recipe, train_examples)
    torch.manual_seed(recipe.seed)  # the new head's initialisation
    student, config, tokenizer = load_student(recipe, id2label, problem)
    teacher = load_teacher(recipe, config) if recipe.teacher else None
    max_length = min(recipe.max_length, config.max_position_embeddings, tokenizer.model_max_length)
    train_rows = encode(recipe, tokenizer, train_examples, config, max_length, training=True, where=recipe.train)
    eval_rows = encode(recipe, tokenizer, eval_examples, config, max_length, training=False, where=recipe.validation)
    student.to(device).train()
    if teacher is not None:
        teacher.to(device).eval().requires_grad_(False)

    # the schedule: every epoch's batches are known up front (deterministic in seed, epoch)
    max_tokens = recipe.max_tokens or recipe.batch_size * max_length
    window = batching.WINDOW if recipe.group_by_length else 1
    lengths = train_rows.lengths()
    epoch_batches = [batching.shuffled_groups(lengths, recipe.batch_size, max_tokens, recipe.seed, e, window)
                     for e in range(recipe.epochs)]
    plan = loop.plan([len(b) for b in epoch_batches], world, recipe.gradient_accumulation, recipe.max_steps)
    if min(plan.steps_per_epoch) == 0:
        raise UserError(f"{recipe.train} makes {len(epoch_batches[0])} batches, fewer than one step needs "
                        f"({world} processes x {plan.accumulation} accumulation); lower --batch-size or --gradient-accumulation")
    # what each batch's loss averages over: a step's loss is its items' summed loss over their count (loop.py)
    row_items = [loss_items(task, problem, target, len(id2label)) for target in train_rows.labels]
    epoch_items = [loop.batch_items(b, row_items, recipe.group_by_length) for b in epoch_batches]
    epoch_ends = plan.epoch_ends()

    opt = loop.optimisation(student, recipe, plan.total_steps, precision, device, world)
    metric = main_metric(recipe, problem)
    position, history, best = loop.Position(), [], None  # history: every evaluation
    if state is not None:
        checkpointing.restore(state, **opt.parts())
        position = loop.Position(state["step"], state["epoch"], state["micro"])
        history, best = state["history"], state["best"]

    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=2) + "\n")
    log = RunLog(out, rank == 0, plan.total_steps, progress, initial=position.step, every=recipe.log_every,
                 desc="fine-tuning")

    def batch(at: loop.MicroBatch) -> dict:
        rows = epoch_batches[at.epoch][at.index]
        return collate(train_rows, rows, tokenizer.pad_token_id, config.type_vocab_size > 0, device)

    def forward(inputs: dict, at: loop.MicroBatch):
        s = opt.model(inputs["input_ids"], inputs["attention_mask"], inputs.get("token_type_ids"))
        # this rank's share of the step's mean, times the ranks (DistributedDataParallel averages them)
        share = world / loop.loss_divisor(epoch_items[at.epoch], at.micro, plan.accumulation, world)
        hard = task_loss(task, problem, s, inputs["labels"]) * share
        if teacher is None:
            return hard, {}  # the task loss is the loss
        with torch.no_grad():
            t = teacher(inputs["input_ids"], inputs["attention_mask"], inputs.get("token_type_ids"))
        soft = soft_loss(task, problem, s, t, inputs, recipe.temperature) * share
        return recipe.alpha_distil * soft + (1 - recipe.alpha_distil) * hard, {"task": hard, "distil": soft}

    def evaluate(step: int, epoch: int) -> tuple[bool, bool]:
        """At the end of each epoch (or every eval_steps) and of the run: score, keep the best model."""
        nonlocal history, best
        end = step == plan.total_steps
        if not (step in epoch_ends or end if recipe.eval_steps is None else step % recipe.eval_steps == 0 or end):
            return False, False
        stop = False
        if rank == 0:
            scores = evaluate_rows(student, task, problem, eval_rows, eval_examples, config, tokenizer, recipe,
                                   device, autocast_dtype)
            history.append({"step": step, "epoch": epoch, **scores})
            log.write({"step": step, "epoch": epoch, **{f"eval_{k}": v for k, v in flat(scores).items()}})
            log.message(f"step {step}: {metric} {scores[metric]:.4f}")
            if best is None or scores[metric] > best[metric]:
                best = {"step": step, **scores}
                save_model(student, out / BEST, task, tokenizer)
            since_best = sum(1 for h in history if h["step"] > best["step"])
            stop = recipe.early_stopping is not None and since_best >= recipe.early_stopping
        history, best, stop = distributed.broadcast((history, best, stop), world)
        student.train()
        return True, stop

    def save(at: loop.Position) -> None:
        checkpointing.write(checkpoint_path, recipe.to_dict(), world,
                            {"step": at.step, "epoch": at.epoch, "micro": at.micro, "history": history, "best": best},
                            **opt.parts())

    position, stopped = loop.run(plan, position, opt, rank=rank, seed=recipe.seed, device=device,
                                 autocast_dtype=autocast_dtype, max_grad_norm=recipe.max_grad_norm,
                                 checkpoint_every=recipe.checkpoint_every, log=log, batch=batch, forward=forward,
                                 mean_of_micro_batches=False, save=save, evaluate=evaluate)
    if stopped:
        log.message(f"early stopping: no better {metric} in {recipe.early_stopping} evaluations")
    log.close()
    if rank == 0:
        finish_output(out, recipe, best, history, metric)
    distributed.finish(world)
    return {"out": str(out), "steps": position.step, "metric": metric, "best": best, "history": history}


# --- the parts of the loop ----------------------------------------------------------------------------------


def prepare_output(out: Path, overwrite: bool, rank: int, world: int) -> None:
    """`check_output` and the folder made, by rank 0 alone: under torchrun every rank would otherwise remove the
    old run at once, and remove what another rank had begun to write. The others wait for it, then raise its
    error if it had one."""
    from . import distributed

    error = None
    if rank == 0:
        try:
            check_output(out, overwrite)
            out.mkdir(parents=True, exist_ok=True)
        except UserError as e:
            error = str(e)
    error = distributed.broadcast(error, world)  # a collective: no rank goes on before rank 0 is done
    if error is not None:
        raise UserError(error)


def check_output(out: Path, overwrite: bool) -> None:
    """A finished model or a run in `out` is never overwritten by accident; with `overwrite` a new run replaces it."""
    finished = (out / "config.json").is_file()
    running = (out / CHECKPOINT).is_file()
    if not overwrite:
        if finished:
            raise UserError(f"{out} already holds a finished model; pass --overwrite to replace it, or choose another --out")
        if running:
            raise UserError(f"{out} already holds a run; pass --resume to continue it, --overwrite to start again, "
                            "or choose another --out")
        return
    for name in (CHECKPOINT, "log.jsonl", RESULTS, "tensorboard", BEST):
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def labels_of(recipe: FinetuneRecipe, examples: list) -> tuple[dict[int, str], str | None]:
    """id2label and problem type from the training data (GLUE: its own label names, in datasets' order)."""
    if recipe.task == "question-answering":
        return {0: "LABEL_0", 1: "LABEL_1"}, None
    if recipe.task == "token-classification":
        from ..data.ner import tag_names

        if any(e.tags is None for e in examples):
            raise UserError(f"{recipe.train} has sentences without tags; name the tag list with --label-column")
        return dict(enumerate(tag_names(examples))), None
    from ..data.tables import label_names, problem_type_of

    if recipe.glue:
        from ..data.glue import get

        names = get(recipe.glue).labels
        return ({0: "LABEL_0"}, "regression") if names is None else (dict(enumerate(names)), "single_label_classification")
    missing = sum(e.label is None for e in examples)
    if missing:
        raise UserError(f"{recipe.train}: {missing} example(s) have no label column {recipe.label_column or 'label'!r}; "
                        "name it with --label-column")
    problem = problem_type_of(examples, recipe.problem_type)
    if problem == "regression":
        return {0: "LABEL_0"}, problem
    names = label_names(examples, problem)
    if len(names) < 2 and problem == "single_label_classification":
        raise UserError(f"{recipe.train} has one label ({', '.join(names)}); classification needs at least two")
    return dict(enumerate(names)), problem


def load_student(recipe: FinetuneRecipe, id2label: dict[int, str], problem: str | None):
    """The checkpoint's encoder under a new head for the task (its own head where it already has this task's,
    with the same labels)."""
    from ..checkpoint import load
    from ..config import Config
    from ..hub import resolve
    from ..model import build
    from ..tokenizer import Tokenizer

    folder = resolve(recipe.model)
    config = Config.from_file(folder / "config.json")
    has = tasks.task_of_architectures(config.architectures)
    same_labels = recipe.task == "question-answering" or config.id2label == id2label
    if has == recipe.task and same_labels:
        net, config, folder = load(folder, recipe.task)
    else:
        base, config, folder = load(folder, "feature-extraction")
        extra = {k: v for k, v in config.extra.items() if k not in ("problem_type",)}
        config = config.replace(id2label=id2label, architectures=None, extra=extra)
        net = build(config, recipe.task)  # BERT's initialisation for the new head
        own = net.encoder.state_dict()
        source = {k: v for k, v in base.encoder.state_dict().items() if k in own}  # a pooler only where the head uses it
        assert all(k.startswith("pooler.") for k in set(own) - set(source)), sorted(set(own) - set(source))
        net.encoder.load_state_dict(source, strict=False)
    if problem in ("regression", "multi_label_classification"):
        config.extra["problem_type"] = problem
    elif recipe.task == "text-classification":
        config.extra["problem_type"] = "single_label_classification"
    net.config = config
    try:
        tokenizer = Tokenizer.from_pretrained(folder, config=config)
    except UserError as e:
        raise UserError(f"{folder} has no usable tokenizer ({e}); fine-tuning needs the model's tokenizer files") from None
    return net, config, tokenizer


def load_teacher(recipe: FinetuneRecipe, student_config):
    """A model fine-tuned on the same task with the same labels (its outputs are the soft targets)."""
    from ..checkpoint import load

    teacher, config, folder = load(recipe.teacher)
    from ..model import task_of

    has = task_of(teacher)
    if has != recipe.task:
        raise UserError(f"teacher {folder} is a {has} model, the student is trained for {recipe.task}; "
                        "give a teacher fine-tuned on the same task")
    if recipe.task != "question-answering" and config.id2label != student_config.id2label:
        theirs = ", ".join(config.id2label[i] for i in sorted(config.id2label))
        ours = ", ".join(student_config.id2label[i] for i in sorted(student_config.id2label))
        raise UserError(f"teacher {folder}'s labels ({theirs}) differ from the training data's ({ours}); "
                        "give a teacher fine-tuned on the same labels")
    if student_config.vocab_size != config.vocab_size:
        raise UserError(f"teacher {folder}'s vocabulary ({config.vocab_size}) differs from the student's "
                        f"({student_config.vocab_size}); both must read the same token ids")
    return teacher


def encode(recipe: FinetuneRecipe, tokenizer, examples: list, config, max_length: int, training: bool,
           where: str) -> Rows:
    if recipe.task == "question-answering":
        return encode_qa(tokenizer, examples, max_length, recipe.doc_stride, training)
    if recipe.task == "token-classification":
        return encode_tokens(tokenizer, examples, max_length, config.label2id, where)
    problem = config.extra.get("problem_type", "single_label_classification")
    return encode_text(tokenizer, examples, max_length, problem, config.label2id, where)


def collate(rows: Rows, indices, pad_id: int, token_types: bool, device) -> dict:
    """Padded model inputs and targets of some rows, as tensors on `device`."""
    import torch

    arrays = batching.collate([{"input_ids": rows.input_ids[i], "token_type_ids": rows.token_type_ids[i]}
                               for i in indices], pad_id, token_types)
    batch = {k: torch.from_numpy(v).to(device) for k, v in arrays.items()}
    if rows.labels:
        labels = [rows.labels[i] for i in indices]
        if isinstance(labels[0], list) and isinstance(labels[0][0], int):  # per token: pad with IGNORE
            batch["labels"] = torch.from_numpy(batching.pad(labels, IGNORE, arrays["input_ids"].shape[1])).to(device)
        elif isinstance(labels[0], (list, float)):  # multi-hot rows, regression targets
            batch["labels"] = torch.tensor(labels, dtype=torch.float32, device=device)
        else:  # class ids, (start, end) pairs
            batch["labels"] = torch.tensor(labels, dtype=torch.long, device=device)
    return batch


def loss_items(task: str, problem: str | None, target, num_labels: int) -> int:
    """What a task's loss averages over in one row's target: its labelled tokens (NER), its labels
    (multi-label), else the row."""
    if task == "token-classification":
        return sum(1 for t in target if t != IGNORE)
    return num_labels if problem == "multi_label_classification" else 1


def task_loss(task: str, problem: str | None, out: dict, labels):
    """transformers' heads' losses, summed over the items `loss_items` counts (divided by their number, the
    head's mean): cross-entropy, MSE (regression), BCE (multi-label), half of start's plus end's."""
    import torch.nn.functional as F

    if task == "question-answering":
        start = F.cross_entropy(out["start_logits"].float(), labels[:, 0], reduction="sum")
        end = F.cross_entropy(out["end_logits"].float(), labels[:, 1], reduction="sum")
        return (start + end) / 2
    logits = out["logits"].float()
    if task == "token-classification":
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE,
                               reduction="sum")
    if problem == "regression":
        return F.mse_loss(logits.squeeze(-1), labels, reduction="sum")
    if problem == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits, labels, reduction="sum")
    return F.cross_entropy(logits, labels, reduction="sum")


def soft_loss(task: str, problem: str | None, s: dict, t: dict, batch: dict, temperature: float):
    """The student against the teacher's softened outputs, summed over the same items as `task_loss`: KL x T^2
    over classes, over each labelled token, over start and over end positions (padding excluded); squared
    error for regression, soft BCE for multi-label."""
    import torch
    import torch.nn.functional as F

    from .losses import distillation_loss

    if task == "question-answering":
        real = batch["attention_mask"].bool()
        floor = torch.finfo(torch.float32).min
        terms = [distillation_loss(s[k].float().masked_fill(~real, floor), t[k].float().masked_fill(~real, floor),
                                   temperature=temperature, reduction="sum") for k in ("start_logits", "end_logits")]
        return (terms[0] + terms[1]) / 2
    if task == "token-classification":
        return distillation_loss(s["logits"], t["logits"], batch["labels"] != IGNORE, temperature, reduction="sum")
    if problem == "regression":
        return F.mse_loss(s["logits"].float(), t["logits"].float(), reduction="sum")
    if problem == "multi_label_classification":
        soft = torch.sigmoid(t["logits"].float() / temperature)
        bce = F.binary_cross_entropy_with_logits(s["logits"].float() / temperature, soft, reduction="sum")
        return bce * temperature**2
    return distillation_loss(s["logits"], t["logits"], temperature=temperature, reduction="sum")


def main_metric(recipe: FinetuneRecipe, problem: str | None) -> str:
    if recipe.metric:
        return recipe.metric
    if recipe.glue:
        from ..data.glue import get

        return get(recipe.glue).metric
    return {"token-classification": "overall_f1", "question-answering": "f1"}.get(
        recipe.task, "pearson" if problem == "regression" else "f1" if problem == "multi_label_classification" else "accuracy")


def evaluate_rows(net, task: str, problem: str | None, rows: Rows, examples: list, config, tokenizer,
                  recipe: FinetuneRecipe, device, autocast_dtype) -> dict:
    """The task's metrics of `net` on encoded validation rows (the in-training evaluation)."""
    import torch

    net.eval()
    outputs: list[dict] = [{} for _ in range(len(rows))]
    with torch.inference_mode(), torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        for group in batching.group(rows.lengths(), 64, 64 * 512):
            batch = collate(Rows(rows.input_ids, rows.token_type_ids), group, tokenizer.pad_token_id,
                            config.type_vocab_size > 0, device)
            out = net(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
            for r, i in enumerate(group):
                n = len(rows.input_ids[i])
                for k in ("logits", "start_logits", "end_logits"):
                    if k in out:
                        per_token = k != "logits" or out[k].dim() == 3  # cut to the row's own length
                        outputs[i][k] = out[k][r, :n].float().cpu().numpy() if per_token else out[k][r].float().cpu().numpy()
    return score(task, problem, outputs, rows, examples, config, recipe)


def score(task: str, problem: str | None, outputs: list[dict], rows: Rows, examples: list, config,
          recipe: FinetuneRecipe) -> dict:
    if task == "question-answering":
        with_negative = any(e.is_impossible for e in examples)
        answers = predict_answers([o["start_logits"] for o in outputs], [o["end_logits"] for o in outputs], rows,
                                  examples, recipe.n_best, recipe.max_answer_length, with_negative)
        golds = {e.id: e.answers["text"] for e in examples}
        return metrics.squad_v2(answers, golds) if with_negative else metrics.squad(answers, golds)
    if task == "token-classification":
        tags = predict_tags([o["logits"] for o in outputs], rows, examples, config.id2label)
        return metrics.ner(tags, [e.tags for e in examples])
    predictions = predict_text(np.stack([o["logits"] for o in outputs]), problem)
    references = np.array(rows.labels)
    if recipe.glue:
        return metrics.glue(recipe.glue, predictions, references)
    return metrics.classification(predictions, references, problem, config.num_labels)


def flat(scores: dict) -> dict[str, float]:
    """Per-type NER results ({"PER": {"f1": ...}}) as PER_f1 and the like, for the log."""
    out = {}
    for k, v in scores.items():
        if isinstance(v, dict):
            out.update({f"{k}_{m}": x for m, x in v.items()})
        else:
            out[k] = v
    return out


def save_model(net, folder: Path, task: str, tokenizer) -> None:
    from ..checkpoint import save

    save(net, folder, task, tokenizer)
    net.train()


def finish_output(out: Path, recipe: FinetuneRecipe, best: dict | None, history: list[dict], metric: str) -> None:
    """The best model's files moved into the output folder, beside eval_results.json, by checkpoint.install:
    an old model there (--overwrite) loses its config.json first and the new config.json goes in last, so
    stopped anywhere the folder holds the old model, the new one, or no config.json (no model); a resumed
    run finishes the move."""
    from ..checkpoint import install

    if best is None:
        raise UserError("the run ended before its first evaluation; nothing to keep")
    (out / RESULTS).write_text(json.dumps({"metric": metric, "best": best, "history": history}, indent=2) + "\n")
    source = out / BEST
    if not source.is_dir():  # a resumed run that had already finished
        return
    install(source, out)
    source.rmdir()
