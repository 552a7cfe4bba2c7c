"""Raw text -> compact token shards, and shards -> batches grouped by length.

A data folder holds `meta.json`, token counts (`counts.npy`, for the masking smoother) and shards:
`shard_NNNNN.tokens` (uint16, every sequence back to back) with `shard_NNNNN.offsets.npy` (int64
starts, and the end). No pickle; memory-mapped at training time. Sequences follow the original
DistilBERT data code (binarized_data.py, lm_seqs_dataset.py): `[CLS] ... [SEP]`, at most `max_length`
tokens, those of 11 tokens or fewer dropped, and those with half or more `[UNK]` dropped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import batching
from ..errors import UserError

MIN_TOKENS = 12  # sequences of 11 tokens or fewer are dropped (lm_seqs_dataset.remove_empty_sequences)
SHARD_TOKENS = 50_000_000  # ~100 MB a shard
CHUNK_DOCUMENTS = 2000  # documents a worker tokenises at once
UNITS = ("line", "paragraph")  # what a document is


# --- preparation ------------------------------------------------------------------------------------


def documents(paths: list[Path], unit: str) -> Iterator[str]:
    """Stream documents: each non-empty line, or each paragraph (lines up to a blank one)."""
    for path in paths:
        paragraph: list[str] = []
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.strip()
                if unit == "line":
                    if line:
                        yield line
                elif line:
                    paragraph.append(line)
                elif paragraph:
                    yield " ".join(paragraph)
                    paragraph = []
        if paragraph:
            yield " ".join(paragraph)


_worker_tokenizer = None


def _init_worker(tokenizer_folder: str) -> None:
    global _worker_tokenizer
    from ..tokenizer import Tokenizer

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _worker_tokenizer = Tokenizer.from_pretrained(tokenizer_folder)


def _tokenize_chunk(texts: list[str], max_length: int) -> tuple[list[np.ndarray], int, int]:
    """Documents -> kept sequences (uint16), with the count of dropped short and unknown-heavy ones."""
    tok = _worker_tokenizer
    body = max_length - 2
    kept, short, unknown = [], 0, 0
    for ids in tok(texts, add_special_tokens=False)["input_ids"]:
        for start in range(0, max(len(ids), 1), body):
            piece = ids[start : start + body]
            seq = np.array([tok.cls_token_id, *piece, tok.sep_token_id], dtype=np.uint16)
            if len(seq) < MIN_TOKENS:
                short += 1
            elif 2 * int(np.count_nonzero(seq == tok.unk_token_id)) >= len(seq):
                unknown += 1
            else:
                kept.append(seq)
    return kept, short, unknown


class _ShardWriter:
    def __init__(self, out: Path, vocab_size: int):
        self.out, self.index, self.shards = out, 0, []
        self.counts = np.zeros(vocab_size, dtype=np.int64)
        self.n_sequences = self.n_tokens = 0
        self._open()

    def _open(self):
        name = f"shard_{self.index:05d}"
        self.file = open(self.out / f"{name}.tokens", "wb")
        self.offsets, self.position = [0], 0
        self.shards.append(name)

    def add(self, seq: np.ndarray) -> None:
        if self.position + len(seq) > SHARD_TOKENS and self.position:
            self._close()
            self.index += 1
            self._open()
        self.file.write(seq.tobytes())
        self.position += len(seq)
        self.offsets.append(self.position)
        self.counts += np.bincount(seq, minlength=len(self.counts))
        self.n_sequences += 1
        self.n_tokens += len(seq)

    def _close(self):
        self.file.close()
        np.save(self.out / f"{self.shards[-1]}.offsets.npy", np.array(self.offsets, dtype=np.int64))

    def close(self):
        self._close()


def prepare(paths: list[str | Path], tokenizer: str | Path, out: str | Path, max_length: int = 512,
            unit: str = "line", workers: int | None = None, progress: bool = True) -> dict:
    """Tokenise `paths` in parallel into shards under `out`; returns the meta data written to meta.json."""
    from tqdm import tqdm

    from ..hub import resolve
    from ..tokenizer import Tokenizer

    paths = [Path(p) for p in paths]
    if not paths:
        raise UserError("no text files given")
    for path in paths:
        if not path.is_file():
            raise UserError(f"text file {path} does not exist")
    if unit not in UNITS:
        raise UserError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
    if not MIN_TOKENS <= max_length <= 65_536:
        raise UserError(f"max length must be between {MIN_TOKENS} and 65536, got {max_length}")
    folder = resolve(tokenizer, need="tokenizer")
    tok = Tokenizer.from_pretrained(folder)
    if tok.vocab_size > 65_536:
        raise UserError(f"a vocabulary of {tok.vocab_size} tokens does not fit uint16 shards (at most 65536)")
    out = Path(out)
    if (out / "meta.json").exists():
        raise UserError(f"{out} already holds prepared data; choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    tok.save(out / "tokenizer")
    writer = _ShardWriter(out, tok.vocab_size)
    short = unknown = 0
    total_bytes = sum(p.stat().st_size for p in paths)
    workers = workers or max(1, (os.cpu_count() or 1))

    def chunks() -> Iterator[list[str]]:
        chunk: list[str] = []
        for doc in documents(paths, unit):
            chunk.append(doc)
            if len(chunk) == CHUNK_DOCUMENTS:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    with tqdm(total=total_bytes, unit="B", unit_scale=True, desc="tokenizing", disable=not progress) as bar, \
            ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(str(out / "tokenizer"),)) as pool:
        pending = []
        for chunk in chunks():
            pending.append((pool.submit(_tokenize_chunk, chunk, max_length), sum(len(d) + 1 for d in chunk)))
            while len(pending) > 2 * workers:  # bounded: memory does not grow with the corpus
                short, unknown = _drain(pending.pop(0), writer, bar, short, unknown)
        while pending:
            short, unknown = _drain(pending.pop(0), writer, bar, short, unknown)
    writer.close()
    if writer.n_sequences == 0:
        raise UserError(f"no sequence of {MIN_TOKENS} tokens or more in {', '.join(map(str, paths))}")
    np.save(out / "counts.npy", writer.counts)
    meta = {
        "format": "distilbert-token-shards/1",
        "dtype": "uint16",
        "max_length": max_length,
        "unit": unit,
        "vocab_size": tok.vocab_size,
        "sequences": writer.n_sequences,
        "tokens": writer.n_tokens,
        "dropped_short": short,
        "dropped_unknown": unknown,
        "shards": writer.shards,
        "sources": [str(p) for p in paths],
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _drain(item, writer: _ShardWriter, bar, short: int, unknown: int) -> tuple[int, int]:
    future, size = item
    kept, s, u = future.result()
    for seq in kept:
        writer.add(seq)
    bar.update(size)
    return short + s, unknown + u


# --- reading ----------------------------------------------------------------------------------------------


class TokenShards:
    """Every sequence of a data folder, memory-mapped: `shards[i]` is an int64 array."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        meta_file = self.folder / "meta.json"
        if not self.folder.is_dir():
            raise UserError(f"data folder {self.folder} does not exist; make it with `distilbert prepare-data`")
        if not meta_file.is_file():
            raise UserError(f"{self.folder} holds no prepared data (no meta.json); run `distilbert prepare-data` first")
        try:
            self.meta = json.loads(meta_file.read_text())
            self.tokens = [np.memmap(self.folder / f"{s}.tokens", dtype=np.uint16, mode="r") for s in self.meta["shards"]]
            self.offsets = [np.load(self.folder / f"{s}.offsets.npy") for s in self.meta["shards"]]
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"{self.folder} is damaged ({e}); prepare the data again") from None
        self.index = np.concatenate([np.stack([np.full(len(o) - 1, k), np.arange(len(o) - 1)], 1)
                                     for k, o in enumerate(self.offsets)])  # (n, 2): shard, row
        self.lengths = np.concatenate([np.diff(o) for o in self.offsets])
        if len(self.lengths) == 0:
            raise UserError(f"{self.folder} holds no sequences; prepare the data again")

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> np.ndarray:
        shard, row = self.index[i]
        start, end = self.offsets[shard][row], self.offsets[shard][row + 1]
        return self.tokens[shard][start:end].astype(np.int64)

    def counts(self) -> np.ndarray:
        return np.load(self.folder / "counts.npy")


@dataclass
class Batching:
    max_tokens: int = 8192  # padded tokens in a batch (sequences x longest)
    max_sequences: int = 64
    window: int = batching.WINDOW  # batches drawn together, then sorted by length: little padding, still shuffled


def epoch_batches(lengths: np.ndarray, limits: Batching, seed: int, epoch: int) -> list[np.ndarray]:
    """The batches of one epoch: a fresh shuffle for every epoch, grouped by length under a token budget."""
    groups = batching.shuffled_groups(lengths, limits.max_sequences, limits.max_tokens, seed, epoch, limits.window)
    return [np.array(g) for g in groups]


def collate(shards: TokenShards, rows: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    arrays = batching.collate([{"input_ids": shards[int(i)]} for i in rows], pad_id, token_types=False)
    return arrays["input_ids"], arrays["attention_mask"]
