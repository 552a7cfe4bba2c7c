"""The `distilbert` command: a table of subcommands, each a plain function that Python can call too.

Heavy imports (torch, onnxruntime) happen inside the commands. A user mistake is one line on stderr and
exit status 2, never a traceback (unless --debug or DISTILBERT_DEBUG=1 asks for it); anything else is our
bug, and Python prints its traceback.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import sys
import traceback
from collections.abc import Callable

from ..backends import BACKENDS
from ..errors import UserError
from ..pipelines.features import NO_POOLING, POOLINGS
from ..pipelines.token_classification import STRATEGIES
from ..precisions import ONNX_FILES
from .commands import (
    answer,
    attention,
    bias,
    classify,
    distill,
    embed,
    evaluate,
    evaluate_mlm,
    export,
    fill_mask,
    finetune,
    glue,
    info,
    init_student,
    ner,
    new_model,
    plot_run,
    prepare_data,
    pretrain,
    serve,
    tokenize,
)
from .options import (
    COLUMNS,
    GLUE_TASKS,
    OPTIONS,
    RAY,
    RUN_IDENTITY,
    RUNTIME,
    TRAINED_TASKS,
    Option,
    finetune_options,
    option,
    positive,
    recipe_options,
)

COMMANDS: dict[str, tuple[Callable, list[str | Option]]] = {
    "fill-mask": (fill_mask, ["text", *RUNTIME, "--top-k", "--targets", "--json"]),
    "classify": (classify, [option("text", nargs="*", help="text(s) to classify; none: one per line of --file or stdin"),
                            option("--file", "-f", help="one text per line (A<TAB>B with --pairs); - reads stdin"),
                            *RUNTIME, option("--top-k", type=positive, help="this many labels per text, best first"),
                            "--pairs", "--batch-size", "--json", *RAY, "--pair-column",
                            option("--output", "-o", help="with --ray: the Parquet folder to write")]),
    "ner": (ner, [option("text", nargs="*", help="text(s) to tag; none: one per line of --file or stdin"),
                  option("--file", "-f", help="one text per line; - reads stdin"), *RUNTIME,
                  option("--aggregation", choices=STRATEGIES,
                         help="none: every token; simple: adjacent tokens of one tag joined; first, average, max: "
                              "one tag per word, from its first piece, its averaged scores or its surest piece"),
                  option("--stride", type=int,
                         help="tokens shared by the windows a long text is split into (default: a quarter of one)"),
                  "--batch-size", "--json", *RAY,
                  option("--output", "-o", help="with --ray: the Parquet folder to write")]),
    "answer": (answer, [*RUNTIME,
                        option("--question", "-q",
                               help='the question (none: JSON lines {"question", "context"} on stdin)'),
                        option("--context", "-c", help="the text to find the answer in"),
                        option("--context-file", help="read the context from this UTF-8 file"),
                        option("--top-k", type=positive, help="answers per question, best first"), "--json"]),
    "embed": (embed, ["file", *RUNTIME, option("--pooling", choices=(*POOLINGS, NO_POOLING),
                                               help="default: the folder's sentence-transformers setting, else "
                                                    "mean; none: each token's features, a matrix a line"),
                      "--normalize",
                      option("--output", "-o", help="write one float32 (lines, dim) matrix to this .npy file "
                                                    "(with --ray: a Parquet folder)"),
                      "--batch-size", *RAY]),
    "tokenize": (tokenize, ["file", "--model", "--pairs", "--max-length"]),
    "info": (info, ["model"]),
    "export": (export, ["model", "out_dir", "--task", "--opset", "--optimize",
                        option("--precision", dest="precisions", metavar="LIST",
                               help=f"graphs to write, comma-separated: {', '.join(ONNX_FILES)} (fp32 is always "
                                    "written; int8 is transformers.js's q8)"), "--quantize", "--drift-text",
                        option("--with-attentions", help="add the output `attentions` (batch, layers, heads, T, T), "
                                                         "for `distilbert attention` without PyTorch"), "--format"]),
    "serve": (serve, [
        option("model", help="model folder or hub id (an ONNX export runs without PyTorch)"), "--task",
        option("--host", help="address to listen on"), option("--port", type=positive), "--backend", "--precision",
        option("--threads", type=positive, help="compute threads per worker (default: the cores / --workers)"),
        option("--max-batch-tokens", type=positive,
               help="padded tokens per model batch (on a CPU, larger batches run slower per token)"),
        option("--max-concurrent-requests", type=positive, help="inputs in flight before new requests get 429"),
        option("--max-client-batch-size", type=positive, help="inputs per request"),
        option("--payload-limit", type=positive, help="request body bytes"),
        option("--api-key", help="require 'Authorization: Bearer KEY' on every route but /health"),
        option("--workers", type=positive, help="processes, each with the model and its share of the cores"),
        "--pooling", option("--compile", action="store_true",
                            help="torch backend: torch.compile the network at start-up (20-40 s on a CPU; then "
                                 "about 13%% faster in bf16, 5%% in fp32)")]),
    "prepare-data": (prepare_data, ["text_files", "--tokenizer", "--out", "--max-length", "--unit", "--workers"]),
    "new-model": (new_model, ["out", "--tokenizer", "--family", "--dim", "--layers", "--heads", "--hidden-dim",
                              "--max-positions", "--seed"]),
    "init-student": (init_student, ["teacher", "--out", option(
        "--layers", help="teacher layers to copy, e.g. 0,2,4,7,9,11 (default: every other, first and last kept)")]),
    "distill": (distill, ["--teacher", "--student", "--data", "--out", "--resume", "--recipe", *recipe_options()]),
    "pretrain": (pretrain, ["--model", "--data", "--out", "--resume", "--recipe", *recipe_options()]),
    "evaluate-mlm": (evaluate_mlm, ["model", "--text", "--max-length", "--seed", option(
        "--data", help="the training data folder (prepare-data): also score a unigram model of it"), "--json"]),
    "plot-run": (plot_run, ["run", option("--output", help="PNG to write (default RUN/losses.png)")]),
    "bias": (bias, [option("model", help="a masked LM: model folder, exported folder or hub id"),
                    option("--probes", choices=("card", "crows-pairs", "all"),
                           help="card: the model card's template probes; crows-pairs: CrowS-Pairs; all: both"),
                    option("--out", help="folder for the report (JSON, CSV, tables, PNGs); without it, printed only"),
                    option("--limit", type=positive, help="score the first N CrowS-Pairs pairs only"),
                    option("--data", help="the CrowS-Pairs CSV (default: $DISTILBERT_DATA/bias/crows_pairs_anonymized.csv)"),
                    "--backend", "--precision", "--threads"]),
    "attention": (attention, [option("model", help="model folder (PyTorch, or an export made with --with-attentions) "
                                                   "or hub id"),
                              option("text", help="the text to look at"),
                              option("text_b", help="a second sentence: the pair is encoded together and marked"),
                              option("--out", help="FILE.html (interactive, self-contained) or FILE.png (layers x heads)"),
                              option("--layer", type=int, help="layer (from 0) shown first in HTML; in a PNG, only it"),
                              option("--head", type=int, help="head (from 0) shown first in HTML; in a PNG, only it"),
                              option("--hide-special", help="leave out [CLS] and [SEP], as exBERT can"),
                              option("--backend", choices=BACKENDS,
                                     help="default: torch for a PyTorch checkpoint, else onnx")]),
    "finetune": (finetune, ["--resume", option("--overwrite", help="replace a finished model or a run in --out"),
                            "--recipe", *finetune_options()]),
    "evaluate": (evaluate, [
        "model", option("--data", help="labelled file: CSV/TSV/JSONL, CoNLL, SQuAD JSON, or a GLUE TSV with --glue"),
        option("--task", choices=TRAINED_TASKS, help="default: the model's own head"),
        option("--glue", choices=GLUE_TASKS, help="--data is this GLUE task's TSV: its layout, labels and metrics"),
        "--backend", "--precision", "--threads", "--batch-size", "--json",
        option("--predictions", help="write the predictions here (JSON lines; SQuAD: the official {id: answer})"),
        *COLUMNS, option("--limit", type=positive, help="score the first N examples only")]),
    "glue": (glue, ["model", option("--data-dir", help="GLUE folder with CoLA/, SST-2/, MRPC/, ... (train.tsv, dev.tsv)"),
                    option("--out", help="folder for each task's runs, glue_results.json and glue.png"),
                    option("--tasks", nargs="+", choices=GLUE_TASKS, help="default: every task found"),
                    option("--seeds", type=positive, help="runs per task, seeds 42, 43, ...; the median is reported"),
                    "--recipe", option("--overwrite", help="replace finished runs"),
                    *finetune_options(skip=(*RUN_IDENTITY, "text_column", "text_pair_column", "label_column",
                                            "tag_column", "problem_type", "seed", "doc_stride", "n_best",
                                            "max_answer_length"))]),
}


class _Parser(argparse.ArgumentParser):
    """A usage mistake is one line too, like every other user error (subcommands inherit this class)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="distilbert", description="DistilBERT end to end.")
    p.add_argument("--debug", action="store_true", help="print the full traceback of any error (or DISTILBERT_DEBUG=1)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (function, options) in COMMANDS.items():
        summary = (function.__doc__ or "").strip().splitlines()[0]
        command = sub.add_parser(name, help=summary, description=summary)
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        parameters = inspect.signature(function).parameters
        for spec in options:
            _add_option(command, OPTIONS[spec] if isinstance(spec, str) else spec, parameters)
    return p


def _add_option(p: argparse.ArgumentParser, spec: Option, parameters) -> None:
    """The spec with its default (or required) from the function's parameter; None for one taken by **settings."""
    positional = not spec.flags[0].startswith("-")
    dest = spec.dest or spec.flags[0].lstrip("-").replace("-", "_")
    parameter = parameters.get(dest)
    if parameter is None and not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        raise TypeError(f"option {spec.flags[0]} names no parameter of the command's function")
    default = None if parameter is None else parameter.default
    kwargs = {k: v for k, v in vars(spec).items() if k not in ("flags", "dest") and v is not None}
    if not positional and spec.dest:
        kwargs["dest"] = spec.dest
    if default is inspect.Parameter.empty:
        if not positional:
            kwargs["required"] = True
        return p.add_argument(*spec.flags, **kwargs)
    if spec.type is bool or isinstance(default, bool):
        kwargs.pop("type", None)
        kwargs["action"] = "store_true"
    elif spec.type is None and type(default) in (int, float):
        kwargs["type"] = type(default)
    if positional and "nargs" not in kwargs:
        kwargs["nargs"] = "?"
    if default not in (None, False, "-") and "help" in kwargs:
        kwargs["help"] += f" (default {default})"
    elif default not in (None, False, "-"):
        kwargs["help"] = f"default {default}"
    p.add_argument(*spec.flags, default=default, **kwargs)


def debugging(args: dict) -> bool:
    return bool(args.pop("debug", False)) or os.environ.get("DISTILBERT_DEBUG", "") not in ("", "0")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s", stream=sys.stderr)
    args = vars(parser().parse_args(argv))
    debug = debugging(args)
    command = COMMANDS[args.pop("command")][0]
    try:
        command(**args)
    except UserError as e:
        if debug:  # the whole chain, the causes a UserError hides with `from None` included
            cause = e
            while cause is not None:
                cause.__suppress_context__ = False
                cause = cause.__cause__ or cause.__context__
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        return 130
    except BrokenPipeError:  # `distilbert embed ... | head`
        sys.stderr.close()
        return 0
    return 0
