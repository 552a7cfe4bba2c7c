"""Text classification (sentiment and the like): transformers' TextClassificationPipeline output, key for key.

Texts, or text pairs as {"text", "text_pair"}; labels from the config's id2label (LABEL_i where it has none).
Scores: softmax over several labels, sigmoid for one label or `problem_type` multi-label, none for
regression (transformers' defaults), or `function_to_apply`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import UserError
from .base import Job, Pipeline, check_top_k, softmax

FUNCTIONS = ("softmax", "sigmoid", "none")
_UNSET = object()  # top_k not given: transformers' legacy shape (one {label, score} per text)


class TextClassificationPipeline(Pipeline):
    task = "text-classification"

    def preprocess(self, inputs: str | dict | Sequence[str | dict], top_k: Any = _UNSET,
                   function_to_apply: str | None = None) -> Job:
        """One text: [{label, score}]; a list: one {label, score} per text. With top_k (None = every label):
        a sorted list of {label, score} per text."""
        legacy = top_k is _UNSET
        if not legacy:
            check_top_k(top_k, allow_none=True)
        function = self.function(function_to_apply)
        single = isinstance(inputs, (str, dict))
        items = [inputs] if single else list(inputs)
        texts, pairs = [], []
        for item in items:
            if isinstance(item, dict):
                unknown = set(item) - {"text", "text_pair"}
                if "text" not in item or unknown:
                    raise UserError('a text pair is {"text": ..., "text_pair": ...}' +
                                    (f"; unknown keys {sorted(unknown)}" if unknown else "; 'text' is missing"))
                texts.append(item["text"])
                pairs.append(item.get("text_pair"))
            elif isinstance(item, (list, tuple)) and len(item) == 2 and all(isinstance(t, str) for t in item):
                texts.append(item[0])
                pairs.append(item[1])
            else:
                texts.append(item)
                pairs.append(None)
        for text in texts:
            if isinstance(text, str) and not text.strip():
                raise UserError("empty text: give a text to classify")
        with_pairs = [i for i, p in enumerate(pairs) if p is not None]
        if with_pairs and len(with_pairs) != len(pairs):  # tokenise pairs and single texts apart, keep the order
            a = self.encode([texts[i] for i in with_pairs], [pairs[i] for i in with_pairs])
            alone = [i for i in range(len(texts)) if pairs[i] is None]
            b = self.encode([texts[i] for i in alone])
            features = [None] * len(texts)
            for source, rows in ((a, with_pairs), (b, alone)):
                for feature, i in zip(self.features(source), rows):
                    features[i] = feature
            truncated = sorted([with_pairs[i] for i in a["truncated"]] + [alone[i] for i in b["truncated"]])
        else:
            enc = self.encode(texts, pairs if with_pairs else None)
            features, truncated = self.features(enc), enc["truncated"]
        state = {"legacy": legacy, "top_k": None if legacy else top_k, "function": function,
                 "single": single, "plain_text": isinstance(inputs, str)}
        return Job(features, state, truncated)

    def postprocess(self, job: Job, outputs):
        state = job.state
        results = [self.scores(out["logits"], state["function"], state["top_k"], state["legacy"]) for out in outputs]
        if state["single"]:
            # transformers wraps one plain text's legacy answer in a list; a dict input comes back bare
            return [results[0]] if state["legacy"] and state["plain_text"] else results[0]
        return results

    def function(self, name: str | None) -> str:
        if name is not None:
            name = name.lower()
            if name not in FUNCTIONS:
                raise UserError(f"unknown function_to_apply {name!r}; expected one of {', '.join(FUNCTIONS)}")
            return name
        problem = self.config.extra.get("problem_type")
        if problem == "regression":
            return "none"
        if problem == "multi_label_classification" or self.config.num_labels == 1:
            return "sigmoid"
        return "softmax"

    def scores(self, logits: np.ndarray, function: str, top_k: int | None, legacy: bool):
        logits = logits.astype(np.float32)
        if function == "softmax":
            scores = softmax(logits)
        elif function == "sigmoid":
            scores = 1.0 / (1.0 + np.exp(-logits))
        else:
            scores = logits
        labels = self.config.id2label
        if legacy:
            best = int(scores.argmax())
            return {"label": labels.get(best, f"LABEL_{best}"), "score": float(scores[best])}
        order = np.argsort(-scores, kind="stable")  # Python's sort is stable too: ties keep label order
        if top_k is not None:
            order = order[:top_k]
        return [{"label": labels.get(int(i), f"LABEL_{i}"), "score": float(scores[i])} for i in order]
