"""Text classification data in CSV, TSV or JSONL with named columns.

A label is a class name (multi-class), a number (regression: one output) or a list of class names
(multi-label: a JSON list, or in CSV/TSV names joined by ',' when the problem type says multi-label).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from ..errors import UserError
from .examples import Columns, TextExample

PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")


def rows_of(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) of a .jsonl / .json lines, .tsv or .csv file (header row required for the tables)."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        rows = []
        with open(path, encoding="utf-8-sig") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{path} line {number} is not JSON ({e.msg}); JSONL holds one object a line") from None
                if not isinstance(row, dict):
                    raise UserError(f"{path} line {number} is not a JSON object")
                rows.append((number, row))
        return rows
    if suffix not in (".csv", ".tsv", ".txt"):
        raise UserError(f"{path}: unknown data format {suffix or '(no suffix)'}; expected .csv, .tsv or .jsonl")
    csv.field_size_limit(sys.maxsize)
    with open(path, encoding="utf-8-sig", newline="") as f:
        if suffix == ".csv":
            reader = csv.reader(f)
        else:
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        lines = list(reader)
    if not lines:
        raise UserError(f"{path} is empty")
    header = [h.strip() for h in lines[0]]
    rows = []
    for number, line in enumerate(lines[1:], 2):
        if not line or line == [""]:
            continue
        if len(line) != len(header):
            raise UserError(f"{path} line {number} has {len(line)} columns, its header {len(header)}")
        rows.append((number, dict(zip(header, line))))
    return rows


def read_table(path: Path, columns: Columns) -> list[TextExample]:
    text, label = columns.text or "text", columns.label or "label"
    rows = rows_of(path)
    if not rows:
        raise UserError(f"{path} holds no rows")
    keys = set(rows[0][1])
    for name, flag in ((text, "--text-column"), (columns.text_pair, "--text-pair-column")):
        if name is not None and name not in keys:
            raise UserError(f"{path} has no column {name!r} (it has {', '.join(sorted(keys))}); name it with {flag}")
    has_labels = label in keys
    problem = columns.problem_type
    if problem is not None and problem not in PROBLEM_TYPES:
        raise UserError(f"unknown problem type {problem!r}; expected one of {', '.join(PROBLEM_TYPES)}")
    examples = []
    for number, row in rows:
        for name in (text, columns.text_pair, label if has_labels else None):
            if name is not None and name not in row:
                raise UserError(f"{path} line {number} has no {name!r}")
        value = row[label] if has_labels else None
        if problem == "multi_label_classification" and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif problem == "regression" and value is not None:
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise UserError(f"{path} line {number}: label {value!r} is not a number (regression)") from None
        elif isinstance(value, list):
            value = [str(v) for v in value]
        elif isinstance(value, bool) or value is None:
            value = None if value is None else str(value).lower()
        elif not isinstance(value, str):
            value = value if isinstance(value, float) and not float(value).is_integer() else str(int(value))
        t = row[text]
        if not isinstance(t, str):
            raise UserError(f"{path} line {number}: {text!r} is not text")
        examples.append(TextExample(t, row[columns.text_pair] if columns.text_pair else None, value))
    return examples


def problem_type_of(examples: list[TextExample], given: str | None = None) -> str:
    """The problem type `given`, else read from the labels."""
    if given:
        return given
    labels = [e.label for e in examples if e.label is not None]
    if labels and all(isinstance(v, list) for v in labels):
        return "multi_label_classification"
    if labels and all(isinstance(v, float) for v in labels):
        return "regression"
    floats = []
    for v in labels:
        try:
            floats.append(float(v))
        except (TypeError, ValueError):
            return "single_label_classification"
    if floats and any(not f.is_integer() for f in floats):
        return "regression"
    return "single_label_classification"


def label_names(examples: list[TextExample], problem: str) -> list[str]:
    """The classes, sorted (numerically where every name is an integer)."""
    names = set()
    for e in examples:
        if e.label is not None:
            names.update(e.label if isinstance(e.label, list) else [str(e.label)])
    if all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)
