"""The `distilbert` command: a table of subcommands, each a plain function that Python can call too.

Heavy imports (torch, onnxruntime) happen inside the commands. A user mistake is one line on stderr and
exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import UserError

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
             precision: str = "fp32", threads: int | None = None, batch_size: int = 32) -> None:
    """Classify each TEXT, or each line of --file (or stdin); with --pairs each line is A<TAB>B."""
    from .pipelines import pipeline

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


def embed(file: str = "-", model: str = DEFAULT_MODEL, pooling: str | None = None, normalize: bool = False,
          output: str | None = None, batch_size: int = 32, backend: str | None = None, precision: str = "fp32",
          threads: int | None = None) -> None:
    """Embed each line of FILE (or stdin): JSON arrays on stdout, or one .npy matrix with --output."""
    import numpy as np

    from .pipelines import pipeline

    lines = _read_lines(file)
    if output is not None:
        _check_writable(Path(output))
    extract = pipeline("feature-extraction", model=model, backend=backend, batch_size=batch_size, precision=precision,
                       threads=threads)
    pooling = pooling or extract.pooling or "mean"
    vectors = []
    for chunk in _chunks(lines, "embedding"):
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
    from . import tasks
    from .config import Config
    from .hub import resolve
    from .tokenizer import Tokenizer

    folder = resolve(model)
    config = Config.from_file(folder / "config.json")
    count, where = _parameter_count(folder, config)
    task = tasks.task_of_architectures(config.architectures) or "feature-extraction"
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


def export(model: str, out_dir: str, task: str | None = None, opset: int = 17, optimize: bool = False,
           quantize: str | None = None, drift_text: str | None = None) -> None:
    """Export MODEL to OUT_DIR/model.onnx (+ config and tokenizer), validated against PyTorch."""
    try:
        from .onnx.export import export as run_export, write_report
    except ImportError as e:
        raise UserError(f"export needs the torch extra ({e.name} is missing): pip install 'distilbert[torch]'") from None
    texts = _read_lines(drift_text) if drift_text else None
    report = run_export(model, out_dir, task=task, opset=opset, optimize=optimize, quantize=quantize,
                        drift_texts=texts, log=lambda line: print(line, file=sys.stderr))
    path = write_report(Path(out_dir), "export_report.json", report)
    print(f"exported {report['task']} to {Path(out_dir) / 'model.onnx'} (report: {path})")


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
    recipe = recipe.replace(**settings)
    result = train(recipe, resume=resume)
    print(f"trained {result['steps']} steps; the model is in {result['out']}")


def distill(teacher: str, student: str, data: str, out: str, resume: bool = False, recipe: str | None = None,
            **settings) -> None:
    """Distil TEACHER into STUDENT with the triple loss."""
    _train(resume, recipe, teacher=teacher, student=student, data=data, out=out, **settings)


def pretrain(model: str, data: str, out: str, resume: bool = False, recipe: str | None = None, **settings) -> None:
    """Plain masked-LM training of MODEL (the distillation loop with the teacher's terms off)."""
    settings.update(alpha_ce=0.0, alpha_cos=0.0, alpha_mse=0.0)
    _train(resume, recipe, student=model, data=data, out=out, teacher=None, **settings)


def evaluate_mlm(model: str, text: list[str], max_length: int = 128, seed: int = 0, json_output: bool = False) -> None:
    """Masked-LM accuracy and perplexity of MODEL on held-out text."""
    from .train.evaluate import evaluate_mlm as run, read_texts

    result = run(model, read_texts(text), max_length=max_length, seed=seed)
    if json_output:
        print(json.dumps(result))
        return
    print(f"{result['model']}: accuracy {result['accuracy']:.4f}, perplexity {result['perplexity']:.2f} "
          f"on {result['masked_tokens']:,} masked tokens of {result['texts']:,} texts ({result['tokens_per_second']:,.0f} tokens/s)")


def plot_run(run: str, output: str | None = None) -> None:
    """Draw the loss curves of a training run as a PNG."""
    from .train.plot import plot_run as draw

    print(f"wrote {draw(run, output)}")


# --- helpers ------------------------------------------------------------------------------------------


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


def _chunks(items: list[str], what: str) -> Iterator[list[str]]:
    from tqdm import tqdm

    with tqdm(total=len(items), desc=what, unit="line", file=sys.stderr, disable=len(items) <= PROGRESS_OVER) as bar:
        for start in range(0, len(items), CHUNK):
            chunk = items[start : start + CHUNK]
            yield chunk
            bar.update(len(chunk))


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


def _add_model(p: argparse.ArgumentParser, backend: bool = True) -> None:
    p.add_argument("--model", "-m", default=DEFAULT_MODEL, help=f"model folder or hub id (default {DEFAULT_MODEL})")
    if backend:
        p.add_argument("--backend", choices=("torch", "onnx"), help="runtime (default: onnx for a folder with only model.onnx)")
        p.add_argument("--precision", choices=("fp32", "int8", "bf16"), default="fp32",
                       help="fp32 exact (default); int8 runs model_quantized.onnx; bf16 holds torch weights in bfloat16")
        p.add_argument("--threads", type=_positive, help="compute threads (default: the physical cores)")


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def _fill_mask_args(p):
    p.add_argument("text", nargs="+", help="text(s) with [MASK]")
    _add_model(p)
    p.add_argument("--top-k", type=_positive, default=5)
    p.add_argument("--targets", nargs="+", help="score only these words")
    p.add_argument("--json", dest="json_output", action="store_true", help="the pipeline's output as JSON")


def _classify_args(p):
    p.add_argument("text", nargs="*", help="text(s) to classify; none: one per line from --file or stdin")
    p.add_argument("--file", "-f", help="one text per line (A<TAB>B with --pairs); - reads stdin")
    _add_model(p)
    p.add_argument("--top-k", type=_positive, help="this many labels per text, best first (default: the best one)")
    p.add_argument("--pairs", action="store_true", help="each input is a pair A<TAB>B")
    p.add_argument("--batch-size", type=_positive, default=32)
    p.add_argument("--json", dest="json_output", action="store_true", help="the pipeline's output, one JSON value per input")


def _embed_args(p):
    p.add_argument("file", nargs="?", default="-", help="one text per line; - or nothing reads stdin")
    _add_model(p)
    p.add_argument("--pooling", choices=("cls", "mean", "max"), help="default: the folder's sentence-transformers setting, else mean")
    p.add_argument("--normalize", action="store_true", help="L2-normalise each embedding")
    p.add_argument("--output", "-o", help="write one float32 (lines, dim) matrix to this .npy file")
    p.add_argument("--batch-size", type=_positive, default=32)


def _tokenize_args(p):
    p.add_argument("file", nargs="?", default="-", help="one text per line; - or nothing reads stdin")
    _add_model(p, backend=False)
    p.add_argument("--pairs", action="store_true", help="each line is A<TAB>B")
    p.add_argument("--max-length", type=_positive, help="truncate to this many tokens (default: the tokenizer's)")


def _export_args(p):
    p.add_argument("model", help="model folder or hub id")
    p.add_argument("out_dir", help="folder to write model.onnx, config.json and the tokenizer into")
    p.add_argument("--task", choices=("fill-mask", "feature-extraction", "text-classification", "token-classification",
                                      "question-answering"), help="default: the head the checkpoint was saved with")
    p.add_argument("--opset", type=_positive, default=17)
    p.add_argument("--optimize", action="store_true", help="ONNX Runtime's transformer fusions")
    p.add_argument("--quantize", choices=("int8",), help="also write model_quantized.onnx (dynamic int8)")
    p.add_argument("--drift-text", help="text file (one text a line; the first 512 are used) to measure int8 drift on")


def _prepare_data_args(p):
    p.add_argument("text_files", nargs="+", metavar="TEXT_FILE")
    p.add_argument("--tokenizer", required=True, help="model folder or hub id whose tokenizer to use")
    p.add_argument("--out", required=True, help="new folder for the shards")
    p.add_argument("--max-length", type=_positive, default=512, help="tokens per sequence, [CLS] and [SEP] included")
    p.add_argument("--unit", choices=("line", "paragraph"), default="line", help="a document is a line, or lines up to a blank one")
    p.add_argument("--workers", type=_positive, help="tokenising processes (default: all cores)")


def _new_model_args(p):
    p.add_argument("out")
    p.add_argument("--tokenizer", required=True, help="model folder or hub id whose vocabulary to use")
    p.add_argument("--family", choices=("bert", "distilbert"), default="bert")
    p.add_argument("--dim", type=_positive, default=256)
    p.add_argument("--layers", type=_positive, default=4)
    p.add_argument("--heads", type=_positive, default=4)
    p.add_argument("--hidden-dim", type=_positive, help="feed-forward width (default 4 x dim)")
    p.add_argument("--max-positions", type=_positive, default=512)
    p.add_argument("--seed", type=int, default=0)


def _init_student_args(p):
    p.add_argument("teacher", help="teacher folder or hub id (a masked LM)")
    p.add_argument("--out", required=True)
    p.add_argument("--layers", help="teacher layers to copy, e.g. 0,2,4,7,9,11 (default: every other, first and last kept)")


def _recipe_args(p):
    """One flag per recipe setting; unset flags keep the recipe file's value (or the default)."""
    import dataclasses

    from .train.recipe import Recipe

    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--recipe", help="JSON recipe file; flags override it")
    skip = {"student", "teacher", "data", "out", "extra"}
    for f in dataclasses.fields(Recipe):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        if isinstance(default, bool):
            p.add_argument(flag, action="store_const", const=True, default=None)
        elif isinstance(default, tuple):
            p.add_argument(flag, type=float, nargs=len(default), default=None)
        elif f.name in ("max_steps",):
            p.add_argument(flag, type=_positive, default=None)
        elif f.name == "mlm_smoothing":
            p.add_argument(flag, type=float, default=None, help="0.7 as the original; 0 for uniform masking")
        else:
            p.add_argument(flag, type=type(default), default=None)


def _distill_args(p):
    p.add_argument("--teacher", required=True)
    p.add_argument("--student", required=True)
    p.add_argument("--data", required=True)
    _recipe_args(p)


def _pretrain_args(p):
    p.add_argument("--model", required=True, help="the masked LM to train (see new-model)")
    p.add_argument("--data", required=True)
    _recipe_args(p)


def _evaluate_mlm_args(p):
    p.add_argument("model")
    p.add_argument("--text", nargs="+", required=True, help="held-out text file(s), one text a line")
    p.add_argument("--max-length", type=_positive, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", dest="json_output", action="store_true")


def _plot_run_args(p):
    p.add_argument("run", help="a training output folder (with log.jsonl)")
    p.add_argument("--output", help="PNG to write (default RUN/losses.png)")


def _info_args(p):
    p.add_argument("model", help="model folder or hub id")


COMMANDS: dict[str, tuple[Callable, Callable, str]] = {
    "fill-mask": (fill_mask, _fill_mask_args, "predict [MASK] tokens"),
    "classify": (classify, _classify_args, "text classification (sentiment and the like)"),
    "embed": (embed, _embed_args, "sentence embeddings, one per input line"),
    "tokenize": (tokenize, _tokenize_args, "token ids, one JSON object per input line"),
    "info": (info, _info_args, "describe a model"),
    "export": (export, _export_args, "export to ONNX, validated"),
    "prepare-data": (prepare_data, _prepare_data_args, "tokenise text into training shards"),
    "new-model": (new_model, _new_model_args, "a freshly initialised masked LM to pretrain"),
    "init-student": (init_student, _init_student_args, "a DistilBERT student from a BERT teacher"),
    "distill": (distill, _distill_args, "distil a teacher into a student (triple loss)"),
    "pretrain": (pretrain, _pretrain_args, "masked-LM training without a teacher"),
    "evaluate-mlm": (evaluate_mlm, _evaluate_mlm_args, "masked-LM accuracy and perplexity on held-out text"),
    "plot-run": (plot_run, _plot_run_args, "draw a run's loss curves as a PNG"),
}


class _Parser(argparse.ArgumentParser):
    """A usage mistake is one line too, like every other user error (subcommands inherit this class)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="distilbert", description="DistilBERT end to end.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (_, add_args, summary) in COMMANDS.items():
        add_args(sub.add_parser(name, help=summary, description=summary))
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s", stream=sys.stderr)
    args = vars(parser().parse_args(argv))
    command = COMMANDS[args.pop("command")][0]
    try:
        command(**args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `distilbert embed ... | head`
        sys.stderr.close()
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
