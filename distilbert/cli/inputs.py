"""What the commands read: lines and files of text, tab-separated pairs, questions; where they write."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

from ..errors import UserError

PROGRESS_OVER = 200  # lines; a progress bar on stderr for longer inputs


CHUNK = 512  # texts handed to a pipeline at once (it sorts each chunk by length)


def no_output_without_ray(output: str | None, ray: bool, what: str) -> None:
    if output is not None and not ray:
        raise UserError(f"--output is the Parquet folder of --ray; without --ray the {what} go to stdout")


def one_input(text: list[str] | None, file: str | None) -> str | None:
    """The input file of a command that takes texts or --file: --file, or its one positional argument."""
    return file or (text[0] if text and len(text) == 1 else None)


def read_lines(file: str) -> list[str]:
    if file == "-":
        if sys.stdin is None or sys.stdin.isatty():
            raise UserError("no input: give a FILE, or pipe text into the command ('-' reads stdin)")
        data = sys.stdin.buffer.read()
        name = "stdin"
    else:
        data, name = read_file(file, "a text file with one input per line"), file
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{name} is not UTF-8 text (byte {e.start}); convert it to UTF-8") from None
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise UserError(f"{name} is empty: give one input text per line")
    return lines


def read_inputs(text: list[str] | None, file: str | None, pairs: bool = False) -> list:
    """Texts given as arguments, else one per line of --file or stdin; with pairs, {"text", "text_pair"} from A<TAB>B."""
    if text and file:
        raise UserError("give texts as arguments or --file, not both")
    if text:
        lines = list(text)
        for t in lines:
            if not t.strip():
                raise UserError("empty text: give a text, or --file with one text per line")
    else:
        lines = [line for line in read_lines(file or "-") if line.strip()]
    if not pairs:
        return lines
    out = []
    for number, line in enumerate(lines, 1):
        if "\t" not in line:
            raise UserError(f"line {number} has no tab: with --pairs every input must be A<TAB>B")
        a, b = line.split("\t", 1)
        out.append({"text": a, "text_pair": b})
    return out


def read_file(file: str, wanted: str) -> bytes:
    """A file's bytes; a missing file or a folder is one line saying what to give (`wanted`)."""
    try:
        return Path(file).read_bytes()
    except FileNotFoundError:
        raise UserError(f"input file {file} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"input {file} is a folder; give {wanted}") from None


def read_text(file: str) -> str:
    """A whole text file (a context)."""
    data = read_file(file, "a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{file} is not UTF-8 text (byte {e.start}); convert it to UTF-8") from None


def read_questions() -> list[dict]:
    """{"question", "context"} per stdin line (other keys are ignored; blank lines skipped)."""
    if sys.stdin is None or sys.stdin.isatty():
        raise UserError('no question: give --question with --context or --context-file, or pipe JSON lines '
                        '{"question": ..., "context": ...} into the command')
    items = []
    for number, line in enumerate(read_lines("-"), 1):
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
        items.append(question_of(item["question"], item["context"], f"line {number}: "))
    return items


def question_of(question, context, where: str) -> dict:
    for name, text in (("question", question), ("context", context)):
        if not isinstance(text, str):
            raise UserError(f"{where}the {name} must be text, got {type(text).__name__}")
        if not text.strip():
            raise UserError(f"{where}empty {name}: give a non-empty {name}")
    return {"question": question, "context": context}


def chunks(items: list, what: str) -> Iterator[list]:
    from tqdm import tqdm

    with tqdm(total=len(items), desc=what, unit="line", file=sys.stderr, disable=len(items) <= PROGRESS_OVER) as bar:
        for start in range(0, len(items), CHUNK):
            chunk = items[start : start + CHUNK]
            yield chunk
            bar.update(len(chunk))


def tokenizer_folder(model: str) -> Path:
    from ..hub import resolve

    return resolve(model, need="tokenizer")
