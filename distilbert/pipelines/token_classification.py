"""Token classification (NER): transformers' TokenClassificationPipeline output, key for key.

Without aggregation each token gets {entity, score, index, word, start, end}. With an aggregation strategy
each entity gets {entity_group, score, word, start, end}: "simple" joins adjacent tokens of one tag (a B- tag
starts a new entity); "first", "average" and "max" first settle one tag per word (its first piece's, its
averaged scores', its surest piece's). Entities tagged with one of `ignore_labels` (default ["O"]) are left
out. `start` and `end` are character offsets into the text as given.

A text longer than the model reads is not cut off: it is split into windows that overlap by `stride`
tokens, as transformers does when given `stride`, and where entities of two windows overlap the longer one
wins (the surer one between equals). transformers refuses `stride` without aggregation; here tokens of
overlapping windows are counted once (the surer prediction), with `index` their position in the whole text
as if the model read it at once.

The code follows transformers/pipelines/token_classification.py (v5): gather_pre_entities, aggregate,
aggregate_words, group_entities, aggregate_overlapping_entities.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import UserError
from .base import Job, Pipeline, check_texts, log, softmax

STRATEGIES = ("none", "simple", "first", "average", "max")
WORD_STRATEGIES = ("first", "average", "max")  # these need each token's characters to find its word


class TokenClassificationPipeline(Pipeline):
    task = "token-classification"

    def __init__(self, *args, aggregation_strategy: str = "none", ignore_labels: Sequence[str] | None = None,
                 stride: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.aggregation_strategy = self.strategy(aggregation_strategy)
        self.ignore_labels = check_labels(ignore_labels)
        self.stride = self.check_stride(stride)
        # WordPiece marks a word's later pieces ("##ing"): a piece longer or shorter than its characters is
        # one of them. Without such a prefix transformers guesses words from spaces, and so do we.
        self.subword_prefix = getattr(self.tokenizer.backend.model, "continuing_subword_prefix", None)

    def preprocess(self, inputs: str | Sequence[str], aggregation_strategy: str | None = None,
                   ignore_labels: Sequence[str] | None = None, stride: int | None = None) -> Job:
        """One text: a list of entities. A list of texts: a list of those (a list of one text too)."""
        strategy = self.aggregation_strategy if aggregation_strategy is None else self.strategy(aggregation_strategy)
        ignore = check_labels(ignore_labels) if ignore_labels is not None else self.ignore_labels
        stride = self.check_stride(stride) if stride is not None else self.stride
        single = isinstance(inputs, str)
        texts = check_texts([inputs] if single or not isinstance(inputs, (list, tuple)) else inputs)
        for text in texts:
            if not text.strip():
                raise UserError("empty text: give a text to find entities in")
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_length, stride=stride,
                             return_overflowing_tokens=True, return_offsets=True)
        windows: list[list[int]] = [[] for _ in texts]
        for row, i in enumerate(enc["overflow_to_sample_mapping"]):
            windows[i].append(row)
        special = [[s is None for s in ids] for ids in enc["sequence_ids"]]
        state = {"texts": texts, "windows": windows, "offsets": enc["offset_mapping"], "special": special,
                 "strategy": strategy, "ignore": ignore, "stride": stride, "single": single}
        return Job(self.features(enc), state)

    def postprocess(self, job: Job, outputs):
        state = job.state
        strategy, ignore = state["strategy"], state["ignore"]
        if strategy in WORD_STRATEGIES and not self.subword_prefix:
            log.warning("the tokenizer does not mark word pieces; words are guessed from spaces")
        results = []
        for text, rows in zip(state["texts"], state["windows"]):
            # window w starts w * step tokens into the text: each holds (first row - specials) text tokens
            step = len(job.features[rows[0]]) - sum(state["special"][rows[0]]) - state["stride"]
            entities = []
            for w, row in enumerate(rows):
                pre = self.gather_pre_entities(text, job.features[row].input_ids, softmax(outputs[row]["logits"]),
                                               state["offsets"][row], state["special"][row], w * step)
                entities += [e for e in self.aggregate(pre, strategy)
                             if e.get("entity") not in ignore and e.get("entity_group") not in ignore]
            if len(rows) > 1:
                entities = once_per_token(entities) if strategy == "none" else aggregate_overlapping_entities(entities)
            results.append([{k: float(v) if k == "score" else v for k, v in e.items()} for e in entities])
        return results[0] if state["single"] else results

    # --- settings ---------------------------------------------------------------------------------

    def strategy(self, name) -> str:
        value = getattr(name, "value", name)  # transformers' AggregationStrategy enum works too
        strategy = value.lower() if isinstance(value, str) else value
        if strategy not in STRATEGIES:
            raise UserError(f"unknown aggregation_strategy {name!r}; expected one of {', '.join(STRATEGIES)}")
        if strategy in WORD_STRATEGIES and not self.tokenizer.has_offsets:
            raise UserError(f"aggregation_strategy {strategy!r} needs a tokenizer with character offsets to find "
                            "words, and this one has none; use 'simple' or 'none'")
        return strategy

    def check_stride(self, stride) -> int:
        """Tokens two windows share; by default a quarter of a window."""
        room = self.max_length - 2  # a window's text tokens, between [CLS] and [SEP]
        if stride is None:
            return room // 4
        if isinstance(stride, bool) or not isinstance(stride, int) or not 0 <= stride < room:
            raise UserError(f"stride must be a whole number of tokens from 0 to {room - 1} (a window holds {room} "
                            f"tokens of text), got {stride!r}")
        return stride

    def label(self, i) -> str:
        return self.config.id2label.get(int(i), f"LABEL_{int(i)}")

    # --- transformers' steps ----------------------------------------------------------------------

    def gather_pre_entities(self, text: str, input_ids: Sequence[int], scores: np.ndarray,
                            offsets: Sequence[tuple[int, int]], special: Sequence[bool], shift: int) -> list[dict]:
        """Each token that is not special, with its scores, characters, and whether it continues a word."""
        pre_entities = []
        tokens = self.tokenizer.convert_ids_to_tokens(input_ids)
        for idx, token_scores in enumerate(scores):
            if special[idx]:
                continue
            word = tokens[idx]
            start, end = offsets[idx]
            word_ref = text[start:end]
            if self.subword_prefix:
                is_subword = len(word) != len(word_ref)
            else:
                is_subword = start > 0 and " " not in text[start - 1 : start + 1]
            if input_ids[idx] == self.tokenizer.unk_token_id:
                word, is_subword = word_ref, False
            pre_entities.append({"word": word, "scores": token_scores, "start": start, "end": end,
                                 "index": idx + shift, "is_subword": is_subword})
        return pre_entities

    def aggregate(self, pre_entities: list[dict], strategy: str) -> list[dict]:
        if strategy in ("none", "simple"):
            entities = []
            for pre in pre_entities:
                best = pre["scores"].argmax()
                entities.append({"entity": self.label(best), "score": pre["scores"][best], "index": pre["index"],
                                 "word": pre["word"], "start": pre["start"], "end": pre["end"]})
        else:
            entities = self.aggregate_words(pre_entities, strategy)
        return entities if strategy == "none" else self.group_entities(entities)

    def aggregate_words(self, entities: list[dict], strategy: str) -> list[dict]:
        """One tag per word: its pieces (is_subword) join the piece before them."""
        words, group = [], None
        for entity in entities:
            if group is None:
                group = [entity]
            elif entity["is_subword"]:
                group.append(entity)
            else:
                words.append(self.aggregate_word(group, strategy))
                group = [entity]
        if group is not None:
            words.append(self.aggregate_word(group, strategy))
        return words

    def aggregate_word(self, entities: list[dict], strategy: str) -> dict:
        if strategy == "first":
            scores = entities[0]["scores"]
        elif strategy == "max":
            scores = max(entities, key=lambda entity: entity["scores"].max())["scores"]
        else:  # average
            scores = np.nanmean(np.stack([entity["scores"] for entity in entities]), axis=0)
        best = scores.argmax()
        return {"entity": self.label(best), "score": scores[best],
                "word": self.tokenizer.convert_tokens_to_string([entity["word"] for entity in entities]),
                "start": entities[0]["start"], "end": entities[-1]["end"]}

    def group_entities(self, entities: list[dict]) -> list[dict]:
        """Adjacent tokens (or words) of one tag become one entity; a B- tag always starts a new one."""
        groups, current = [], []
        for entity in entities:
            if current:
                bi, tag = get_tag(entity["entity"])
                if not (tag == get_tag(current[-1]["entity"])[1] and bi != "B"):
                    groups.append(self.group_sub_entities(current))
                    current = []
            current.append(entity)
        if current:
            groups.append(self.group_sub_entities(current))
        return groups

    def group_sub_entities(self, entities: list[dict]) -> dict:
        scores = [entity["score"] for entity in entities]
        return {"entity_group": entities[0]["entity"].split("-", 1)[-1],
                # the mean of one score is that score: numpy's per-call cost dominated the whole pipeline
                "score": scores[0] if len(scores) == 1 else np.mean(np.nanmean(scores)),
                "word": self.tokenizer.convert_tokens_to_string([entity["word"] for entity in entities]),
                "start": entities[0]["start"], "end": entities[-1]["end"]}


def get_tag(label: str) -> tuple[str, str]:
    """("B" or "I", the tag): a label without a B-/I- prefix continues an entity, as an I- one."""
    if label.startswith("B-") or label.startswith("I-"):
        return label[0], label[2:]
    return "I", label


def aggregate_overlapping_entities(entities: list[dict]) -> list[dict]:
    """Entities of overlapping windows: of two that overlap, the longer stays (between equals, the surer)."""
    if not entities:
        return entities
    entities = sorted(entities, key=lambda e: e["start"])
    aggregated, previous = [], entities[0]
    for entity in entities:
        if previous["start"] <= entity["start"] < previous["end"]:
            length, previous_length = entity["end"] - entity["start"], previous["end"] - previous["start"]
            if length > previous_length or length == previous_length and entity["score"] > previous["score"]:
                previous = entity
        else:
            aggregated.append(previous)
            previous = entity
    aggregated.append(previous)
    return aggregated


def once_per_token(entities: list[dict]) -> list[dict]:
    """Tokens that two windows share: the surer prediction, in text order."""
    best: dict[int, dict] = {}
    for entity in entities:
        kept = best.get(entity["index"])
        if kept is None or entity["score"] > kept["score"]:
            best[entity["index"]] = entity
    return [best[i] for i in sorted(best)]


def check_labels(labels: Sequence[str] | None) -> list[str]:
    if labels is None:
        return ["O"]
    if isinstance(labels, str):
        return [labels]
    labels = list(labels)
    if not all(isinstance(label, str) for label in labels):
        raise UserError(f"ignore_labels must be a list of labels such as ['O'], got {labels!r}")
    return labels
