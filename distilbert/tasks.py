"""Every task in one literal table: the one place that knows what a task is. No torch here.

A task's entry names its checkpoint architectures in both families, the head keys it owns (our module
names), its ONNX outputs with their dynamic axes (Optimum's names), its pipeline class, and how int8
drift is measured for it. Adding a task is one entry here, its head in model.py and its pipeline.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from .errors import MissingHead, UserError

BATCH = {0: "batch_size"}
TOKENS = {0: "batch_size", 1: "sequence_length"}
# The encoders' `keep` (model.py, keras.py) for a head that reads every row's [CLS] alone (the classifiers):
# their last feed-forward then runs at position 0 only. A string, so that Keras passes it through unchanged.
CLS = "cls"


@dataclass(frozen=True)
class Task:
    name: str
    architectures: dict[str, str]  # family -> the class transformers saves for this head
    head_keys: tuple[str, ...]  # our parameter-name prefixes that belong to this head
    outputs: dict[str, dict[int, str]]  # ONNX output -> dynamic axes
    pipeline: str  # "module:Class" under distilbert.pipelines, imported when used
    drift: str  # what int8 drift measures: "top-k", "cosine", "label", "token-label", "span"
    aliases: tuple[str, ...] = ()
    older_architectures: tuple[str, ...] = ()  # other classes whose checkpoints load as this task

    def pipeline_class(self):
        module, name = self.pipeline.split(":")
        return getattr(importlib.import_module(f"distilbert.pipelines.{module}"), name)

    def token_level(self, output: str) -> bool:
        """Whether `output` has a value per token (sliced to each row's real length)."""
        return 1 in self.outputs[output]


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task(
            name="feature-extraction",
            architectures={"distilbert": "DistilBertModel", "bert": "BertModel"},
            head_keys=("encoder.pooler",),
            outputs={"last_hidden_state": TOKENS},
            pipeline="features:FeatureExtractionPipeline",
            drift="cosine",
        ),
        Task(
            name="fill-mask",
            architectures={"distilbert": "DistilBertForMaskedLM", "bert": "BertForMaskedLM"},
            head_keys=("vocab_transform", "vocab_layer_norm", "vocab_projector"),
            outputs={"logits": TOKENS},
            pipeline="fill_mask:FillMaskPipeline",
            drift="top-k",
            older_architectures=("BertForPreTraining",),
        ),
        Task(
            name="text-classification",
            architectures={"distilbert": "DistilBertForSequenceClassification", "bert": "BertForSequenceClassification"},
            head_keys=("pre_classifier", "classifier", "encoder.pooler"),
            outputs={"logits": BATCH},
            pipeline="text_classification:TextClassificationPipeline",
            drift="label",
            aliases=("sentiment-analysis",),
        ),
        Task(
            name="token-classification",
            architectures={"distilbert": "DistilBertForTokenClassification", "bert": "BertForTokenClassification"},
            head_keys=("classifier",),
            outputs={"logits": TOKENS},
            pipeline="token_classification:TokenClassificationPipeline",
            drift="token-label",
            aliases=("ner",),
        ),
        Task(
            name="question-answering",
            architectures={"distilbert": "DistilBertForQuestionAnswering", "bert": "BertForQuestionAnswering"},
            head_keys=("qa_outputs",),
            outputs={"start_logits": TOKENS, "end_logits": TOKENS},
            pipeline="question_answering:QuestionAnsweringPipeline",
            drift="span",
        ),
    )
}
ALIASES = {alias: task.name for task in TASKS.values() for alias in task.aliases}
# `architectures` in config.json -> task
ARCHITECTURES = {
    arch: task.name
    for task in TASKS.values()
    for arch in (*task.architectures.values(), *task.older_architectures)
}


def get(name: str) -> Task:
    """The task called `name` (or one of its aliases); a UserError naming the choices otherwise."""
    task = TASKS.get(ALIASES.get(name, name))
    if task is None:
        raise UserError(f"unknown task {name!r}; expected one of {', '.join([*TASKS, *ALIASES])}")
    return task


def architecture(family: str, task: str) -> str:
    return TASKS[task].architectures[family]


def infer(config, keys: set[str] | None = None, outputs: dict[str, list] | None = None) -> str | None:
    """The task a saved model carries: its config's `architectures` first; else, given our names of its weight
    keys, the head they hold; else, given an ONNX graph's outputs (name -> shape), the head they come from. A graph
    whose outputs are not those of the task its architectures name is judged by its outputs. None where nothing
    tells (no architectures, no keys, no outputs)."""
    named = task_of_architectures(config.architectures)
    if outputs is not None and (named is None or any(name not in outputs for name in TASKS[named].outputs)):
        return task_of_outputs(outputs, config.vocab_size)
    if named is not None:
        return named
    return task_of_keys(config.family, keys) if keys is not None else None


def task_of_architectures(architectures: list[str] | None) -> str | None:
    return next((ARCHITECTURES[a] for a in architectures or [] if a in ARCHITECTURES), None)


def task_of_keys(family: str, keys: set[str]) -> str:
    """The head a checkpoint without `architectures` carries, from our names of its keys."""
    if "vocab_transform.weight" in keys:
        return "fill-mask"
    if "qa_outputs.weight" in keys:
        return "question-answering"
    if "classifier.weight" in keys:
        # DistilBERT's sequence head has a pre-classifier; BERT's two heads differ only in the pooler
        sequence = "pre_classifier.weight" in keys or (family == "bert" and "encoder.pooler.dense.weight" in keys)
        return "text-classification" if sequence else "token-classification"
    return "feature-extraction"


def task_of_outputs(outputs: dict[str, list], vocab_size: int) -> str:
    """The task of an ONNX graph from its outputs' names and shapes (for graphs without `architectures`)."""
    if "last_hidden_state" in outputs:
        return "feature-extraction"
    if "start_logits" in outputs:
        return "question-answering"
    logits = outputs.get("logits")
    if logits is None:
        raise UserError(f"unrecognised ONNX outputs {sorted(outputs)}")
    if len(logits) == 2:
        return "text-classification"
    return "fill-mask" if logits[-1] in (vocab_size, "vocab_size") else "token-classification"


def head_mismatch(has: str, wanted: str) -> MissingHead:
    """The error for a checkpoint whose head is not the task's: names the head it has and what would work."""
    return MissingHead(
        f"this checkpoint has a {has} head, not a {wanted} head; run it as {has} "
        f"(e.g. distilbert.pipeline({has!r}, ...)), or fine-tune it for {wanted} first",
        has, wanted,
    )
