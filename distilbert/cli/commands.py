"""The commands, each a plain function that Python can call too. Heavy imports (torch, onnxruntime) happen
inside them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import UserError, check_writable
from ..onnx.export import DEFAULT_OPSET
from ..pipelines.features import NO_POOLING
from ..precisions import ONNX_FILES
from .inputs import (
    chunks,
    no_output_without_ray,
    one_input,
    question_of,
    read_inputs,
    read_lines,
    read_questions,
    read_text,
    tokenizer_folder,
)
from .render import parameter_count, print_entities

DEFAULT_MODEL = "distilbert-base-uncased"


def fill_mask(text: list[str], model: str = DEFAULT_MODEL, top_k: int = 5, targets: list[str] | None = None,
              json_output: bool = False, backend: str | None = None, precision: str = "fp32",
              threads: int | None = None) -> None:
    """Predict the [MASK] tokens of each TEXT."""
    from ..pipelines import pipeline

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
    from ..pipelines import pipeline

    if ray and (top_k is not None or pairs):
        raise UserError("--ray gives each text's best label and score: no --top-k; for pairs use --pair-column")
    no_output_without_ray(output, ray, "labels")
    if _ray_job("text-classification", ray, one_input(text, file), output, model, backend, precision, threads,
                batch_size, address, num_actors, column, ship_model, pair_column=pair_column):
        return

    items = read_inputs(text, file, pairs)
    classifier = pipeline("text-classification", model=model, backend=backend, precision=precision, threads=threads,
                          batch_size=batch_size)
    options = {} if top_k is None else {"top_k": top_k}
    for chunk in chunks(items, "classifying"):
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
    from ..pipelines import pipeline

    no_output_without_ray(output, ray, "entities")
    if _ray_job("token-classification", ray, one_input(text, file), output, model, backend, precision, threads,
                batch_size, address, num_actors, column, ship_model, aggregation_strategy=aggregation, stride=stride):
        return

    items = read_inputs(text, file)
    tagger = pipeline("token-classification", model=model, backend=backend, precision=precision, threads=threads,
                      batch_size=batch_size, aggregation_strategy=aggregation, stride=stride)
    for chunk in chunks(items, "tagging"):
        for item, entities in zip(chunk, tagger(chunk)):  # each: what the pipeline answers for this text alone
            if json_output:
                print(json.dumps(entities, ensure_ascii=False))
            else:
                print_entities(item, entities)


def answer(model: str = DEFAULT_MODEL, question: str | None = None, context: str | None = None,
           context_file: str | None = None, top_k: int = 1, json_output: bool = False, backend: str | None = None,
           precision: str = "fp32", threads: int | None = None) -> None:
    """Answer a question from a context, or each {"question", "context"} JSON line on stdin."""
    from ..pipelines import pipeline

    if context is not None and context_file is not None:
        raise UserError("give --context or --context-file, not both")
    if question is None and (context is not None or context_file is not None):
        flag = "--context" if context is not None else "--context-file"
        raise UserError(f"{flag} needs a --question (or pipe JSON lines with a question and a context each)")
    if question is not None:
        if context_file is not None:
            context = read_text(context_file)
        if context is None:
            raise UserError("--question needs a context: add --context TEXT or --context-file FILE")
        items = [question_of(question, context, "")]
    else:
        items = read_questions()
    qa = pipeline("question-answering", model=model, backend=backend, precision=precision, threads=threads)
    for chunk in chunks(items, "answering"):
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

    from ..pipelines import pipeline

    if pooling == NO_POOLING and (output is not None or ray):
        raise UserError("--pooling none gives a (tokens, dim) matrix per line, of different lengths, which "
                        f"{'--ray' if ray else '--output'} cannot write; leave it out to print one JSON matrix a line")
    if _ray_job("feature-extraction", ray, file, output, model, backend, precision, threads, batch_size, address,
                num_actors, column, ship_model, pooling=pooling, normalize=normalize or None):
        return

    lines = read_lines(file)
    if output is not None:
        check_writable(output, "--output", "embeddings.npy")
    extract = pipeline("feature-extraction", model=model, backend=backend, batch_size=batch_size, precision=precision,
                       threads=threads)
    pooling = pooling or extract.sentence_pooling
    vectors = []
    for chunk in chunks(lines, "embedding"):
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
    from ..tokenizer import Tokenizer

    lines = read_lines(file)
    tokenizer = Tokenizer.from_pretrained(tokenizer_folder(model))
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
    for chunk in chunks(firsts, "tokenizing"):
        second = None if seconds is None else seconds[start : start + len(chunk)]
        start += len(chunk)
        enc = tokenizer(chunk, second, truncation=True, max_length=max_length)
        for i in range(len(chunk)):
            print(json.dumps({k: enc[k][i] for k in ("input_ids", "token_type_ids", "attention_mask")}))


def info(model: str) -> None:
    """Family, sizes, heads, parameter count and vocabulary of MODEL."""
    from ..checkpoint import natural_task
    from ..config import Config
    from ..hub import resolve
    from ..tokenizer import Tokenizer

    folder = resolve(model)
    config = Config.from_file(folder / "config.json")
    count, where = parameter_count(folder, config)
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
    from ..precisions import parse_list

    wanted = parse_list(precisions or "fp32")  # an unknown name fails here, before PyTorch is imported
    try:
        from ..onnx.export import export as run_export
        from ..onnx.export import write_report
    except ImportError as e:
        raise UserError(f"export needs the torch extra ({e.name} is missing): pip install 'distilbert[torch]'") from None
    texts = read_lines(drift_text) if drift_text else None
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
        from ..keras import export_savedmodel
    except ImportError as e:
        raise UserError(f"--format savedmodel needs the tf extra: {e}") from None
    from ..onnx.files import write_report

    report = export_savedmodel(model, out_dir, task, log=lambda line: print(line, file=sys.stderr))
    path = write_report(Path(out_dir), "export_report.json", report)
    print(f"exported {report['task']} to {out_dir} as a TensorFlow SavedModel (report: {path})")


def serve(model: str, task: str | None = None, host: str = "127.0.0.1", port: int = 8080, backend: str | None = None,
          precision: str = "fp32", threads: int | None = None, max_batch_tokens: int = 1024,
          max_concurrent_requests: int = 512, max_client_batch_size: int = 32, payload_limit: int = 2_000_000,
          api_key: str | None = None, workers: int = 1, pooling: str | None = None, compile: bool = False) -> None:
    """Serve MODEL over HTTP (TEI routes, OpenAI embeddings, the Hugging Face Inference API) until SIGTERM."""
    try:
        from ..serve import Settings, run
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
    from ..train.data import prepare

    meta = prepare(text_files, tokenizer, out, max_length=max_length, unit=unit, workers=workers)
    print(f"{meta['sequences']:,} sequences, {meta['tokens']:,} tokens in {len(meta['shards'])} shard(s) under {out} "
          f"(dropped: {meta['dropped_short']:,} short, {meta['dropped_unknown']:,} mostly [UNK])")


def new_model(out: str, tokenizer: str, family: str = "bert", dim: int = 256, layers: int = 4, heads: int = 4,
              hidden_dim: int | None = None, max_positions: int = 512, seed: int = 0) -> None:
    """A freshly initialised masked LM to pretrain."""
    from ..train.student import new_model as make

    net = make(out, tokenizer, family, dim, layers, heads, hidden_dim, max_positions, seed)
    print(f"wrote a new {family} masked LM ({sum(p.numel() for p in net.parameters()):,} parameters) to {out}")


def init_student(teacher: str, out: str, layers: str | None = None) -> None:
    """A DistilBERT student from a BERT teacher: half its layers, its embeddings and masked-LM head."""
    from ..train.student import init_student as make

    chosen = None
    if layers:
        try:
            chosen = [int(x) for x in layers.split(",")]
        except ValueError:
            raise UserError(f"--layers must be comma-separated layer numbers such as 0,2,4,7,9,11, got {layers!r}") from None
    _, used = make(teacher, out, chosen)
    print(f"wrote a {len(used)}-layer student to {out} (teacher layers {','.join(map(str, used))})")


def _train(resume: bool, recipe_file: str | None, **settings) -> None:
    from ..train.distill import train
    from ..train.recipe import Recipe

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
    from ..train.evaluate import evaluate_mlm as run
    from ..train.evaluate import read_counts, read_texts

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
    from ..train.finetune import FinetuneRecipe
    from ..train.finetune import finetune as run

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
    from ..data import Columns
    from ..evaluate import evaluate as run
    from ..evaluate import print_metrics

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
    from ..train.glue import run_glue

    run_glue(model, data_dir, out, tasks=tasks, seeds=seeds, recipe=recipe, overwrite=overwrite,
             settings={k: v for k, v in settings.items() if v is not None})


def plot_run(run: str, output: str | None = None) -> None:
    """Draw a training run's losses (and validation metrics) as a PNG."""
    from ..train.plot import plot_run as draw

    print(f"wrote {draw(run, output)}")


def bias(model: str, probes: str = "all", out: str | None = None, limit: int | None = None, data: str | None = None,
         backend: str | None = None, precision: str = "fp32", threads: int | None = None) -> None:
    """Bias probes: the model card's templates (Kurita et al. 2019 scores) and CrowS-Pairs."""
    from ..analysis.bias import run

    run(model, probes, out, limit=limit, data=data, backend=backend, precision=precision, threads=threads, log=print)


def attention(model: str, text: str, out: str, text_b: str | None = None, layer: int | None = None,
              head: int | None = None, hide_special: bool = False, backend: str | None = None) -> None:
    """Draw attention maps: a self-contained HTML view (head and model views) or a PNG grid."""
    from ..analysis.attention import draw

    print(f"wrote {draw(model, text, text_b, out, layer=layer, head=head, hide_special=hide_special, backend=backend)}")


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
        from .. import ray as on_ray
    except ImportError as e:
        raise UserError(f"--ray needs the ray extra ({e.name} is missing): pip install 'distilbert[ray]'") from None
    on_ray.run_job(task, file, output, model=model, column=column, pair_column=pair_column, address=address,
                   num_actors=num_actors, cpus_per_actor=threads or 1, batch_size=batch_size,
                   backend=backend or "onnx", precision=precision, ship_model=ship_model,
                   blank_lines=task == "feature-extraction", **options)  # the lines each command reads alone
    return True
