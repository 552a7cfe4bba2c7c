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
              json_output: bool = False, backend: str | None = None, precision: str = "fp32") -> None:
    """Predict the [MASK] tokens of each TEXT."""
    from .pipelines import pipeline

    if not text or not all(t.strip() for t in text):
        raise UserError("no text given: pass a text with [MASK], e.g. \"Hello I'm a [MASK] model.\"")
    fill = pipeline("fill-mask", model=model, backend=backend, precision=precision)
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


def embed(file: str = "-", model: str = DEFAULT_MODEL, pooling: str | None = None, normalize: bool = False,
          output: str | None = None, batch_size: int = 32, backend: str | None = None, precision: str = "fp32") -> None:
    """Embed each line of FILE (or stdin): JSON arrays on stdout, or one .npy matrix with --output."""
    import numpy as np

    from .pipelines import pipeline

    lines = _read_lines(file)
    if output is not None:
        _check_writable(Path(output))
    extract = pipeline("feature-extraction", model=model, backend=backend, batch_size=batch_size, precision=precision)
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
    from .checkpoint import ARCHITECTURES, resolve
    from .config import Config
    from .tokenizer import Tokenizer

    folder = resolve(model)
    config = Config.from_file(folder / "config.json")
    count, where = _parameter_count(folder, config)
    task = next((ARCHITECTURES[a] for a in config.architectures or [] if a in ARCHITECTURES), "feature-extraction")
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
    from .checkpoint import resolve

    return resolve(model, allow_patterns=["*.json", "vocab.txt"])


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
                       help="fp32 exact (default); int8 runs model_quantized.onnx; bf16 is torch autocast")


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
    p.add_argument("--drift-text", help="text file (one text a line) to measure int8 drift on")


def _info_args(p):
    p.add_argument("model", help="model folder or hub id")


COMMANDS: dict[str, tuple[Callable, Callable, str]] = {
    "fill-mask": (fill_mask, _fill_mask_args, "predict [MASK] tokens"),
    "embed": (embed, _embed_args, "sentence embeddings, one per input line"),
    "tokenize": (tokenize, _tokenize_args, "token ids, one JSON object per input line"),
    "info": (info, _info_args, "describe a model"),
    "export": (export, _export_args, "export to ONNX, validated"),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="distilbert", description="DistilBERT end to end.")
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
