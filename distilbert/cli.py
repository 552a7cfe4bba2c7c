"""The `distilbert` command: a table of subcommands, each a plain function that Python can call too.

Heavy imports (torch, onnxruntime) happen inside the commands. A user mistake is one line on stderr and
exit status 2, never a traceback (unless --debug or DISTILBERT_DEBUG=1 asks for it); anything else is our
bug, and Python prints its traceback.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .backends import BACKENDS
from .precisions import ALIASES, ONNX_FILES, PRECISIONS
from .config import FAMILIES
from .errors import UserError
from .onnx.export import DEFAULT_OPSET, QUANTIZATIONS
from .pipelines.features import NO_POOLING, POOLINGS
from .pipelines.token_classification import STRATEGIES
from .tasks import TASKS
from .train.data import UNITS

DEFAULT_MODEL = "distilbert-base-uncased"
PROGRESS_OVER = 200  # lines; a progress bar on stderr for longer inputs
CHUNK = 512  # texts handed to a pipeline at once (it sorts each chunk by length)


# --- commands -------------------------------------------------------------------------------------


def fill_mask(text: list[str], model: str = DEFAULT_MODEL, top_k: int = 5, targets: list[str] | None = None,
              json_output: bool = False, backend: str | None = None, precision: str = "fp32",
              threads: int | None = None) -> None:
    """Predict the [MASK] tokens of each TEXT."""
    from .pipelines import pipeline

    if not text or not all(t.strip() for t in text):
        raise UserError("no text given: pass a text with [MASK], e.g. \"Hello I'm a [MASK] model.\"")
    fill = pipeline("fill-mask", model=model, backend=backend, precision=precision, threads=threads)
    result = fill(text if len(text) > 1 else text[0], top_k=top_k, targets=targets)
    if json_output:
        print(json.dumps(result, ensure_ascii=False))
        return
    per_text = result if len(text) > 1 else [result]
    for t, answer in zip(text, per_text):
        per_mask = answer if answer and isinstance(answer[0], list) else [answer]
        for m, predictions in enumerate(per_mask):
            title = t if len(per_mask) == 1 else f"{t}  (mask {m + 1} of {len(per_mask)})"
            print(title)
            width = max(len(p["token_str"]) for p in predictions)
            print(f"  {'score':>7}  {'token':<{width}}  sequence")
            for p in predictions:
                print(f"  {p['score']:7.4f}  {p['token_str']:<{width}}  {p['sequence']}")
        print()


def classify(text: list[str] | None = None, file: str | None = None, model: str = DEFAULT_MODEL,
             top_k: int | None = None, pairs: bool = False, json_output: bool = False, backend: str | None = None,
             precision: str = "fp32", threads: int | None = None, batch_size: int = 32, output: str | None = None,
             ray: bool = False, address: str | None = None, num_actors: int | None = None, column: str | None = None,
             pair_column: str | None = None, ship_model: bool = False) -> None:
    """Classify each TEXT, or each line of --file (or stdin); with --pairs each line is A<TAB>B."""
    from .pipelines import pipeline

    if ray and (top_k is not None or pairs):
        raise UserError("--ray gives each text's best label and score: no --top-k; for pairs use --pair-column")
    _no_output_without_ray(output, ray, "labels")
    if _ray_job("text-classification", ray, _one_input(text, file), output, model, backend, precision, threads,
                batch_size, address, num_actors, column, ship_model, pair_column=pair_column):
        return

    items = _inputs(text, file, pairs)
    classifier = pipeline("text-classification", model=model, backend=backend, precision=precision, threads=threads,
                          batch_size=batch_size)
    options = {} if top_k is None else {"top_k": top_k}
    for chunk in _chunks(items, "classifying"):
        for item, answer in zip(chunk, classifier(chunk, **options)):
            if not options and isinstance(item, str):
                answer = [answer]  # what the pipeline answers for this text alone
            if json_output:
                print(json.dumps(answer, ensure_ascii=False))
                continue
            title = item if isinstance(item, str) else f"{item['text']}  |  {item['text_pair']}"
            print(title)
            for row in answer if isinstance(answer, list) else [answer]:
                print(f"  {row['score']:7.4f}  {row['label']}")


def ner(text: list[str] | None = None, file: str | None = None, model: str = DEFAULT_MODEL,
        aggregation: str = "simple", stride: int | None = None, json_output: bool = False, backend: str | None = None,
        precision: str = "fp32", threads: int | None = None, batch_size: int = 32, output: str | None = None,
        ray: bool = False, address: str | None = None, num_actors: int | None = None, column: str | None = None,
        ship_model: bool = False) -> None:
    """Named entities in each TEXT, or in each line of --file (or stdin)."""
    from .pipelines import pipeline

    _no_output_without_ray(output, ray, "entities")
    if _ray_job("token-classification", ray, _one_input(text, file), output, model, backend, precision, threads,
                batch_size, address, num_actors, column, ship_model, aggregation_strategy=aggregation, stride=stride):
        return

    items = _inputs(text, file)
    tagger = pipeline("token-classification", model=model, backend=backend, precision=precision, threads=threads,
                      batch_size=batch_size, aggregation_strategy=aggregation, stride=stride)
    for chunk in _chunks(items, "tagging"):
        for item, entities in zip(chunk, tagger(chunk)):  # each: what the pipeline answers for this text alone
            if json_output:
                print(json.dumps(entities, ensure_ascii=False))
            else:
                _print_entities(item, entities)


def answer(model: str = DEFAULT_MODEL, question: str | None = None, context: str | None = None,
           context_file: str | None = None, top_k: int = 1, json_output: bool = False, backend: str | None = None,
           precision: str = "fp32", threads: int | None = None) -> None:
    """Answer a question from a context, or each {"question", "context"} JSON line on stdin."""
    from .pipelines import pipeline

    if context is not None and context_file is not None:
        raise UserError("give --context or --context-file, not both")
    if question is None and (context is not None or context_file is not None):
        flag = "--context" if context is not None else "--context-file"
        raise UserError(f"{flag} needs a --question (or pipe JSON lines with a question and a context each)")
    if question is not None:
        if context_file is not None:
            context = _read_text(context_file)
        if context is None:
            raise UserError("--question needs a context: add --context TEXT or --context-file FILE")
        items = [_question(question, context, "")]
    else:
        items = _read_questions()
    qa = pipeline("question-answering", model=model, backend=backend, precision=precision, threads=threads)
    for chunk in _chunks(items, "answering"):
        results = qa(chunk, top_k=top_k)
        for item, result in zip(chunk, [results] if len(chunk) == 1 else results):  # a list of one comes back bare
            if json_output:
                print(json.dumps(result, ensure_ascii=False))
                continue
            print(f"question: {item['question']}")
            print(f"  {'score':>7}  {'start':>6}  {'end':>6}  answer")
            for row in result if isinstance(result, list) else [result]:
                print(f"  {row['score']:7.4f}  {row['start']:>6}  {row['end']:>6}  {row['answer']}")
            print()
        sys.stdout.flush()


def embed(file: str = "-", model: str = DEFAULT_MODEL, pooling: str | None = None, normalize: bool = False,
          output: str | None = None, batch_size: int = 32, backend: str | None = None, precision: str = "fp32",
          threads: int | None = None, ray: bool = False, address: str | None = None, num_actors: int | None = None,
          column: str | None = None, ship_model: bool = False) -> None:
    """Embed each line of FILE (or stdin): JSON arrays on stdout, or one .npy matrix with --output."""
    import numpy as np

    from .pipelines import pipeline

    if pooling == NO_POOLING and (output is not None or ray):
        raise UserError("--pooling none gives a (tokens, dim) matrix per line, of different lengths, which "
                        f"{'--ray' if ray else '--output'} cannot write; leave it out to print one JSON matrix a line")
    if _ray_job("feature-extraction", ray, file, output, model, backend, precision, threads, batch_size, address,
                num_actors, column, ship_model, pooling=pooling, normalize=normalize or None):
        return

    lines = _read_lines(file)
    if output is not None:
        _check_writable(Path(output))
    extract = pipeline("feature-extraction", model=model, backend=backend, batch_size=batch_size, precision=precision,
                       threads=threads)
    pooling = pooling or extract.pooling or "mean"
    vectors = []
    for chunk in _chunks(lines, "embedding"):
        if pooling == NO_POOLING:
            for matrix in extract(chunk, pooling=pooling):  # (tokens, dim) each
                print(json.dumps([[round(float(x), 7) for x in v] for v in matrix]))
            continue
        vectors.append(np.atleast_2d(extract(chunk, pooling=pooling, normalize=normalize or None)))
        if output is None:
            for v in vectors.pop():
                print(json.dumps([round(float(x), 7) for x in v]))
    if output is not None:
        np.save(output, np.concatenate(vectors).astype(np.float32))
        print(f"wrote {len(lines)} embeddings of size {vectors[0].shape[1]} to {output}", file=sys.stderr)


def tokenize(file: str = "-", model: str = DEFAULT_MODEL, pairs: bool = False, max_length: int | None = None) -> None:
    """Token ids for each line of FILE (or stdin); with --pairs each line is A<TAB>B."""
    from .tokenizer import Tokenizer

    lines = _read_lines(file)
    tokenizer = Tokenizer.from_pretrained(_tokenizer_folder(model))
    firsts, seconds = lines, None
    if pairs:
        firsts, seconds = [], []
        for number, line in enumerate(lines, 1):
            if "\t" not in line:
                raise UserError(f"line {number} has no tab: with --pairs every line must be A<TAB>B")
            a, b = line.split("\t", 1)
            firsts.append(a)
            seconds.append(b)
    if max_length is not None and max_length < (4 if pairs else 2):
        raise UserError(f"--max-length {max_length} leaves no room for the special tokens")
    start = 0
    for chunk in _chunks(firsts, "tokenizing"):
        second = None if seconds is None else seconds[start : start + len(chunk)]
        start += len(chunk)
        enc = tokenizer(chunk, second, truncation=True, max_length=max_length)
        for i in range(len(chunk)):
            print(json.dumps({k: enc[k][i] for k in ("input_ids", "token_type_ids", "attention_mask")}))


def info(model: str) -> None:
    """Family, sizes, heads, parameter count and vocabulary of MODEL."""
    from .checkpoint import natural_task
    from .config import Config
    from .hub import resolve
    from .tokenizer import Tokenizer

    folder = resolve(model)
    config = Config.from_file(folder / "config.json")
    count, where = _parameter_count(folder, config)
    task = natural_task(folder, config)  # as loading infers it: architectures, else the weights' keys
    rows = [
        ("model", str(folder)),
        ("family", config.family),
        ("architecture", ", ".join(config.architectures or ["(not given)"])),
        ("task", task),
        ("layers", config.n_layers),
        ("hidden size", config.dim),
        ("attention heads", f"{config.n_heads} (size {config.head_dim})"),
        ("feed-forward size", config.hidden_dim),
        ("activation", config.activation),
        ("max positions", f"{config.max_position_embeddings}{' (sinusoidal)' if config.sinusoidal_pos_embds else ''}"),
        ("token types", config.type_vocab_size),
        ("parameters", f"{count:,} ({where})"),
        ("vocabulary", config.vocab_size),
    ]
    if task in ("text-classification", "token-classification"):
        rows.append(("labels", ", ".join(config.id2label[i] for i in sorted(config.id2label))))
    try:
        tokenizer = Tokenizer.from_pretrained(folder)
        rows.append(("tokenizer", f"{tokenizer.vocab_size} tokens, lower case: {tokenizer.init_kwargs.get('do_lower_case', 'as saved')}, max length {tokenizer.model_max_length}"))
    except UserError as e:
        rows.append(("tokenizer", f"none ({e})"))
    for label, value in rows:
        print(f"{label + ':':<19}{value}")


def export(model: str, out_dir: str, task: str | None = None, opset: int = DEFAULT_OPSET, optimize: bool = False,
           quantize: str | None = None, drift_text: str | None = None, with_attentions: bool = False,
           format: str = "onnx", precisions: str | None = None) -> None:
    """Export MODEL to OUT_DIR in the hub's layout (config and tokenizer, graphs under onnx/: model.onnx and one
    model_<precision>.onnx per --precision), validated against PyTorch; or with --format savedmodel as a
    TensorFlow SavedModel, validated against the Keras model."""
    if format == "savedmodel":
        if precisions is not None:
            raise UserError("--precision is for ONNX exports only; leave it out with --format savedmodel")
        _export_savedmodel(model, out_dir, task, opset, optimize, quantize, drift_text, with_attentions)
        return
    from .precisions import parse_list

    wanted = parse_list(precisions or "fp32")  # an unknown name fails here, before PyTorch is imported
    try:
        from .onnx.export import export as run_export, write_report
    except ImportError as e:
        raise UserError(f"export needs the torch extra ({e.name} is missing): pip install 'distilbert[torch]'") from None
    texts = _read_lines(drift_text) if drift_text else None
    report = run_export(model, out_dir, task=task, opset=opset, optimize=optimize, quantize=quantize,
                        drift_texts=texts, log=lambda line: print(line, file=sys.stderr), with_attentions=with_attentions,
                        precisions=wanted)
    path = write_report(Path(out_dir), "export_report.json", report)
    graphs = ", ".join(f"onnx/{ONNX_FILES[p]}" for p in report["precisions"])
    print(f"exported {report['task']} to {Path(out_dir)}: {graphs} (report: {path})")


def _export_savedmodel(model, out_dir, task, opset, optimize, quantize, drift_text, with_attentions) -> None:
    onnx_only = [flag for flag, given in (("--opset", opset != DEFAULT_OPSET), ("--optimize", optimize),
                                          ("--quantize", quantize), ("--drift-text", drift_text),
                                          ("--with-attentions", with_attentions)) if given]
    if onnx_only:
        raise UserError(f"{' and '.join(onnx_only)} {'is' if len(onnx_only) == 1 else 'are'} for ONNX exports only; "
                        "leave it out with --format savedmodel")
    try:
        from .keras import export_savedmodel
    except ImportError as e:
        raise UserError(f"--format savedmodel needs the tf extra: {e}") from None
    from .onnx.files import write_report

    report = export_savedmodel(model, out_dir, task, log=lambda line: print(line, file=sys.stderr))
    path = write_report(Path(out_dir), "export_report.json", report)
    print(f"exported {report['task']} to {out_dir} as a TensorFlow SavedModel (report: {path})")


def serve(model: str, task: str | None = None, host: str = "127.0.0.1", port: int = 8080, backend: str | None = None,
          precision: str = "fp32", threads: int | None = None, max_batch_tokens: int = 1024,
          max_concurrent_requests: int = 512, max_client_batch_size: int = 32, payload_limit: int = 2_000_000,
          api_key: str | None = None, workers: int = 1, pooling: str | None = None, compile: bool = False) -> None:
    """Serve MODEL over HTTP (TEI routes, OpenAI embeddings, the Hugging Face Inference API) until SIGTERM."""
    try:
        from .serve import Settings, run
    except ImportError as e:
        raise UserError(f"serve needs the serve extra ({e.name} is missing): pip install 'distilbert[serve]'") from None
    settings = Settings(model=model, task=task, backend=backend, precision=precision, threads=threads,
                        max_batch_tokens=max_batch_tokens, max_concurrent_requests=max_concurrent_requests,
                        max_client_batch_size=max_client_batch_size, payload_limit=payload_limit, api_key=api_key,
                        pooling=pooling, compile=compile)
    print(f"serving {model} on http://{host}:{port} (docs at /docs)", file=sys.stderr, flush=True)
    run(settings, host=host, port=port, workers=workers)


def prepare_data(text_files: list[str], tokenizer: str, out: str, max_length: int = 512, unit: str = "line",
                 workers: int | None = None) -> None:
    """Tokenise raw text in parallel into uint16 token shards for training."""
    from .train.data import prepare

    meta = prepare(text_files, tokenizer, out, max_length=max_length, unit=unit, workers=workers)
    print(f"{meta['sequences']:,} sequences, {meta['tokens']:,} tokens in {len(meta['shards'])} shard(s) under {out} "
          f"(dropped: {meta['dropped_short']:,} short, {meta['dropped_unknown']:,} mostly [UNK])")


def new_model(out: str, tokenizer: str, family: str = "bert", dim: int = 256, layers: int = 4, heads: int = 4,
              hidden_dim: int | None = None, max_positions: int = 512, seed: int = 0) -> None:
    """A freshly initialised masked LM to pretrain."""
    from .train.student import new_model as make

    net = make(out, tokenizer, family, dim, layers, heads, hidden_dim, max_positions, seed)
    print(f"wrote a new {family} masked LM ({sum(p.numel() for p in net.parameters()):,} parameters) to {out}")


def init_student(teacher: str, out: str, layers: str | None = None) -> None:
    """A DistilBERT student from a BERT teacher: half its layers, its embeddings and masked-LM head."""
    from .train.student import init_student as make

    chosen = None
    if layers:
        try:
            chosen = [int(x) for x in layers.split(",")]
        except ValueError:
            raise UserError(f"--layers must be comma-separated layer numbers such as 0,2,4,7,9,11, got {layers!r}") from None
    _, used = make(teacher, out, chosen)
    print(f"wrote a {len(used)}-layer student to {out} (teacher layers {','.join(map(str, used))})")


def _train(resume: bool, recipe_file: str | None, **settings) -> None:
    from .train.distill import train
    from .train.recipe import Recipe

    recipe = Recipe.from_file(recipe_file) if recipe_file else Recipe()
    # with --resume, these must equal the run's own settings: those of the recipe file and the flags given
    given = set(json.loads(Path(recipe_file).read_text(encoding="utf-8"))) if recipe_file else set()
    given |= {k for k, v in settings.items() if v is not None or k == "teacher"}
    recipe = recipe.replace(**settings)
    result = train(recipe, resume=resume, given=given)
    print(f"trained {result['steps']} steps; the model is in {result['out']}")


def distill(teacher: str, student: str, data: str, out: str, resume: bool = False, recipe: str | None = None,
            **settings) -> None:
    """Distil TEACHER into STUDENT with the triple loss."""
    _train(resume, recipe, teacher=teacher, student=student, data=data, out=out, **settings)


def pretrain(model: str, data: str, out: str, resume: bool = False, recipe: str | None = None, **settings) -> None:
    """Plain masked-LM training of MODEL (the distillation loop with the teacher's terms off)."""
    settings.update(alpha_ce=0.0, alpha_cos=0.0, alpha_mse=0.0)
    _train(resume, recipe, student=model, data=data, out=out, teacher=None, **settings)


def evaluate_mlm(model: str, text: list[str], max_length: int = 128, seed: int = 0, data: str | None = None,
                 json_output: bool = False) -> None:
    """Masked-LM accuracy and perplexity of MODEL on held-out text (beside a unigram model of --data)."""
    from .train.evaluate import evaluate_mlm as run, read_counts, read_texts

    counts = read_counts(data) if data is not None else None
    result = run(model, read_texts(text), max_length=max_length, seed=seed, counts=counts)
    if json_output:
        print(json.dumps(result))
        return
    print(f"{result['model']}: accuracy {result['accuracy']:.4f}, perplexity {result['perplexity']:.2f} "
          f"on {result['masked_tokens']:,} masked tokens of {result['texts']:,} texts ({result['tokens_per_second']:,.0f} tokens/s)")
    if counts is not None:
        print(f"unigram model of {data}: accuracy {result['unigram_accuracy']:.4f}, "
              f"perplexity {result['unigram_perplexity']:.2f} on the same tokens")


def finetune(resume: bool = False, overwrite: bool = False, recipe: str | None = None, **settings) -> None:
    """Fine-tune a DistilBERT or BERT checkpoint for classification, NER or QA."""
    from .train.finetune import FinetuneRecipe, finetune as run

    base = FinetuneRecipe.from_file(recipe) if recipe else FinetuneRecipe()
    # with --resume, these must equal the run's own settings: those of the recipe file and the flags given
    given = set(json.loads(Path(recipe).read_text(encoding="utf-8"))) if recipe else set()
    given |= {k for k, v in settings.items() if v is not None}
    result = run(base.replace(**settings), resume=resume, overwrite=overwrite, given=given)
    best = result["best"]
    print(f"best {result['metric']} {best[result['metric']]:.4f} at step {best['step']} of {result['steps']}; "
          f"the model is in {result['out']}")


def evaluate(model: str, data: str, task: str | None = None, glue: str | None = None, backend: str | None = None,
             precision: str = "fp32", json_output: bool = False, predictions: str | None = None,
             batch_size: int = 32, threads: int | None = None, text_column: str | None = None,
             text_pair_column: str | None = None, label_column: str | None = None, tag_column: int = -1,
             limit: int | None = None) -> None:
    """Score MODEL on labelled data through the pipelines (PyTorch, ONNX or int8)."""
    from .data import Columns
    from .evaluate import evaluate as run, print_metrics

    columns = Columns(text_column, text_pair_column, label_column, tag_column)
    result = run(model, task, data, glue=glue, backend=backend, precision=precision, batch_size=batch_size,
                 threads=threads, columns=columns, predictions_file=predictions, limit=limit)
    if json_output:
        print(json.dumps(result["metrics"]))
    else:
        print_metrics(result)


def glue(model: str, data_dir: str, out: str, tasks: list[str] | None = None, seeds: int = 1,
         recipe: str | None = None, overwrite: bool = False, **settings) -> None:
    """Fine-tune and score MODEL on every GLUE task in --data-dir: the model card's table."""
    from .train.glue import run_glue

    run_glue(model, data_dir, out, tasks=tasks, seeds=seeds, recipe=recipe, overwrite=overwrite,
             settings={k: v for k, v in settings.items() if v is not None})


def plot_run(run: str, output: str | None = None) -> None:
    """Draw a training run's losses (and validation metrics) as a PNG."""
    from .train.plot import plot_run as draw

    print(f"wrote {draw(run, output)}")


def bias(model: str, probes: str = "all", out: str | None = None, limit: int | None = None, data: str | None = None,
         backend: str | None = None, precision: str = "fp32", threads: int | None = None) -> None:
    """Bias probes: the model card's templates (Kurita et al. 2019 scores) and CrowS-Pairs."""
    from .analysis.bias import run

    run(model, probes, out, limit=limit, data=data, backend=backend, precision=precision, threads=threads, log=print)


def attention(model: str, text: str, out: str, text_b: str | None = None, layer: int | None = None,
              head: int | None = None, hide_special: bool = False, backend: str | None = None) -> None:
    """Draw attention maps: a self-contained HTML view (head and model views) or a PNG grid."""
    from .analysis.attention import draw

    print(f"wrote {draw(model, text, text_b, out, layer=layer, head=head, hide_special=hide_special, backend=backend)}")


# --- helpers ------------------------------------------------------------------------------------------


def _ray_job(task: str, ray: bool, file: str | None, output: str | None, model: str, backend: str | None,
             precision: str, threads: int | None, batch_size: int, address: str | None, num_actors: int | None,
             column: str | None, ship_model: bool, pair_column: str | None = None, **options) -> bool:
    """A command's --ray path (distilbert.ray): FILE through the task's pipeline on a Ray cluster, into a Parquet
    folder in FILE's order. False without --ray, after checking that no Ray-only option was given."""
    if not ray:
        given = [flag for flag, value in (("--address", address), ("--num-actors", num_actors), ("--column", column),
                                          ("--pair-column", pair_column), ("--ship-model", ship_model)) if value]
        if given:
            raise UserError(f"{' and '.join(given)} need{'s' if len(given) == 1 else ''} --ray")
        return False
    if file in (None, "-"):
        raise UserError("--ray reads one input file (text, JSONL or Parquet) that every worker can reach, not stdin")
    if output is None:
        raise UserError("--ray writes Parquet: pass --output OUT.parquet (a folder of part files)")
    try:
        from . import ray as on_ray
    except ImportError as e:
        raise UserError(f"--ray needs the ray extra ({e.name} is missing): pip install 'distilbert[ray]'") from None
    on_ray.run_job(task, file, output, model=model, column=column, pair_column=pair_column, address=address,
                   num_actors=num_actors, cpus_per_actor=threads or 1, batch_size=batch_size,
                   backend=backend or "onnx", precision=precision, ship_model=ship_model,
                   blank_lines=task == "feature-extraction", **options)  # the lines each command reads alone
    return True


def _no_output_without_ray(output: str | None, ray: bool, what: str) -> None:
    if output is not None and not ray:
        raise UserError(f"--output is the Parquet folder of --ray; without --ray the {what} go to stdout")


def _one_input(text: list[str] | None, file: str | None) -> str | None:
    """The input file of a command that takes texts or --file: --file, or its one positional argument."""
    return file or (text[0] if text and len(text) == 1 else None)


def _read_lines(file: str) -> list[str]:
    if file == "-":
        if sys.stdin is None or sys.stdin.isatty():
            raise UserError("no input: give a FILE, or pipe text into the command ('-' reads stdin)")
        data = sys.stdin.buffer.read()
        name = "stdin"
    else:
        try:
            data = Path(file).read_bytes()
        except FileNotFoundError:
            raise UserError(f"input file {file} does not exist") from None
        except IsADirectoryError:
            raise UserError(f"input {file} is a folder; give a text file with one input per line") from None
        name = file
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{name} is not UTF-8 text (byte {e.start}); convert it to UTF-8") from None
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise UserError(f"{name} is empty: give one input text per line")
    return lines


def _inputs(text: list[str] | None, file: str | None, pairs: bool = False) -> list:
    """Texts given as arguments, else one per line of --file or stdin; with pairs, {"text", "text_pair"} from A<TAB>B."""
    if text and file:
        raise UserError("give texts as arguments or --file, not both")
    if text:
        lines = list(text)
        for t in lines:
            if not t.strip():
                raise UserError("empty text: give a text, or --file with one text per line")
    else:
        lines = [line for line in _read_lines(file or "-") if line.strip()]
    if not pairs:
        return lines
    out = []
    for number, line in enumerate(lines, 1):
        if "\t" not in line:
            raise UserError(f"line {number} has no tab: with --pairs every input must be A<TAB>B")
        a, b = line.split("\t", 1)
        out.append({"text": a, "text_pair": b})
    return out


def _read_text(file: str) -> str:
    """A whole text file (a context)."""
    try:
        data = Path(file).read_bytes()
    except FileNotFoundError:
        raise UserError(f"input file {file} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"input {file} is a folder; give a text file") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{file} is not UTF-8 text (byte {e.start}); convert it to UTF-8") from None


def _read_questions() -> list[dict]:
    """{"question", "context"} per stdin line (other keys are ignored; blank lines skipped)."""
    if sys.stdin is None or sys.stdin.isatty():
        raise UserError('no question: give --question with --context or --context-file, or pipe JSON lines '
                        '{"question": ..., "context": ...} into the command')
    items = []
    for number, line in enumerate(_read_lines("-"), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f'line {number} is not valid JSON ({e.msg}): give {{"question": ..., "context": ...}} '
                            "per line") from None
        if not isinstance(item, dict):
            raise UserError(f'line {number}: expected {{"question": ..., "context": ...}}, got {type(item).__name__}')
        if "context" not in item:
            raise UserError(f'line {number}: a question needs a context: the line has no "context"')
        if "question" not in item:
            raise UserError(f'line {number}: a context without a question: the line has no "question"')
        items.append(_question(item["question"], item["context"], f"line {number}: "))
    return items


def _question(question, context, where: str) -> dict:
    for name, text in (("question", question), ("context", context)):
        if not isinstance(text, str):
            raise UserError(f"{where}the {name} must be text, got {type(text).__name__}")
        if not text.strip():
            raise UserError(f"{where}empty {name}: give a non-empty {name}")
    return {"question": question, "context": context}


def _chunks(items: list, what: str) -> Iterator[list]:
    from tqdm import tqdm

    with tqdm(total=len(items), desc=what, unit="line", file=sys.stderr, disable=len(items) <= PROGRESS_OVER) as bar:
        for start in range(0, len(items), CHUNK):
            chunk = items[start : start + CHUNK]
            yield chunk
            bar.update(len(chunk))


def _print_entities(text: str, entities: list[dict]) -> None:
    print(text)
    if not entities:
        print("  (no entities)\n")
        return
    kind = "entity_group" if "entity_group" in entities[0] else "entity"
    width = max(len(kind), *(len(e[kind]) for e in entities))
    index = "index" in entities[0]
    print(f"  {kind:<{width}}  {'score':>6}  {'index  ' if index else ''}{'start':>5}  {'end':>5}  word")
    for e in entities:
        at = f"{e['index']:>5}  " if index else ""
        print(f"  {e[kind]:<{width}}  {e['score']:6.4f}  {at}{e['start']:>5}  {e['end']:>5}  {e['word']}")
    print()


def _check_writable(path: Path) -> None:
    if path.is_dir():
        raise UserError(f"--output {path} is a folder; give a file name such as embeddings.npy")
    if not path.parent.exists():
        raise UserError(f"cannot write {path}: folder {path.parent} does not exist")


def _tokenizer_folder(model: str) -> Path:
    from .hub import resolve

    return resolve(model, need="tokenizer")


def _parameter_count(folder: Path, config) -> tuple[int, str]:
    """Counted from the weight files' headers (no tensors read), else computed from config.json."""
    files = sorted(folder.glob("*.safetensors"))
    if files:
        total = 0
        for path in files:
            with open(path, "rb") as f:
                try:
                    size = int.from_bytes(f.read(8), "little")
                    header = json.loads(f.read(size))
                except (ValueError, UnicodeDecodeError):
                    raise UserError(f"{path} is corrupted (unreadable header); download or save the model again") from None
            for key, entry in header.items():
                if key != "__metadata__":
                    n = 1
                    for d in entry["shape"]:
                        n *= d
                    total += n
        return total, "counted in the weights"
    return config.parameter_count(), "encoder, computed from config.json"


# --- the table ----------------------------------------------------------------------------------------
#
# Each option is declared once, in OPTIONS (shared) or inline in its command's list (its own). Its default,
# and whether it is required, come from the command function's signature; its choices from the source
# tables. A positional argument is an Option whose first flag has no dashes. A bool default is a switch.
# Adding a command: a plain function above, then one COMMANDS row naming its options; its docstring's first
# line is its help.


@dataclass(frozen=True)
class Option:
    flags: tuple[str, ...]  # ("--model", "-m"); ("model",) for a positional argument
    help: str | None = None
    type: Callable | None = None  # default: int or float when the signature's default is one, else str
    choices: tuple | None = None
    nargs: str | int | None = None
    metavar: str | None = None
    dest: str | None = None  # the function's parameter, when it is not the flag's name
    action: type[argparse.Action] | str | None = None


def option(*flags: str, **spec) -> Option:
    return Option(flags, **spec)


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


EXPORT_FORMATS = ("onnx", "savedmodel")

OPTIONS: dict[str, Option] = {o.flags[0]: o for o in (
    # what to run, and on what
    option("model", help="model folder or hub id"),
    option("--model", "-m", help="model folder or hub id"),
    option("--backend", choices=BACKENDS,
           help="runtime; keras runs on TensorFlow, the tf extra; openvino runs the ONNX export on OpenVINO, the "
                "openvino extra (default: onnx for an exported folder or a cached export, else torch)"),
    option("--precision", choices=(*PRECISIONS, *ALIASES),
           help="fp32 exact; int8 (q8), fp16, q4 and q4f16 run the folder's onnx/model_<precision>.onnx; bf16 holds "
                "torch weights in bfloat16, or runs OpenVINO in bfloat16 (--backend openvino)"),
    option("--threads", type=_positive, help="compute threads (default: the cores this process may use)"),
    option("--task", choices=tuple(TASKS), help="default: the head the checkpoint was saved with"),
    option("--tokenizer", help="model folder or hub id whose tokenizer to use"),
    # inputs and outputs
    option("text", nargs="+", help="text(s) with [MASK]"),
    option("file", help="one text per line; - or nothing reads stdin"),
    option("--text", nargs="+", help="held-out text file(s), one text a line"),
    option("--json", dest="json_output", help="print the result as JSON"),
    option("out", help="folder to write"),
    option("--out", help="folder to write"),
    option("--max-length", type=_positive, help="tokens per text, [CLS] and [SEP] included (default: the tokenizer's)"),
    option("--batch-size", type=_positive),
    option("--seed", type=int),
    # fill-mask
    option("--top-k", type=_positive),
    option("--targets", nargs="+", help="score only these words"),
    # embed
    option("--pooling", choices=POOLINGS, help="default: the folder's sentence-transformers setting, else mean"),
    option("--normalize", help="L2-normalise each embedding"),
    # tokenize
    option("--pairs", help="each line is A<TAB>B"),
    # export
    option("out_dir", help="folder to write model.onnx, config.json and the tokenizer into"),
    option("--opset", type=_positive),
    option("--optimize", help="ONNX Runtime's transformer fusions"),
    option("--quantize", choices=QUANTIZATIONS, help="also write model_quantized.onnx (dynamic int8)"),
    option("--drift-text", help="text file (one text a line; the first 512 are used) to measure each precision's drift on"),
    option("--format", choices=EXPORT_FORMATS, help="onnx, or savedmodel: a TensorFlow SavedModel through Keras (the tf extra)"),
    # training
    option("text_files", nargs="+", metavar="TEXT_FILE"),
    option("--unit", choices=UNITS, help="a document is a line, or lines up to a blank one"),
    option("--workers", type=_positive, help="tokenising processes (default: all cores)"),
    option("--family", choices=FAMILIES),
    option("--dim", type=_positive),
    option("--layers", type=_positive),
    option("--heads", type=_positive),
    option("--hidden-dim", type=_positive, help="feed-forward width (default 4 x dim)"),
    option("--max-positions", type=_positive),
    option("teacher", help="teacher folder or hub id (a masked LM)"),
    option("--teacher"),
    option("--student"),
    option("--data", help="a folder made by prepare-data"),
    option("--resume", help="continue the run in --out from its last checkpoint"),
    option("--recipe", help="JSON recipe file; flags override it"),
    option("run", help="a training output folder (with log.jsonl)"),
    # scale out on Ray (the ray extra; distilbert.ray)
    option("--ray", help="run on a Ray cluster: the input is a text, JSONL or Parquet file; --output a Parquet folder"),
    option("--address", help="the Ray cluster: auto (the one this machine joined) or ray://HOST:10001 "
                             "(default: start a local Ray)"),
    option("--num-actors", type=_positive, help="model copies on the cluster (default: its CPUs / --threads)"),
    option("--column", help="the text column of a JSONL or Parquet input (default text); every column is kept"),
    option("--pair-column", help="the second text of each pair, from a JSONL or Parquet input"),
    option("--ship-model", help="send the model folder through Ray's object store instead of opening it by path "
                                "on every node"),
)}

RUNTIME = ["--model", "--backend", "--precision", "--threads"]
RAY = ["--ray", "--address", "--num-actors", "--column", "--ship-model"]  # with --threads: CPUs per actor


def recipe_options() -> list[Option]:
    """One flag per Recipe setting; an unset flag keeps the recipe file's value (or the Recipe default)."""
    import dataclasses

    from .train.recipe import Recipe

    options = []
    for f in dataclasses.fields(Recipe):
        if f.name in ("student", "teacher", "data", "out", "extra"):
            continue
        flag, default = "--" + f.name.replace("_", "-"), f.default
        said = f"recipe default {default}"
        if isinstance(default, bool):
            options.append(option(flag, type=bool, help=said))
        elif isinstance(default, tuple):
            options.append(option(flag, type=float, nargs=len(default), help=said))
        elif f.name == "max_steps":
            options.append(option(flag, type=_positive, help="stop after this many optimizer steps"))
        elif f.name == "mlm_smoothing":
            options.append(option(flag, type=float, help=f"{said}, as the original; 0 for uniform masking"))
        else:
            options.append(option(flag, type=type(default), help=said))
    return options


GLUE_TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte")
TRAINED_TASKS = ("text-classification", "token-classification", "question-answering")
COLUMNS = [option("--text-column", help="the text's column (default text; NER JSONL: tokens)"),
           option("--text-pair-column", help="the second text's column, for pairs"),
           option("--label-column", help="the label's column (default label; NER JSONL: tags)"),
           option("--tag-column", type=int, help="CoNLL: the tag's column from 0, negative from the end")]
RUN_IDENTITY = ("model", "task", "train", "validation", "out", "glue", "data_dir", "teacher")  # not per GLUE task


def finetune_options(skip: tuple[str, ...] = ()) -> list[Option]:
    """One flag per FinetuneRecipe setting; an unset flag keeps the recipe file's value (or the default)."""
    import dataclasses

    from .train.finetune import FinetuneRecipe
    from .data.tables import PROBLEM_TYPES

    special = {
        "task": option("--task", choices=TRAINED_TASKS, help="recipe default text-classification"),
        "glue": option("--glue", choices=GLUE_TASKS, help="a GLUE task: its files' layout and labels "
                                                          "(with --data-dir: its train.tsv and dev file)"),
        "data_dir": option("--data-dir", help="GLUE folder with CoLA/, SST-2/, ... (with --glue)"),
        "train": option("--train", help="labelled training file: CSV/TSV/JSONL, CoNLL, SQuAD JSON, a GLUE TSV"),
        "validation": option("--validation", help="labelled validation file, scored every epoch"),
        "teacher": option("--teacher", help="a model fine-tuned on the same task and labels: distil it while training"),
        "problem_type": option("--problem-type", choices=PROBLEM_TYPES,
                               help="default: read from the labels (lists: multi-label; fractions: regression)"),
        "precision": option("--precision", choices=("auto", "fp32", "bf16", "fp16"),
                            help="autocast; auto (default): bf16 on GPUs that have it and on AMX CPUs, else fp32"),
        "adam_betas": option("--adam-betas", type=float, nargs=2, help="recipe default 0.9 0.999"),
        "tag_column": option("--tag-column", type=int, help="CoNLL: the tag's column from 0, negative from the end "
                                                           "(recipe default -1)"),
        "max_length": option("--max-length", type=_positive, help="tokens per row (default 128; QA 384)"),
        "learning_rate": option("--learning-rate", type=float, help="default 2e-5; QA 3e-5"),
        "max_tokens": option("--max-tokens", type=_positive,
                             help="padded tokens in a micro-batch (default batch size x max length)"),
        "eval_steps": option("--eval-steps", type=_positive, help="evaluate every N steps (default: every epoch)"),
        "early_stopping": option("--early-stopping", type=_positive,
                                 help="stop after N evaluations without a better main metric"),
        "metric": option("--metric", help="the main metric, which picks the model kept (default: the task's)"),
        "group_by_length": option("--group-by-length", action=argparse.BooleanOptionalAction,
                                  help="batches of like lengths, little padding (recipe default); --no-group-by-length: "
                                       "random batches padded to their longest row, as the Trainer's"),
        "warmup": option("--warmup", type=float, help="warm-up: a fraction of the steps, or steps (recipe default 0.1)"),
    }
    options = []
    for f in dataclasses.fields(FinetuneRecipe):
        if f.name in skip:
            continue
        if f.name in special:
            options.append(special[f.name])
            continue
        flag, default = "--" + f.name.replace("_", "-"), f.default
        if isinstance(default, float):
            options.append(option(flag, type=float, help=f"recipe default {default}"))
        elif isinstance(default, int) or f.type in ("int | None",):
            options.append(option(flag, type=_positive if f.name != "seed" else int,
                                  help=None if default is None else f"recipe default {default}"))
        else:
            options.append(option(flag, help=None if default is None else f"recipe default {default}"))
    return options


COMMANDS: dict[str, tuple[Callable, list[str | Option]]] = {
    "fill-mask": (fill_mask, ["text", *RUNTIME, "--top-k", "--targets", "--json"]),
    "classify": (classify, [option("text", nargs="*", help="text(s) to classify; none: one per line of --file or stdin"),
                            option("--file", "-f", help="one text per line (A<TAB>B with --pairs); - reads stdin"),
                            *RUNTIME, option("--top-k", type=_positive, help="this many labels per text, best first"),
                            "--pairs", "--batch-size", "--json", *RAY, "--pair-column",
                            option("--output", "-o", help="with --ray: the Parquet folder to write")]),
    "ner": (ner, [option("text", nargs="*", help="text(s) to tag; none: one per line of --file or stdin"),
                  option("--file", "-f", help="one text per line; - reads stdin"), *RUNTIME,
                  option("--aggregation", choices=STRATEGIES,
                         help="none: every token; simple: adjacent tokens of one tag joined; first, average, max: "
                              "one tag per word, from its first piece, its averaged scores or its surest piece"),
                  option("--stride", type=int,
                         help="tokens shared by the windows a long text is split into (default: a quarter of one)"),
                  "--batch-size", "--json", *RAY,
                  option("--output", "-o", help="with --ray: the Parquet folder to write")]),
    "answer": (answer, [*RUNTIME,
                        option("--question", "-q",
                               help='the question (none: JSON lines {"question", "context"} on stdin)'),
                        option("--context", "-c", help="the text to find the answer in"),
                        option("--context-file", help="read the context from this UTF-8 file"),
                        option("--top-k", type=_positive, help="answers per question, best first"), "--json"]),
    "embed": (embed, ["file", *RUNTIME, option("--pooling", choices=(*POOLINGS, NO_POOLING),
                                               help="default: the folder's sentence-transformers setting, else "
                                                    "mean; none: each token's features, a matrix a line"),
                      "--normalize",
                      option("--output", "-o", help="write one float32 (lines, dim) matrix to this .npy file "
                                                    "(with --ray: a Parquet folder)"),
                      "--batch-size", *RAY]),
    "tokenize": (tokenize, ["file", "--model", "--pairs", "--max-length"]),
    "info": (info, ["model"]),
    "export": (export, ["model", "out_dir", "--task", "--opset", "--optimize",
                        option("--precision", dest="precisions", metavar="LIST",
                               help=f"graphs to write, comma-separated: {', '.join(ONNX_FILES)} (fp32 is always "
                                    "written; int8 is transformers.js's q8)"), "--quantize", "--drift-text",
                        option("--with-attentions", help="add the output `attentions` (batch, layers, heads, T, T), "
                                                         "for `distilbert attention` without PyTorch"), "--format"]),
    "serve": (serve, [
        option("model", help="model folder or hub id (an ONNX export runs without PyTorch)"), "--task",
        option("--host", help="address to listen on"), option("--port", type=_positive), "--backend", "--precision",
        option("--threads", type=_positive, help="compute threads per worker (default: the cores / --workers)"),
        option("--max-batch-tokens", type=_positive,
               help="padded tokens per model batch (on a CPU, larger batches run slower per token)"),
        option("--max-concurrent-requests", type=_positive, help="inputs in flight before new requests get 429"),
        option("--max-client-batch-size", type=_positive, help="inputs per request"),
        option("--payload-limit", type=_positive, help="request body bytes"),
        option("--api-key", help="require 'Authorization: Bearer KEY' on every route but /health"),
        option("--workers", type=_positive, help="processes, each with the model and its share of the cores"),
        "--pooling", option("--compile", action="store_true",
                            help="torch backend: torch.compile the network at start-up (20-40 s on a CPU; then "
                                 "about 13%% faster in bf16, 5%% in fp32)")]),
    "prepare-data": (prepare_data, ["text_files", "--tokenizer", "--out", "--max-length", "--unit", "--workers"]),
    "new-model": (new_model, ["out", "--tokenizer", "--family", "--dim", "--layers", "--heads", "--hidden-dim",
                              "--max-positions", "--seed"]),
    "init-student": (init_student, ["teacher", "--out", option(
        "--layers", help="teacher layers to copy, e.g. 0,2,4,7,9,11 (default: every other, first and last kept)")]),
    "distill": (distill, ["--teacher", "--student", "--data", "--out", "--resume", "--recipe", *recipe_options()]),
    "pretrain": (pretrain, ["--model", "--data", "--out", "--resume", "--recipe", *recipe_options()]),
    "evaluate-mlm": (evaluate_mlm, ["model", "--text", "--max-length", "--seed", option(
        "--data", help="the training data folder (prepare-data): also score a unigram model of it"), "--json"]),
    "plot-run": (plot_run, ["run", option("--output", help="PNG to write (default RUN/losses.png)")]),
    "bias": (bias, [option("model", help="a masked LM: model folder, exported folder or hub id"),
                    option("--probes", choices=("card", "crows-pairs", "all"),
                           help="card: the model card's template probes; crows-pairs: CrowS-Pairs; all: both"),
                    option("--out", help="folder for the report (JSON, CSV, tables, PNGs); without it, printed only"),
                    option("--limit", type=_positive, help="score the first N CrowS-Pairs pairs only"),
                    option("--data", help="the CrowS-Pairs CSV (default: $DISTILBERT_DATA/bias/crows_pairs_anonymized.csv)"),
                    "--backend", "--precision", "--threads"]),
    "attention": (attention, [option("model", help="model folder (PyTorch, or an export made with --with-attentions) "
                                                   "or hub id"),
                              option("text", help="the text to look at"),
                              option("text_b", help="a second sentence: the pair is encoded together and marked"),
                              option("--out", help="FILE.html (interactive, self-contained) or FILE.png (layers x heads)"),
                              option("--layer", type=int, help="layer (from 0) shown first in HTML; in a PNG, only it"),
                              option("--head", type=int, help="head (from 0) shown first in HTML; in a PNG, only it"),
                              option("--hide-special", help="leave out [CLS] and [SEP], as exBERT can"),
                              option("--backend", choices=BACKENDS,
                                     help="default: torch for a PyTorch checkpoint, else onnx")]),
    "finetune": (finetune, ["--resume", option("--overwrite", help="replace a finished model or a run in --out"),
                            "--recipe", *finetune_options()]),
    "evaluate": (evaluate, [
        "model", option("--data", help="labelled file: CSV/TSV/JSONL, CoNLL, SQuAD JSON, or a GLUE TSV with --glue"),
        option("--task", choices=TRAINED_TASKS, help="default: the model's own head"),
        option("--glue", choices=GLUE_TASKS, help="--data is this GLUE task's TSV: its layout, labels and metrics"),
        "--backend", "--precision", "--threads", "--batch-size", "--json",
        option("--predictions", help="write the predictions here (JSON lines; SQuAD: the official {id: answer})"),
        *COLUMNS, option("--limit", type=_positive, help="score the first N examples only")]),
    "glue": (glue, ["model", option("--data-dir", help="GLUE folder with CoLA/, SST-2/, MRPC/, ... (train.tsv, dev.tsv)"),
                    option("--out", help="folder for each task's runs, glue_results.json and glue.png"),
                    option("--tasks", nargs="+", choices=GLUE_TASKS, help="default: every task found"),
                    option("--seeds", type=_positive, help="runs per task, seeds 42, 43, ...; the median is reported"),
                    "--recipe", option("--overwrite", help="replace finished runs"),
                    *finetune_options(skip=(*RUN_IDENTITY, "text_column", "text_pair_column", "label_column",
                                            "tag_column", "problem_type", "seed", "doc_stride", "n_best",
                                            "max_answer_length"))]),
}


class _Parser(argparse.ArgumentParser):
    """A usage mistake is one line too, like every other user error (subcommands inherit this class)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="distilbert", description="DistilBERT end to end.")
    p.add_argument("--debug", action="store_true", help="print the full traceback of any error (or DISTILBERT_DEBUG=1)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (function, options) in COMMANDS.items():
        summary = (function.__doc__ or "").strip().splitlines()[0]
        command = sub.add_parser(name, help=summary, description=summary)
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        parameters = inspect.signature(function).parameters
        for spec in options:
            _add_option(command, OPTIONS[spec] if isinstance(spec, str) else spec, parameters)
    return p


def _add_option(p: argparse.ArgumentParser, spec: Option, parameters) -> None:
    """The spec with its default (or required) from the function's parameter; None for one taken by **settings."""
    positional = not spec.flags[0].startswith("-")
    dest = spec.dest or spec.flags[0].lstrip("-").replace("-", "_")
    parameter = parameters.get(dest)
    if parameter is None and not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        raise TypeError(f"option {spec.flags[0]} names no parameter of the command's function")
    default = None if parameter is None else parameter.default
    kwargs = {k: v for k, v in vars(spec).items() if k not in ("flags", "dest") and v is not None}
    if not positional and spec.dest:
        kwargs["dest"] = spec.dest
    if default is inspect.Parameter.empty:
        if not positional:
            kwargs["required"] = True
        return p.add_argument(*spec.flags, **kwargs)
    if spec.type is bool or isinstance(default, bool):
        kwargs.pop("type", None)
        kwargs["action"] = "store_true"
    elif spec.type is None and type(default) in (int, float):
        kwargs["type"] = type(default)
    if positional and "nargs" not in kwargs:
        kwargs["nargs"] = "?"
    if default not in (None, False, "-") and "help" in kwargs:
        kwargs["help"] += f" (default {default})"
    elif default not in (None, False, "-"):
        kwargs["help"] = f"default {default}"
    p.add_argument(*spec.flags, default=default, **kwargs)


def debugging(args: dict) -> bool:
    return bool(args.pop("debug", False)) or os.environ.get("DISTILBERT_DEBUG", "") not in ("", "0")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s", stream=sys.stderr)
    args = vars(parser().parse_args(argv))
    debug = debugging(args)
    command = COMMANDS[args.pop("command")][0]
    try:
        command(**args)
    except UserError as e:
        if debug:  # the whole chain, the causes a UserError hides with `from None` included
            cause = e
            while cause is not None:
                cause.__suppress_context__ = False
                cause = cause.__cause__ or cause.__context__
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        return 130
    except BrokenPipeError:  # `distilbert embed ... | head`
        sys.stderr.close()
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
