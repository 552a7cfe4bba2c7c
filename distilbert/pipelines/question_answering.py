"""Extractive question answering: transformers 4.57's QuestionAnsweringPipeline, answer for answer.

transformers 5 removed its question-answering pipeline, so the reference is 4.57's
(transformers/pipelines/question_answering.py, with a fast tokenizer padding on the right): the question
first and the context second; a context longer than `max_seq_len` is cut into windows that overlap by
`doc_stride` tokens; each window's start and end logits are masked to the context (and [CLS]), turned
into probabilities, and its best spans scored start x end; the answers of all windows are pooled (the
same text, lower-cased, adds up its scores) and the best `top_k` returned, with character offsets into
the context. The span search below is that file's `select_starts_ends` and `decode_spans`, kept
operation for operation in float32, so ties and near-ties resolve as they do there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import UserError
from .base import Job, Pipeline, check_top_k

NO_SCORE = 1000000  # 4.57's starting "null score": larger than any probability


class QuestionAnsweringPipeline(Pipeline):
    task = "question-answering"

    def __call__(self, inputs=None, context=None, **params):
        """pipe(question=..., context=...), pipe({"question": ..., "context": ...}), or lists of either."""
        return super().__call__(inputs, context=context, **params)

    def preprocess(
        self,
        inputs: str | dict | Sequence[dict] | None = None,
        question: str | Sequence[str] | None = None,
        context: str | Sequence[str] | None = None,
        top_k: int | None = 1,
        doc_stride: int | None = None,
        max_answer_len: int | None = 15,
        max_seq_len: int | None = None,
        max_question_len: int | None = 64,
        handle_impossible_answer: bool | None = False,
        align_to_words: bool | None = True,
    ) -> Job:
        """One question: its answer ({score, start, end, answer}, or a list of them when top_k > 1);
        several: one such result per question (a list of one comes back bare, as in transformers).

        max_seq_len: tokens per window (default min(384, the model's maximum); never past the model's maximum).
        doc_stride: tokens shared by neighbouring windows (default min(max_seq_len // 2, 128)).
        max_question_len: accepted for compatibility; like transformers with a fast tokenizer, questions are
        not cut.
        handle_impossible_answer: also offer the empty answer, scored as [CLS] (start 0, end 0, "").
        align_to_words: widen an answer to whole words.
        """
        if inputs is not None and question is not None:
            raise UserError("the question is given twice: pass it as the first argument or as question=, not both")
        examples, single = _examples(question if inputs is None else inputs, context)
        top_k = 1 if top_k is None else top_k
        check_top_k(top_k)
        max_answer_len = _integer("max_answer_len", 15 if max_answer_len is None else max_answer_len, 1)
        if max_question_len is not None:
            _integer("max_question_len", max_question_len, 1)
        if max_seq_len is None:
            max_seq_len = min(self.max_length, 384)
        max_seq_len = min(_integer("max_seq_len", max_seq_len, 1), self.max_length)  # the position table ends there
        if doc_stride is None:
            doc_stride = min(max_seq_len // 2, 128)
        if _integer("doc_stride", doc_stride, 0) >= max_seq_len:
            raise UserError(f"doc_stride ({doc_stride}) must be smaller than max_seq_len ({max_seq_len}): "
                            "windows overlap by doc_stride tokens")
        questions, contexts = [q for q, _ in examples], [c for _, c in examples]
        self._check_room(questions, contexts, max_seq_len, doc_stride)
        enc = self.tokenizer(questions, contexts, truncation="only_second", max_length=max_seq_len, stride=doc_stride,
                             return_overflowing_tokens=True, return_offsets=True)
        windows = [
            {"example": example, "input_ids": ids, "offsets": offsets, "word_ids": words, "sequence_ids": sequences}
            for example, ids, offsets, words, sequences in zip(
                enc["overflow_to_sample_mapping"], enc["input_ids"], enc["offset_mapping"], enc["word_ids"],
                enc["sequence_ids"])
        ]
        state = {"contexts": contexts, "windows": windows, "single": single, "top_k": top_k,
                 "max_answer_len": max_answer_len, "handle_impossible_answer": bool(handle_impossible_answer),
                 "align_to_words": bool(align_to_words)}
        return Job(self.features(enc), state)

    def postprocess(self, job: Job, outputs: list[dict[str, np.ndarray]]):
        state = job.state
        per_example: list[list[tuple[dict, dict]]] = [[] for _ in state["contexts"]]
        for window, out in zip(state["windows"], outputs):
            per_example[window["example"]].append((window, out))
        results = [self.answers(windows, context, state) for windows, context in zip(per_example, state["contexts"])]
        return results[0] if state["single"] else results

    def answers(self, windows: list[tuple[dict, dict]], context: str, state: dict) -> dict | list[dict]:
        """4.57's QuestionAnsweringPipeline.postprocess for one question over its windows."""
        top_k, align = state["top_k"], state["align_to_words"]
        pre_top_k = top_k * 2 + 10 if align else top_k  # aligning to words may merge candidates: take more
        min_null_score = NO_SCORE
        answers: list[dict[str, Any]] = []
        by_text: dict[str, dict[str, Any]] = {}  # 4.57's get_answer: one answer per lower-cased text
        for window, out in windows:
            allowed = self.allowed(window)
            starts, ends, scores, min_null_score = select_starts_ends(
                out["start_logits"].astype(np.float32)[None], out["end_logits"].astype(np.float32)[None], allowed,
                min_null_score, pre_top_k, state["handle_impossible_answer"], state["max_answer_len"])
            spans = word_spans(window) if align else None
            for s, e, score in zip(starts, ends, scores):
                start, end = char_span(window, int(s), int(e), spans)
                text = context[start:end]
                same = by_text.get(text.lower())
                if same is not None:
                    same["score"] += score.item()
                else:
                    by_text[text.lower()] = {"score": score.item(), "start": start, "end": end, "answer": text}
                    answers.append(by_text[text.lower()])
        if state["handle_impossible_answer"]:
            answers.append({"score": min_null_score, "start": 0, "end": 0, "answer": ""})
        answers = sorted(answers, key=lambda a: a["score"], reverse=True)[:top_k]  # stable: ties keep window order
        return answers[0] if len(answers) == 1 else answers

    def allowed(self, window: dict) -> np.ndarray:
        """(1, T) int: 1 where an answer may lie. 4.57's p_mask inverted: the context, and [CLS] wherever it is."""
        cls = self.tokenizer.cls_token_id
        return np.array([[int(s == 1 or t == cls) for s, t in zip(window["sequence_ids"], window["input_ids"])]])

    def _check_room(self, questions: list[str], contexts: list[str], max_seq_len: int, doc_stride: int) -> None:
        """A window must hold the question, three special tokens and more context than the overlap, or the
        windows cannot advance (the tokenizer would panic)."""
        lengths = [len(ids) for ids in self.tokenizer(questions, add_special_tokens=False)["input_ids"]]
        for i, n in enumerate(lengths):
            room = max_seq_len - n - 3
            if room > doc_stride:
                continue
            context = len(self.tokenizer(contexts[i], add_special_tokens=False)["input_ids"])
            if n + context + 3 <= max_seq_len:
                continue  # fits in one window: nothing to advance
            where = f" (question {i + 1})" if len(questions) > 1 else ""
            if room <= 0:
                raise UserError(f"the question is {n} tokens{where}: with max_seq_len {max_seq_len} no context fits "
                                "beside it; ask a shorter question or raise max_seq_len")
            raise UserError(f"the question is {n} tokens{where}, so a window of max_seq_len {max_seq_len} holds "
                            f"{room} context tokens, no more than doc_stride {doc_stride}: use a doc_stride below "
                            f"{room}, a larger max_seq_len or a shorter question")


def _integer(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else "a non-negative integer"
        raise UserError(f"{name} must be {kind}, got {value!r}")
    return value


def _examples(question, context) -> tuple[list[tuple[str, str]], bool]:
    """(question, context) pairs from the accepted forms, and whether one result (not a list) comes back."""
    if context is not None:
        if question is None:
            raise UserError("a context without a question: give question=... too")
        if isinstance(question, str) and isinstance(context, str):
            pairs = [(question, context)]
        elif isinstance(question, (list, tuple)) and isinstance(context, str):
            pairs = [(q, context) for q in question]
        elif isinstance(question, (list, tuple)) and isinstance(context, (list, tuple)):
            if len(question) != len(context):
                raise UserError(f"{len(question)} questions but {len(context)} contexts: give one context per "
                                "question, or one context for all")
            pairs = list(zip(question, context))
        elif isinstance(question, str) and isinstance(context, (list, tuple)):
            raise UserError("one question with several contexts: repeat the question once per context")
        else:
            raise UserError(f"expected question and context as texts or lists of texts, got "
                            f"{type(question).__name__} and {type(context).__name__}")
    elif question is None:
        raise UserError('no question: give question=... and context=..., or {"question": ..., "context": ...}')
    elif isinstance(question, dict):
        pairs = [_pair(question)]
    elif isinstance(question, (list, tuple)):
        pairs = [_pair(item, i if len(question) > 1 else None) for i, item in enumerate(question)]
    elif isinstance(question, str):
        raise UserError('a question needs a context: give context=..., or {"question": ..., "context": ...}')
    else:
        raise UserError(f'expected {{"question": ..., "context": ...}}, got {type(question).__name__}')
    if not pairs:
        raise UserError("no question given: give at least one")
    for i, (q, c) in enumerate(pairs):
        where = f" (input {i + 1})" if len(pairs) > 1 else ""
        for name, text in (("question", q), ("context", c)):
            if not isinstance(text, str):
                raise UserError(f"the {name}{where} must be text, got {type(text).__name__}")
            if not text.strip():
                raise UserError(f"empty {name}{where}: give a non-empty {name}")
    return pairs, len(pairs) == 1  # transformers answers a list of one question without the list


def _pair(item: Any, index: int | None = None) -> tuple[str, str]:
    where = f" (input {index + 1})" if index is not None else ""
    if not isinstance(item, dict):
        if isinstance(item, str):
            raise UserError(f'a question needs a context{where}: give {{"question": ..., "context": ...}}')
        raise UserError(f'expected {{"question": ..., "context": ...}}{where}, got {type(item).__name__}')
    unknown = set(item) - {"question", "context"}
    if unknown:
        raise UserError(f'unknown keys {sorted(unknown)}{where}: an input is {{"question": ..., "context": ...}}')
    if "context" not in item:
        raise UserError(f'a question needs a context{where}: the input has no "context"')
    if "question" not in item:
        raise UserError(f'a context without a question{where}: the input has no "question"')
    return item["question"], item["context"]


# --- transformers 4.57 pipelines/question_answering.py, kept operation for operation ----------------


def select_starts_ends(start, end, allowed, min_null_score, top_k, handle_impossible_answer, max_answer_len):
    """`select_starts_ends`: (1, T) float32 logits -> candidate spans, their scores, the null score so far."""
    masked = allowed == 0.0
    start = np.where(masked, -10000.0, start)  # float32 stays float32
    end = np.where(masked, -10000.0, end)
    start = np.exp(start - start.max(axis=-1, keepdims=True))
    start = start / start.sum()
    end = np.exp(end - end.max(axis=-1, keepdims=True))
    end = end / end.sum()
    if handle_impossible_answer:
        min_null_score = min(min_null_score, (start[0, 0] * end[0, 0]).item())
    start[0, 0] = end[0, 0] = 0.0  # [CLS] is never part of a real answer
    starts, ends, scores = decode_spans(start, end, top_k, max_answer_len, allowed)
    return starts, ends, scores, min_null_score


def decode_spans(start, end, top_k, max_answer_len, allowed):
    """`decode_spans`: the top_k (start, end) pairs by start x end, end >= start, at most max_answer_len tokens."""
    outer = np.matmul(np.expand_dims(start, -1), np.expand_dims(end, 1))  # (1, T, T)
    candidates = np.tril(np.triu(outer), max_answer_len - 1)
    scores_flat = candidates.flatten()
    if top_k == 1:
        idx_sort = [np.argmax(scores_flat)]
    elif len(scores_flat) < top_k:
        idx_sort = np.argsort(-scores_flat)
    else:
        idx = np.argpartition(-scores_flat, top_k)[0:top_k]
        idx_sort = idx[np.argsort(-scores_flat[idx])]
    starts, ends = np.unravel_index(idx_sort, candidates.shape)[1:]
    # 4.57 tests membership in allowed.nonzero(), the (rows, columns) pair: row 0 makes token 0 always allowed
    keep = np.isin(starts, allowed.nonzero()) & np.isin(ends, allowed.nonzero())
    starts, ends = starts[keep], ends[keep]
    return starts, ends, candidates[0, starts, ends]


def word_spans(window: dict) -> dict[int, tuple[int, int]]:
    """Context word number -> its characters within this window: tokenizers' `word_to_chars(word, 1)`, which
    runs from the word's first token to its last among the context tokens of this window (BERT's
    pre-tokenizer numbers the words of a sequence in order, so a word's tokens are consecutive)."""
    spans: dict[int, tuple[int, int]] = {}
    for word, sequence, (a, b) in zip(window["word_ids"], window["sequence_ids"], window["offsets"]):
        if sequence == 1 and word is not None:
            spans[word] = (spans[word][0], b) if word in spans else (a, b)
    return spans


def char_span(window: dict, s: int, e: int, spans: dict[int, tuple[int, int]] | None) -> tuple[int, int]:
    """4.57's `get_indices`: whole words where both ends have a word in the context, else the tokens' offsets."""
    if spans is not None:
        first, last = spans.get(window["word_ids"][s]), spans.get(window["word_ids"][e])
        if first is not None and last is not None:
            return first[0], last[1]
    offsets = window["offsets"]
    return offsets[s][0], offsets[e][1]
