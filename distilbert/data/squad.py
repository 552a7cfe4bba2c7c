"""SQuAD v1.1 and v2.0 JSON. Answers whose character offsets do not match their text are counted and
skipped with a warning (a question left with none is dropped, unless v2.0 marks it unanswerable)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..errors import UserError
from .examples import QAExample

log = logging.getLogger("distilbert")


def read_squad(path: Path) -> list[QAExample]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
        articles = data["data"]
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not JSON ({e.msg} at line {e.lineno}); expected SQuAD v1.1 or v2.0") from None
    except (KeyError, TypeError):
        raise UserError(f"{path} is not SQuAD JSON: no top-level 'data' list of articles") from None
    examples: list[QAExample] = []
    skipped = dropped = 0
    try:
        for article in articles:
            for paragraph in article["paragraphs"]:
                context = paragraph["context"]
                for qa in paragraph["qas"]:
                    texts, starts = [], []
                    for answer in qa.get("answers", []):
                        start, text = int(answer["answer_start"]), answer["text"]
                        if context[start : start + len(text)] != text:
                            skipped += 1
                            continue
                        texts.append(text)
                        starts.append(start)
                    if not texts and qa.get("answers") and not qa.get("is_impossible", False):
                        dropped += 1
                        continue
                    examples.append(QAExample(str(qa["id"]), qa["question"], context,
                                              {"text": texts, "answer_start": starts}, article.get("title", "")))
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path} is not SQuAD JSON: {type(e).__name__} {e} in an article") from None
    if skipped:
        log.warning("%s: %d answer(s) whose offsets do not match their text were skipped (%d question(s) left "
                    "without an answer dropped)", path, skipped, dropped)
    if not examples:
        raise UserError(f"{path} holds no questions")
    return examples


def version(path: Path) -> str:
    try:
        return str(json.loads(path.read_text(encoding="utf-8-sig")).get("version", "1.1"))
    except (json.JSONDecodeError, AttributeError):
        return "1.1"
