"""`distilbert evaluate`: any model (PyTorch, ONNX, int8) scored on labelled data through the pipelines.

Scoring runs the same pipelines users call, so an export is scored exactly as it answers. No torch here.
- text classification: every label's raw score (function_to_apply="none"), the best label (regression:
  the value; multi-label: every label above 0);
- NER: the text is the words joined by spaces; each word takes its first piece's tag (the pipeline without
  aggregation), as fine-tuning trained it and as run_ner scores it;
- QA: run_qa's settings: windows of 384 tokens, stride 128, answers of at most 30 tokens; SQuAD v2.0 files
  (with unanswerable questions) also offer the empty answer.
"""

from __future__ import annotations

import json
import logging

import numpy as np

from . import metrics, tasks
from .data import Columns, read
from .errors import UserError, check_writable

log = logging.getLogger("distilbert")
QA_SETTINGS = {"max_seq_len": 384, "doc_stride": 128, "max_answer_len": 30}  # run_qa's defaults
CHUNK = 256  # examples per pipeline call


def evaluate(model: str, task: str | None, data: str, glue: str | None = None, backend: str | None = None,
             precision: str = "fp32", batch_size: int = 32, threads: int | None = None, columns: Columns | None = None,
             predictions_file: str | None = None, limit: int | None = None, progress: bool = True) -> dict:
    from .pipelines import pipeline

    task = tasks.get(task).name if task else model_task(model)
    if glue and task != "text-classification":
        raise UserError(f"--glue is text classification; this model is {task}")
    if task not in ("text-classification", "token-classification", "question-answering"):
        raise UserError(f"evaluate scores text-classification, token-classification and question-answering models; "
                        f"{model} is {task} (give --task)")
    examples = read(task, data, columns, glue)
    if limit:
        examples = examples[:limit]
    if predictions_file:
        check_writable(predictions_file, "--predictions")
    pipe = pipeline(task, model=model, backend=backend, precision=precision, batch_size=batch_size, threads=threads)
    if task == "text-classification":
        scores, predicted = _classify(pipe, examples, glue, progress)
    elif task == "token-classification":
        scores, predicted = _ner(pipe, examples, progress)
    else:
        scores, predicted = _qa(pipe, examples, progress)
    if predictions_file:
        with open(predictions_file, "w", encoding="utf-8") as f:
            if task == "question-answering":
                json.dump(predicted, f, ensure_ascii=False)  # the official scripts' {id: answer}
            else:
                for row in predicted:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return {"model": str(model), "task": task, "data": str(data), "examples": len(examples), "metrics": scores}


def model_task(model: str) -> str:
    from .checkpoint import to_our_keys, weight_keys
    from .config import Config
    from .hub import resolve

    folder = resolve(model, need="tokenizer")
    config = Config.from_file(folder / "config.json")
    keys = weight_keys(folder)  # the weights' key names, where the folder has weights (a hub id: only its config)
    task = tasks.infer(config, keys=set(to_our_keys(config.family, dict.fromkeys(keys))) if keys else None)
    if task is None:
        raise UserError(f"{model}'s config.json names no task head; give --task")
    return task


def _batches(items: list, progress: bool, what: str):
    from tqdm import tqdm

    with tqdm(total=len(items), desc=what, unit="example", disable=not progress or len(items) <= CHUNK) as bar:
        for start in range(0, len(items), CHUNK):
            yield items[start : start + CHUNK]
            bar.update(min(CHUNK, len(items) - start))


def _classify(pipe, examples, glue: str | None, progress: bool):
    config = pipe.config
    # transformers' rule: one output without a problem_type is regression
    problem = config.extra.get("problem_type") or ("regression" if config.num_labels == 1 else "single_label_classification")
    label2id = _label_ids(config, glue)
    inputs = [{"text": e.text, "text_pair": e.text_pair} if e.text_pair is not None else e.text for e in examples]
    logits = []
    for chunk in _batches(inputs, progress, "scoring"):
        for result in pipe(chunk, top_k=None, function_to_apply="none"):
            row = np.zeros(config.num_labels)
            for item in result:
                label = item["label"]
                row[config.label2id[label] if label in config.label2id else _label_index(label)] = item["score"]
            logits.append(row)
    from .train.features import predict_text  # numpy only

    predictions = predict_text(np.stack(logits), problem)
    references = []
    for number, e in enumerate(examples, 1):
        if e.label is None:
            raise UserError(f"example {number} has no label (name the column with --label-column)")
        if problem == "regression":
            references.append(float(e.label))
            continue
        names = e.label if isinstance(e.label, list) else [str(e.label)]
        for name in names:
            if name not in label2id:
                raise UserError(f"example {number}: label {name!r} is not one of the model's labels "
                                f"{', '.join(label2id)}")
        if problem == "multi_label_classification":
            hot = [0] * config.num_labels
            for name in names:
                hot[label2id[name]] = 1
            references.append(hot)
        else:
            references.append(label2id[names[0]])
    if glue:
        scores = metrics.glue(glue, predictions, references)
    else:
        scores = metrics.classification(predictions, references, problem, config.num_labels)
    id2name = {i: n for n, i in label2id.items()}
    rows = []
    for e, p, r in zip(examples, predictions, references):
        row = {"text": e.text} if e.text_pair is None else {"text": e.text, "text_pair": e.text_pair}
        if problem == "regression":
            row.update(prediction=float(p), label=float(r))
        elif problem == "multi_label_classification":
            row.update(prediction=[config.id2label[i] for i in np.flatnonzero(p)], label=e.label)
        else:
            row.update(prediction=id2name.get(int(p), config.id2label[int(p)]), label=id2name[int(r)])
        rows.append(row)
    return scores, rows


def _label_index(label: str) -> int:
    if label.startswith("LABEL_") and label[6:].isdigit():
        return int(label[6:])
    raise UserError(f"the model answered label {label!r}, not in its config's id2label")


def _label_ids(config, glue: str | None) -> dict[str, int]:
    """The data's label names -> the model's ids. A GLUE file's names map onto a model whose labels are
    LABEL_0, LABEL_1, ... in GLUE's order (Hugging Face `datasets`' order)."""
    label2id = dict(config.label2id)
    if glue:
        from .data.glue import get

        names = get(glue).labels
        if names and not set(names) <= set(label2id):
            if len(names) != config.num_labels:
                raise UserError(f"GLUE {glue} has {len(names)} labels, the model {config.num_labels} "
                                f"({', '.join(label2id)})")
            label2id = {name: i for i, name in enumerate(names)}
    return label2id


def _ner(pipe, examples, progress: bool):
    """Each word's tag is its first piece's (the pipeline without aggregation, whose tokens carry character
    offsets): what fine-tuning trained and what run_ner scores. Words the pipeline did not reach are "O"."""
    texts, starts = [], []
    for e in examples:
        first, at = {}, 0
        for w, word in enumerate(e.tokens):
            first[at] = w
            at += len(word) + 1
        texts.append(" ".join(e.tokens))
        starts.append(first)
    predicted = []
    for chunk_start, chunk in zip(range(0, len(texts), CHUNK), _batches(texts, progress, "tagging")):
        for k, tokens in enumerate(pipe(chunk, aggregation_strategy="none", ignore_labels=[])):
            first = starts[chunk_start + k]
            tags = ["O"] * len(first)
            for token in tokens:
                w = first.get(token["start"])
                if w is not None and tags[w] == "O":
                    tags[w] = token["entity"]
            predicted.append(tags)
    missing = [n for n, e in enumerate(examples, 1) if e.tags is None]
    if missing:
        raise UserError(f"sentence {missing[0]} has no tags (name the tag column with --tag-column / --label-column)")
    scores = metrics.ner(predicted, [e.tags for e in examples])
    rows = [{"tokens": e.tokens, "prediction": p, "tags": e.tags} for e, p in zip(examples, predicted)]
    return scores, rows


def _qa(pipe, examples, progress: bool):
    with_negative = any(e.is_impossible for e in examples)
    answers = {}
    for chunk in _batches(examples, progress, "answering"):
        results = pipe(question=[e.question for e in chunk], context=[e.context for e in chunk],
                       handle_impossible_answer=with_negative, **QA_SETTINGS)
        if isinstance(results, dict):
            results = [results]
        for e, r in zip(chunk, results):
            answers[e.id] = r["answer"]
    golds = {e.id: e.answers["text"] for e in examples}
    scores = metrics.squad_v2(answers, golds) if with_negative else metrics.squad(answers, golds)
    return scores, answers


def print_metrics(result: dict) -> None:
    print(f"{result['model']} on {result['data']} ({result['examples']:,} examples, {result['task']}):")
    per_type = {k: v for k, v in result["metrics"].items() if isinstance(v, dict)}
    for key, value in result["metrics"].items():
        if not isinstance(value, dict):
            print(f"  {key:<22}{value:.4f}" if isinstance(value, float) else f"  {key:<22}{value}")
    if per_type:
        print(f"  {'type':<8}{'precision':>10}{'recall':>10}{'f1':>10}{'number':>8}")
        for name, v in per_type.items():
            print(f"  {name:<8}{v['precision']:>10.4f}{v['recall']:>10.4f}{v['f1']:>10.4f}{v['number']:>8}")
