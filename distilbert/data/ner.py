"""NER data: CoNLL files (one token a line, columns split by whitespace, a blank line between sentences,
-DOCSTART- lines skipped) and JSONL with a token list and a tag list per line."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .examples import Columns, TokenExample


def read_ner(path: Path, columns: Columns) -> list[TokenExample]:
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        return _read_jsonl(path, columns)
    return read_conll(path, columns.tag_column)


def read_conll(path: Path, tag_column: int = -1) -> list[TokenExample]:
    examples: list[TokenExample] = []
    tokens: list[str] = []
    tags: list[str] = []
    width = None
    with open(path, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields or fields[0] == "-DOCSTART-":
                if tokens:
                    examples.append(TokenExample(tokens, tags))
                    tokens, tags = [], []
                continue
            width = width or len(fields)
            if len(fields) != width or not -len(fields) <= tag_column < len(fields) or len(fields) < 2:
                raise UserError(f"{path} line {number} is malformed: {line.strip()[:60]!r} has {len(fields)} columns, "
                                f"the file's lines have {width} (token first, the tag in column {tag_column})")
            tokens.append(fields[0])
            tags.append(fields[tag_column])
    if tokens:
        examples.append(TokenExample(tokens, tags))
    if not examples:
        raise UserError(f"{path} holds no sentences")
    return examples


def _read_jsonl(path: Path, columns: Columns) -> list[TokenExample]:
    from .tables import rows_of

    key_tokens, key_tags = columns.text or "tokens", columns.label or "tags"
    examples = []
    for number, row in rows_of(path):
        if key_tokens not in row:
            raise UserError(f"{path} line {number} has no {key_tokens!r} (name the token list with --text-column)")
        tokens, tags = row[key_tokens], row.get(key_tags)
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise UserError(f"{path} line {number}: {key_tokens!r} must be a list of strings")
        if tags is not None:
            if not isinstance(tags, list) or len(tags) != len(tokens):
                raise UserError(f"{path} line {number}: {key_tags!r} must be a list of tags, one per token "
                                f"({len(tokens)} tokens)")
            tags = [str(t) for t in tags]
        examples.append(TokenExample(tokens, tags))
    return examples


def tag_names(examples: list[TokenExample]) -> list[str]:
    """The tags, 'O' first, then by entity type and B before I (a stable, readable id2label)."""
    names = {t for e in examples for t in e.tags or []}
    return sorted(names, key=lambda t: (t != "O", t[2:] if t[1:2] == "-" else t, t))
