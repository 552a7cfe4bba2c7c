"""Labelled data for fine-tuning and evaluation, read from the files people have: no torch here.

Three kinds of example, one per task (`tasks.py`'s names):

- text-classification: `TextExample` from GLUE's TSVs by name (glue.py) or CSV / TSV / JSONL with named
  columns (tables.py); a label is a class name, a float (regression) or a list of class names (multi-label);
- token-classification: `TokenExample` from CoNLL files or JSONL with tokens and tags (ner.py);
- question-answering: `QAExample` from SQuAD v1.1 / v2.0 JSON (squad.py).

Every reader reports bad input as one UserError naming the file and the line or row.
"""

from __future__ import annotations

from pathlib import Path

from .examples import Columns, QAExample, TextExample, TokenExample  # noqa: F401  (the package's names)


def read(task: str, path: str | Path, columns: Columns | None = None, glue: str | None = None) -> list:
    """The examples of `path` for `task`; `glue` names a GLUE task whose TSV layout the file has."""
    from .. import tasks

    task = tasks.get(task).name
    columns = columns or Columns()
    path = Path(path)
    if not path.is_file():
        from ..errors import UserError

        raise UserError(f"data file {path} does not exist" if not path.exists() else f"{path} is a folder, not a data file")
    if glue:
        from .glue import read_glue

        return read_glue(glue, path)
    if task == "text-classification":
        from .tables import read_table

        return read_table(path, columns)
    if task == "token-classification":
        from .ner import read_ner

        return read_ner(path, columns)
    if task == "question-answering":
        from .squad import read_squad

        return read_squad(path)
    from ..errors import UserError

    raise UserError(f"no labelled data format for task {task}; expected text-classification, "
                    "token-classification or question-answering")
