"""The GLUE tasks by name: each file's own layout, its label names, its metrics and the published scores.

Read as the files are distributed (see shared/data/README.md): tab-separated, no quoting at all
(csv.QUOTE_NONE: RTE and QNLI sentences hold stray quote marks), MRPC with a byte-order mark, CoLA with no
header. Label names are those of Hugging Face `datasets`' glue configs, in the same order.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .examples import TextExample


@dataclass(frozen=True)
class GlueTask:
    name: str
    folder: str
    text: str | int  # header name, or column index for a file without a header
    text_pair: str | int | None
    label: str | int
    labels: tuple[str, ...] | None  # None: regression
    raw: dict[str, str] | None = None  # value in the file -> label name, where the file holds numbers
    header: bool = True
    validation: str = "dev.tsv"
    metric: str = "accuracy"  # the main metric (the card's column)


GLUE: dict[str, GlueTask] = {
    t.name: t
    for t in (
        GlueTask("cola", "CoLA", 3, None, 1, ("unacceptable", "acceptable"), {"0": "unacceptable", "1": "acceptable"},
                 header=False, metric="matthews_correlation"),
        GlueTask("sst2", "SST-2", "sentence", None, "label", ("negative", "positive"), {"0": "negative", "1": "positive"}),
        GlueTask("mrpc", "MRPC", "#1 String", "#2 String", "Quality", ("not_equivalent", "equivalent"),
                 {"0": "not_equivalent", "1": "equivalent"}, metric="f1"),
        GlueTask("qqp", "QQP", "question1", "question2", "is_duplicate", ("not_duplicate", "duplicate"),
                 {"0": "not_duplicate", "1": "duplicate"}, metric="f1"),
        GlueTask("stsb", "STS-B", "sentence1", "sentence2", "score", None, metric="pearson"),
        GlueTask("mnli", "MNLI", "sentence1", "sentence2", "gold_label", ("entailment", "neutral", "contradiction"),
                 validation="dev_matched.tsv"),
        GlueTask("qnli", "QNLI", "question", "sentence", "label", ("entailment", "not_entailment")),
        GlueTask("rte", "RTE", "sentence1", "sentence2", "label", ("entailment", "not_entailment")),
    )
}

# The model card's "Evaluation results" for distilbert-base-uncased (dev sets; Sanh et al. 2019, Table 1 gives
# STS-B 86.9) and the paper's BERT-base row. Each is GLUE's score for the task: the one metric, or the mean of
# two (MRPC and QQP: accuracy and F1; STS-B: Pearson and Spearman), as GLUE's leaderboard and jiant, whose
# ELMo figures the paper sits beside, compute it. `score` below does the same with ours.
PAPER = {
    "DistilBERT": {"mnli": 82.2, "qqp": 88.5, "qnli": 89.2, "sst2": 91.3, "cola": 51.3, "stsb": 85.8, "mrpc": 87.5,
                   "rte": 59.9},
    "BERT-base": {"mnli": 86.7, "qqp": 89.6, "qnli": 91.8, "sst2": 92.7, "cola": 56.3, "stsb": 89.0, "mrpc": 88.6,
                  "rte": 69.3},
}
SCORE_METRICS = {"cola": ("matthews_correlation",), "mrpc": ("accuracy", "f1"), "qqp": ("accuracy", "f1"),
                 "stsb": ("pearson", "spearmanr")}


def score(name: str, metrics: dict[str, float]) -> float:
    """GLUE's score for a task, x100: its metric, or the mean of its two."""
    keys = SCORE_METRICS.get(get(name).name, ("accuracy",))
    return 100 * sum(metrics[k] for k in keys) / len(keys)


def get(name: str) -> GlueTask:
    key = name.lower().replace("-", "")
    if key not in GLUE:
        raise UserError(f"unknown GLUE task {name!r}; expected one of {', '.join(GLUE)}")
    return GLUE[key]


def files(name: str, data_dir: str | Path) -> tuple[Path, Path]:
    """(train, validation) files of a GLUE task under DATA_DIR/<its folder>/."""
    task = get(name)
    folder = Path(data_dir) / task.folder
    return folder / "train.tsv", folder / task.validation


def read_glue(name: str, path: str | Path) -> list[TextExample]:
    task = get(name)
    path = Path(path)
    csv.field_size_limit(sys.maxsize)
    with open(path, encoding="utf-8-sig", newline="") as f:  # utf-8-sig: MRPC starts with a byte-order mark
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows:
        raise UserError(f"{path} is empty")
    if task.header:
        header, rows, first = rows[0], rows[1:], 2
        where = {}
        for column in (task.text, task.text_pair, task.label):
            if column is not None:
                if column not in header:
                    raise UserError(f"{path} has no column {column!r} (its header: {', '.join(header)}); "
                                    f"is it GLUE {task.folder}'s file?")
                where[column] = header.index(column)
    else:
        where, first = {c: c for c in (task.text, task.text_pair, task.label) if c is not None}, 1
    need = max(where.values()) + 1
    examples = []
    for number, row in enumerate(rows, first):
        if not row or row == [""]:
            continue
        if len(row) < need:
            raise UserError(f"{path} line {number} has {len(row)} columns, GLUE {task.folder} needs {need}")
        value = row[where[task.label]].strip()
        if task.labels is None:
            try:
                label: str | float = float(value)
            except ValueError:
                raise UserError(f"{path} line {number}: score {value!r} is not a number") from None
        else:
            label = task.raw.get(value, value) if task.raw else value
            if label not in task.labels:
                raise UserError(f"{path} line {number}: label {value!r} is not one of GLUE {task.folder}'s "
                                f"{', '.join(task.raw or task.labels)}")
        examples.append(TextExample(row[where[task.text]], row[where[task.text_pair]] if task.text_pair is not None
                                    else None, label))
    return examples
