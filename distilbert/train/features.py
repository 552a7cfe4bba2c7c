"""Labelled examples -> model rows with training targets, and model outputs -> predictions. No torch here.

Follows transformers' examples (run_glue, run_ner, run_qa): NER labels the first sub-word of each word and
ignores the rest (IGNORE); QA cuts long contexts into windows of `max_length` tokens overlapping by
`stride`, a window without the answer pointing at [CLS], and takes the best valid span over the n-best
start and end positions of every window of an example.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..data import QAExample, TextExample, TokenExample
from ..errors import UserError

IGNORE = -100  # a position no loss reads (PyTorch's cross-entropy ignore_index)


@dataclass
class Rows:
    """Model rows: token ids (and types), a target per row, and what decoding needs."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    labels: list = field(default_factory=list)  # per row: an id, a float, a multi-hot list, per-token ids, (start, end)
    word_ids: list[list[int | None]] = field(default_factory=list)  # NER: the word of each token
    example: list[int] = field(default_factory=list)  # QA: the example each window comes from
    offsets: list[list[tuple[int, int] | None]] = field(default_factory=list)  # QA: context characters of each token

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> list[int]:
        return [len(r) for r in self.input_ids]


# --- text classification ----------------------------------------------------------------------------------


def encode_text(tokenizer, examples: list[TextExample], max_length: int, problem_type: str,
                label2id: dict[str, int] | None, where: str = "") -> Rows:
    texts = [e.text for e in examples]
    pairs = [e.text_pair or "" for e in examples] if any(e.text_pair is not None for e in examples) else None
    enc = tokenizer(texts, pairs, truncation=True, max_length=max_length)
    rows = Rows(enc["input_ids"], enc["token_type_ids"])
    for number, e in enumerate(examples, 1):
        rows.labels.append(_target(e.label, problem_type, label2id, f"{where} example {number}"))
    return rows


def _target(label, problem_type: str, label2id, where: str):
    if label is None:
        raise UserError(f"{where} has no label; every training and validation example needs one (see --label-column)")
    if problem_type == "regression":
        try:
            return float(label)
        except (TypeError, ValueError):
            raise UserError(f"{where}: label {label!r} is not a number (regression)") from None
    names = label if isinstance(label, list) else [str(label)]
    unknown = [n for n in names if n not in label2id]
    if unknown:
        raise UserError(f"{where}: label {unknown[0]!r} is not one of the labels {', '.join(label2id)}")
    if problem_type == "multi_label_classification":
        hot = [0.0] * len(label2id)
        for n in names:
            hot[label2id[n]] = 1.0
        return hot
    return label2id[names[0]]


def predict_text(logits: np.ndarray, problem_type: str):
    """(N, labels) logits -> class ids, values (regression) or 0/1 rows (multi-label, sigmoid > 0.5)."""
    if problem_type == "regression":
        return logits[:, 0].astype(np.float64)
    if problem_type == "multi_label_classification":
        return (logits > 0).astype(np.int64)
    return logits.argmax(-1)


# --- token classification ---------------------------------------------------------------------------------


def encode_tokens(tokenizer, examples: list[TokenExample], max_length: int, label2id: dict[str, int] | None,
                  where: str = "") -> Rows:
    """Each word tokenised on its own ([CLS] pieces... [SEP]); its first piece labelled, the rest IGNORE."""
    vocabulary = sorted({w for e in examples for w in e.tokens})
    pieces = dict(zip(vocabulary, tokenizer(vocabulary, add_special_tokens=False)["input_ids"])) if vocabulary else {}
    rows = Rows([], [])
    for number, e in enumerate(examples, 1):
        ids, words, labels = [tokenizer.cls_token_id], [None], [IGNORE]
        for w, word in enumerate(e.tokens):
            p = pieces[word] or [tokenizer.unk_token_id]  # a word the vocabulary cannot spell at all
            if len(ids) + len(p) > max_length - 1:
                break  # truncated: the words past here are predicted "O" at evaluation (run_ner does the same)
            ids.extend(p)
            words.extend([w] * len(p))
            if e.tags is not None and label2id is not None:
                tag = e.tags[w]
                if tag not in label2id:
                    raise UserError(f"{where} sentence {number}: tag {tag!r} is not one of the tags {', '.join(label2id)}")
                labels.extend([label2id[tag]] + [IGNORE] * (len(p) - 1))
        ids.append(tokenizer.sep_token_id)
        words.append(None)
        labels.append(IGNORE)
        rows.input_ids.append(ids)
        rows.token_type_ids.append([0] * len(ids))
        rows.word_ids.append(words)
        rows.labels.append(labels)
    return rows


def predict_tags(logits: list[np.ndarray], rows: Rows, examples: list[TokenExample], id2label: dict[int, str]
                 ) -> list[list[str]]:
    """Each word's tag from its first piece; words cut off by truncation are "O"."""
    out = []
    for scores, words, e in zip(logits, rows.word_ids, examples):
        tags = ["O"] * len(e.tokens)
        seen = set()
        for t, w in enumerate(words):
            if w is not None and w not in seen:
                seen.add(w)
                tags[w] = id2label[int(scores[t].argmax())]
        out.append(tags)
    return out


# --- question answering -----------------------------------------------------------------------------------


def encode_qa(tokenizer, examples: list[QAExample], max_length: int, stride: int, training: bool) -> Rows:
    """Question + context windows (only the context is cut). Training targets: the answer's first and last
    token in the window, or (0, 0) ([CLS]) when the window does not hold the whole answer."""
    if stride >= max_length // 2:
        raise UserError(f"--doc-stride {stride} must be well under --max-length {max_length} (run_qa: 128 of 384)")
    enc = tokenizer([e.question.lstrip() for e in examples], [e.context for e in examples], truncation="only_second",
                    max_length=max_length, stride=stride, return_overflowing_tokens=True, return_offsets=True)
    rows = Rows(enc["input_ids"], enc["token_type_ids"])
    for i, sample in enumerate(enc["overflow_to_sample_mapping"]):
        sequence = enc["sequence_ids"][i]
        offsets = [o if sequence[t] == 1 else None for t, o in enumerate(enc["offset_mapping"][i])]
        rows.example.append(sample)
        rows.offsets.append(offsets)
        if not training:
            continue
        e = examples[sample]
        if e.is_impossible:
            rows.labels.append((0, 0))
            continue
        start_char = e.answers["answer_start"][0]
        end_char = start_char + len(e.answers["text"][0])
        context = [t for t, o in enumerate(offsets) if o is not None]
        if not context or offsets[context[0]][0] > start_char or offsets[context[-1]][1] < end_char:
            rows.labels.append((0, 0))
            continue
        start = next(t for t in context if offsets[t][1] > start_char)
        end = next(t for t in reversed(context) if offsets[t][0] < end_char)
        rows.labels.append((start, end))
    return rows


def predict_answers(start_logits: list[np.ndarray], end_logits: list[np.ndarray], rows: Rows,
                    examples: list[QAExample], n_best: int = 20, max_answer_length: int = 30,
                    with_negative: bool = False) -> dict[str, str]:
    """run_qa's postprocess_qa_predictions: the best start + end score over every window's n-best valid spans
    (both in the context, end not before start, at most `max_answer_length` tokens). With `with_negative`
    (SQuAD v2.0), "" when the [CLS] score of the example's best window beats every span."""
    by_example: dict[int, list[int]] = {}
    for i, e in enumerate(rows.example):
        by_example.setdefault(e, []).append(i)
    answers = {}
    for e, windows in by_example.items():
        best_score, best_text, null = -np.inf, "", np.inf
        context = examples[e].context
        for i in windows:
            s, t, offsets = start_logits[i], end_logits[i], rows.offsets[i]
            null = min(null, float(s[0] + t[0]))
            starts = np.argsort(s)[-1 : -n_best - 1 : -1]
            ends = np.argsort(t)[-1 : -n_best - 1 : -1]
            for a in starts:
                for b in ends:
                    if a >= len(offsets) or b >= len(offsets) or offsets[a] is None or offsets[b] is None:
                        continue
                    if b < a or b - a + 1 > max_answer_length:
                        continue
                    score = float(s[a] + t[b])
                    if score > best_score:
                        best_score, best_text = score, context[offsets[a][0] : offsets[b][1]]
        answers[examples[e].id] = "" if with_negative and null > best_score else best_text
    return answers
