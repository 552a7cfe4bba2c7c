"""The examples the readers give, one kind per task, and the columns they read (no torch).

In a module of their own, not the package's __init__ (which imports the readers): a reader imports these
without importing the package that imports it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TextExample:
    text: str
    text_pair: str | None = None
    label: str | float | list[str] | None = None


@dataclass
class TokenExample:
    tokens: list[str]
    tags: list[str] | None = None


@dataclass
class QAExample:
    id: str
    question: str
    context: str
    answers: dict = field(default_factory=lambda: {"text": [], "answer_start": []})  # as Hugging Face `datasets`
    title: str = ""

    @property
    def is_impossible(self) -> bool:
        return not self.answers["text"]


@dataclass
class Columns:
    """Which columns hold what. None: the task's usual name (text/label; tokens/tags)."""

    text: str | None = None
    text_pair: str | None = None
    label: str | None = None
    tag_column: int = -1  # CoNLL: the tag's column, counted from 0 (negative: from the end)
    problem_type: str | None = None  # text classification: single_label_classification, multi_label_classification,
    # regression; None: read from the labels (lists: multi-label; fractional numbers: regression)
