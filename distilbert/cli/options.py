"""Every option declared once (flag, help, type, choices), and the option lists of the training commands."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from ..backends import BACKENDS
from ..config import FAMILIES
from ..onnx.export import QUANTIZATIONS
from ..pipelines.features import POOLINGS
from ..precisions import ALIASES, PRECISIONS
from ..tasks import TASKS
from ..train.data import UNITS


@dataclass(frozen=True)
class Option:
    flags: tuple[str, ...]  # ("--model", "-m"); ("model",) for a positional argument
    help: str | None = None
    type: Callable | None = None  # default: int or float when the signature's default is one, else str
    choices: tuple | None = None
    nargs: str | int | None = None
    metavar: str | None = None
    dest: str | None = None  # the function's parameter, when it is not the flag's name
    action: type[argparse.Action] | str | None = None


def option(*flags: str, **spec) -> Option:
    return Option(flags, **spec)


def positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


EXPORT_FORMATS = ("onnx", "savedmodel")


OPTIONS: dict[str, Option] = {o.flags[0]: o for o in (
    # what to run, and on what
    option("model", help="model folder or hub id"),
    option("--model", "-m", help="model folder or hub id"),
    option("--backend", choices=BACKENDS,
           help="runtime; keras runs on TensorFlow, the tf extra; openvino runs the ONNX export on OpenVINO, the "
                "openvino extra (default: onnx for an exported folder or a cached export, else torch)"),
    option("--precision", choices=(*PRECISIONS, *ALIASES),
           help="fp32 exact; int8 (q8), fp16, q4 and q4f16 run the folder's onnx/model_<precision>.onnx; bf16 holds "
                "torch weights in bfloat16, or runs OpenVINO in bfloat16 (--backend openvino)"),
    option("--threads", type=positive, help="compute threads (default: the cores this process may use)"),
    option("--task", choices=tuple(TASKS), help="default: the head the checkpoint was saved with"),
    option("--tokenizer", help="model folder or hub id whose tokenizer to use"),
    # inputs and outputs
    option("text", nargs="+", help="text(s) with [MASK]"),
    option("file", help="one text per line; - or nothing reads stdin"),
    option("--text", nargs="+", help="held-out text file(s), one text a line"),
    option("--json", dest="json_output", help="print the result as JSON"),
    option("out", help="folder to write"),
    option("--out", help="folder to write"),
    option("--max-length", type=positive, help="tokens per text, [CLS] and [SEP] included (default: the tokenizer's)"),
    option("--batch-size", type=positive),
    option("--seed", type=int),
    # fill-mask
    option("--top-k", type=positive),
    option("--targets", nargs="+", help="score only these words"),
    # embed
    option("--pooling", choices=POOLINGS, help="default: the folder's sentence-transformers setting, else mean"),
    option("--normalize", help="L2-normalise each embedding"),
    # tokenize
    option("--pairs", help="each line is A<TAB>B"),
    # export
    option("out_dir", help="folder to write model.onnx, config.json and the tokenizer into"),
    option("--opset", type=positive),
    option("--optimize", help="ONNX Runtime's transformer fusions"),
    option("--quantize", choices=QUANTIZATIONS, help="also write model_quantized.onnx (dynamic int8)"),
    option("--drift-text", help="text file (one text a line; the first 512 are used) to measure each precision's drift on"),
    option("--format", choices=EXPORT_FORMATS, help="onnx, or savedmodel: a TensorFlow SavedModel through Keras (the tf extra)"),
    # training
    option("text_files", nargs="+", metavar="TEXT_FILE"),
    option("--unit", choices=UNITS, help="a document is a line, or lines up to a blank one"),
    option("--workers", type=positive, help="tokenising processes (default: all cores)"),
    option("--family", choices=FAMILIES),
    option("--dim", type=positive),
    option("--layers", type=positive),
    option("--heads", type=positive),
    option("--hidden-dim", type=positive, help="feed-forward width (default 4 x dim)"),
    option("--max-positions", type=positive),
    option("teacher", help="teacher folder or hub id (a masked LM)"),
    option("--teacher"),
    option("--student"),
    option("--data", help="a folder made by prepare-data"),
    option("--resume", help="continue the run in --out from its last checkpoint"),
    option("--recipe", help="JSON recipe file; flags override it"),
    option("run", help="a training output folder (with log.jsonl)"),
    # scale out on Ray (the ray extra; distilbert.ray)
    option("--ray", help="run on a Ray cluster: the input is a text, JSONL or Parquet file; --output a Parquet folder"),
    option("--address", help="the Ray cluster: auto (the one this machine joined) or ray://HOST:10001 "
                             "(default: start a local Ray)"),
    option("--num-actors", type=positive, help="model copies on the cluster (default: its CPUs / --threads)"),
    option("--column", help="the text column of a JSONL or Parquet input (default text); every column is kept"),
    option("--pair-column", help="the second text of each pair, from a JSONL or Parquet input"),
    option("--ship-model", help="send the model folder through Ray's object store instead of opening it by path "
                                "on every node"),
)}


RUNTIME = ["--model", "--backend", "--precision", "--threads"]


RAY = ["--ray", "--address", "--num-actors", "--column", "--ship-model"]  # with --threads: CPUs per actor


def recipe_options() -> list[Option]:
    """One flag per Recipe setting; an unset flag keeps the recipe file's value (or the Recipe default)."""
    import dataclasses

    from ..train.recipe import Recipe

    options = []
    for f in dataclasses.fields(Recipe):
        if f.name in ("student", "teacher", "data", "out", "extra"):
            continue
        flag, default = "--" + f.name.replace("_", "-"), f.default
        said = f"recipe default {default}"
        if isinstance(default, bool):
            options.append(option(flag, type=bool, help=said))
        elif isinstance(default, tuple):
            options.append(option(flag, type=float, nargs=len(default), help=said))
        elif f.name == "max_steps":
            options.append(option(flag, type=positive, help="stop after this many optimizer steps"))
        elif f.name == "mlm_smoothing":
            options.append(option(flag, type=float, help=f"{said}, as the original; 0 for uniform masking"))
        else:
            options.append(option(flag, type=type(default), help=said))
    return options


GLUE_TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte")


TRAINED_TASKS = ("text-classification", "token-classification", "question-answering")


COLUMNS = [option("--text-column", help="the text's column (default text; NER JSONL: tokens)"),
           option("--text-pair-column", help="the second text's column, for pairs"),
           option("--label-column", help="the label's column (default label; NER JSONL: tags)"),
           option("--tag-column", type=int, help="CoNLL: the tag's column from 0, negative from the end")]


RUN_IDENTITY = ("model", "task", "train", "validation", "out", "glue", "data_dir", "teacher")  # not per GLUE task


def finetune_options(skip: tuple[str, ...] = ()) -> list[Option]:
    """One flag per FinetuneRecipe setting; an unset flag keeps the recipe file's value (or the default)."""
    import dataclasses

    from ..data.tables import PROBLEM_TYPES
    from ..train.finetune import FinetuneRecipe

    special = {
        "task": option("--task", choices=TRAINED_TASKS, help="recipe default text-classification"),
        "glue": option("--glue", choices=GLUE_TASKS, help="a GLUE task: its files' layout and labels "
                                                          "(with --data-dir: its train.tsv and dev file)"),
        "data_dir": option("--data-dir", help="GLUE folder with CoLA/, SST-2/, ... (with --glue)"),
        "train": option("--train", help="labelled training file: CSV/TSV/JSONL, CoNLL, SQuAD JSON, a GLUE TSV"),
        "validation": option("--validation", help="labelled validation file, scored every epoch"),
        "teacher": option("--teacher", help="a model fine-tuned on the same task and labels: distil it while training"),
        "problem_type": option("--problem-type", choices=PROBLEM_TYPES,
                               help="default: read from the labels (lists: multi-label; fractions: regression)"),
        "precision": option("--precision", choices=("auto", "fp32", "bf16", "fp16"),
                            help="autocast; auto (default): bf16 on GPUs that have it and on AMX CPUs, else fp32"),
        "adam_betas": option("--adam-betas", type=float, nargs=2, help="recipe default 0.9 0.999"),
        "tag_column": option("--tag-column", type=int, help="CoNLL: the tag's column from 0, negative from the end "
                                                           "(recipe default -1)"),
        "max_length": option("--max-length", type=positive, help="tokens per row (default 128; QA 384)"),
        "learning_rate": option("--learning-rate", type=float, help="default 2e-5; QA 3e-5"),
        "max_tokens": option("--max-tokens", type=positive,
                             help="padded tokens in a micro-batch (default batch size x max length)"),
        "eval_steps": option("--eval-steps", type=positive, help="evaluate every N steps (default: every epoch)"),
        "early_stopping": option("--early-stopping", type=positive,
                                 help="stop after N evaluations without a better main metric"),
        "metric": option("--metric", help="the main metric, which picks the model kept (default: the task's)"),
        "group_by_length": option("--group-by-length", action=argparse.BooleanOptionalAction,
                                  help="batches of like lengths, little padding (recipe default); --no-group-by-length: "
                                       "random batches padded to their longest row, as the Trainer's"),
        "warmup": option("--warmup", type=float, help="warm-up: a fraction of the steps, or steps (recipe default 0.1)"),
    }
    options = []
    for f in dataclasses.fields(FinetuneRecipe):
        if f.name in skip:
            continue
        if f.name in special:
            options.append(special[f.name])
            continue
        flag, default = "--" + f.name.replace("_", "-"), f.default
        if isinstance(default, float):
            options.append(option(flag, type=float, help=f"recipe default {default}"))
        elif isinstance(default, int) or f.type in ("int | None",):
            options.append(option(flag, type=positive if f.name != "seed" else int,
                                  help=None if default is None else f"recipe default {default}"))
        else:
            options.append(option(flag, help=None if default is None else f"recipe default {default}"))
    return options
