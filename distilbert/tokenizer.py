"""Uncased WordPiece, exactly as BERT's (google-research/bert tokenization.py), on the `tokenizers` library.

The pipeline is: clean text (drop control characters, map whitespace to spaces), put spaces around CJK
characters, lower-case and strip accents (NFD, drop `Mn`), split on whitespace and punctuation, then
greedy longest-match-first WordPiece with `##` continuation pieces. A word longer than
`max_input_chars_per_word` becomes `[UNK]`; we use 100 like Hugging Face's tokenizers (the reference we
are tested against) rather than Google's 200, so every word over 200 characters is `[UNK]` either way.
No torch here.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import AddedToken, decoders, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as RustTokenizer
from tokenizers.models import WordPiece

from .errors import UserError

SPECIAL_TOKENS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}
DEFAULT_MAX_LENGTH = 512
TRUNCATION = ("longest_first", "only_first", "only_second")


class Tokenizer:
    """Texts (and text pairs) to `input_ids`, `token_type_ids`, `attention_mask`, and back."""

    # Rust `tokenizers` track each token's characters in the raw text (transformers' "fast" tokenizers);
    # a tokenizer without offsets sets this False, and what needs word boundaries refuses it.
    has_offsets = True

    def __init__(
        self,
        backend: RustTokenizer,
        special_tokens: dict[str, str] | None = None,
        model_max_length: int = DEFAULT_MAX_LENGTH,
        init_kwargs: dict[str, Any] | None = None,
    ):
        self.backend = backend
        self.special_tokens = {**SPECIAL_TOKENS, **(special_tokens or {})}
        self.model_max_length = model_max_length
        self.init_kwargs = init_kwargs or {}  # tokenizer_config.json fields we keep for saving
        # Truncation and padding are state of the Rust tokenizer; one call at a time may set them.
        self._lock = threading.Lock()
        backend.no_truncation()
        backend.no_padding()
        missing = [t for t in self.special_tokens.values() if backend.token_to_id(t) is None]
        if missing:
            raise UserError(f"tokenizer: special tokens {missing} are not in the vocabulary")
        # Special tokens are matched whole in raw text, before normalisation, as in transformers.
        backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in self.special_tokens.values()])
        self.pad_token_id = self.token_to_id(self.special_tokens["pad_token"])
        self.unk_token_id = self.token_to_id(self.special_tokens["unk_token"])
        self.cls_token_id = self.token_to_id(self.special_tokens["cls_token"])
        self.sep_token_id = self.token_to_id(self.special_tokens["sep_token"])
        self.mask_token_id = self.token_to_id(self.special_tokens["mask_token"])
        self.mask_token = self.special_tokens["mask_token"]
        self.all_special_ids = sorted({self.token_to_id(t) for t in self.special_tokens.values()})

    # --- construction ----------------------------------------------------------------------

    @classmethod
    def from_vocab(
        cls,
        vocab: str | Path | dict[str, int],
        do_lower_case: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        max_input_chars_per_word: int = 100,
        model_max_length: int = DEFAULT_MAX_LENGTH,
        special_tokens: dict[str, str] | None = None,
    ) -> Tokenizer:
        """Build BERT's WordPiece from a `vocab.txt` (one token a line; the line number is its id)."""
        if not isinstance(vocab, dict):
            vocab = read_vocab(vocab)
        special = {**SPECIAL_TOKENS, **(special_tokens or {})}
        backend = RustTokenizer(
            WordPiece(vocab, unk_token=special["unk_token"], max_input_chars_per_word=max_input_chars_per_word)
        )
        backend.normalizer = normalizers.BertNormalizer(
            clean_text=True,
            handle_chinese_chars=tokenize_chinese_chars,
            strip_accents=strip_accents,  # None: follow lowercase, as BERT does
            lowercase=do_lower_case,
        )
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece(prefix="##")
        cls_token, sep_token = special["cls_token"], special["sep_token"]
        backend.post_processor = processors.TemplateProcessing(
            single=f"{cls_token}:0 $A:0 {sep_token}:0",
            pair=f"{cls_token}:0 $A:0 {sep_token}:0 $B:1 {sep_token}:1",
            special_tokens=[(cls_token, vocab[cls_token]), (sep_token, vocab[sep_token])],
        )
        init_kwargs = {
            "do_lower_case": do_lower_case,
            "strip_accents": strip_accents,
            "tokenize_chinese_chars": tokenize_chinese_chars,
        }
        return cls(backend, special, model_max_length, init_kwargs)

    @classmethod
    def from_pretrained(cls, folder: str | Path, config: Any = None) -> Tokenizer:
        """Load from a model folder: `tokenizer.json` if present, else `vocab.txt`, with `tokenizer_config.json`.

        With the model's `config`, a tokenizer that cannot belong to it is refused (see `check_fits`).
        """
        tokenizer = cls._from_folder(Path(folder))
        if config is not None:
            tokenizer.check_fits(config.vocab_size, Path(folder))
        return tokenizer

    def check_fits(self, vocab_size: int, folder: Path | str = "") -> None:
        """Ids past the model's embedding table would fail or read garbage: refuse a larger vocabulary. A much
        smaller one (such as the 5-token vocabulary `BertTokenizerFast(vocab_file=...)` writes in transformers 5)
        is the wrong tokenizer: refuse it too. Slightly smaller is common (padded embedding tables): warn."""
        ours = self.vocab_size
        where = f" in {folder}" if str(folder) else ""
        if ours > vocab_size or ours * 2 < vocab_size:
            raise UserError(
                f"the tokenizer{where} has {ours} tokens but the model's config.json says vocab_size {vocab_size}: "
                "they do not belong together; save the model's own tokenizer into the folder"
            )
        if ours != vocab_size:
            import logging

            logging.getLogger("distilbert").warning(
                "the tokenizer%s has %d tokens and the model's vocab_size is %d; ids past the tokenizer are never used",
                where, ours, vocab_size)

    @classmethod
    def _from_folder(cls, folder: Path) -> Tokenizer:
        settings = _read_json(folder / "tokenizer_config.json") or {}
        special = {k: _token_text(settings[k]) for k in SPECIAL_TOKENS if settings.get(k)}
        max_length = settings.get("model_max_length", DEFAULT_MAX_LENGTH)
        if not isinstance(max_length, int) or max_length <= 0 or max_length > 1_000_000:
            max_length = DEFAULT_MAX_LENGTH  # transformers writes 1e30 for "no limit"; the model's own limit applies
        if (folder / "tokenizer.json").is_file():
            try:
                backend = RustTokenizer.from_file(str(folder / "tokenizer.json"))
            except Exception as e:
                if type(e) is not Exception:  # tokenizers says "malformed file" with a bare Exception, only that
                    raise
                raise UserError(f"{folder / 'tokenizer.json'} cannot be read ({e}); save the tokenizer again") from None
            kept = {k: settings[k] for k in ("do_lower_case", "strip_accents", "tokenize_chinese_chars") if k in settings}
            return cls(backend, special, max_length, kept)
        if (folder / "vocab.txt").is_file():
            options = {k: settings[k] for k in ("do_lower_case", "strip_accents", "tokenize_chinese_chars") if k in settings}
            return cls.from_vocab(folder / "vocab.txt", model_max_length=max_length, special_tokens=special, **options)
        raise UserError(f"no tokenizer in {folder}: expected tokenizer.json or vocab.txt")

    def save(self, folder: str | Path) -> None:
        """Write `tokenizer.json`, `vocab.txt` and `tokenizer_config.json`, readable by transformers too."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(folder / "tokenizer.json"))
        vocab = self.backend.get_vocab(with_added_tokens=False)
        ordered = sorted(vocab.items(), key=lambda item: item[1])
        (folder / "vocab.txt").write_text("".join(token + "\n" for token, _ in ordered), encoding="utf-8")
        settings = {
            "tokenizer_class": "BertTokenizer",
            "model_max_length": self.model_max_length,
            **self.init_kwargs,
            **self.special_tokens,
        }
        (folder / "tokenizer_config.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")

    # --- encoding ---------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def get_vocab(self) -> dict[str, int]:
        return self.backend.get_vocab(with_added_tokens=True)

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
        return [self.backend.id_to_token(int(i)) for i in ids]

    def convert_tokens_to_string(self, tokens: Sequence[str]) -> str:
        """Tokens back to text through the decoder ("##" pieces joined), as transformers' fast tokenizers do."""
        decoder = self.backend.decoder
        return decoder.decode(list(tokens)) if decoder is not None else " ".join(tokens)

    def tokenize(self, text: str) -> list[str]:
        with self._lock:  # truncation and padding are shared state: never read them while a call sets them
            return self.backend.encode(text, add_special_tokens=False).tokens

    def __call__(
        self,
        text: str | Sequence[str],
        text_pair: str | Sequence[str] | None = None,
        *,
        truncation: bool | str = False,
        max_length: int | None = None,
        padding: bool | str = False,
        add_special_tokens: bool = True,
        return_offsets: bool = False,
        return_tensors: str | None = None,
        stride: int = 0,
        return_overflowing_tokens: bool = False,
    ) -> dict[str, Any]:
        """Encode one text, a text pair, or batches of either.

        truncation: False, True (= "longest_first"), "longest_first", "only_first" or "only_second".
        padding: False, True/"longest" (to the longest in the batch) or "max_length".
        return_tensors="np" gives int64 arrays of shape (batch, length) and needs padding for ragged batches;
        "tf" gives them as tf.Tensor (TensorFlow is imported then, and only then).
        One text in, one row out (lists, not nested), as in transformers.
        return_offsets adds `offset_mapping` (character spans), `word_ids` and `sequence_ids` (None for
        special tokens, else 0 or 1) per row.
        return_overflowing_tokens: what truncation cuts off comes back as further rows (windows that
        overlap by `stride` tokens), and `overflow_to_sample_mapping` names each row's input.
        """
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        if text_pair is not None:
            pairs = [text_pair] if isinstance(text_pair, str) else list(text_pair)
            if len(pairs) != len(texts):
                raise UserError(f"tokenizer: {len(texts)} texts but {len(pairs)} pair texts")
        else:
            pairs = None
        for t in texts + (pairs or []):
            if not isinstance(t, str):
                raise UserError(f"tokenizer: expected text, got {type(t).__name__}")
        if truncation is True:
            truncation = "longest_first"
        if truncation and truncation not in TRUNCATION:
            raise UserError(f"tokenizer: unknown truncation {truncation!r}; expected one of {', '.join(TRUNCATION)}")
        if padding is True:
            padding = "longest"
        if padding not in (False, "longest", "max_length", "do_not_pad"):
            raise UserError(f"tokenizer: unknown padding {padding!r}; expected 'longest' or 'max_length'")
        length = max_length or self.model_max_length
        inputs = list(zip(texts, pairs)) if pairs is not None else texts
        with self._lock:
            try:
                if truncation:
                    self.backend.enable_truncation(length, stride=stride, strategy=truncation)
                if padding == "max_length":
                    self.backend.enable_padding(pad_id=self.pad_token_id, pad_token=self.special_tokens["pad_token"], length=length)
                elif padding == "longest":
                    self.backend.enable_padding(pad_id=self.pad_token_id, pad_token=self.special_tokens["pad_token"])
                encodings = self.backend.encode_batch(inputs, add_special_tokens=add_special_tokens)
            except Exception as e:
                if type(e) is not Exception:  # the Rust side's bare Exception: "Truncation error: Second sequence ..."
                    raise
                raise UserError(f"tokenizer: {e}") from None
            finally:
                self.backend.no_truncation()
                self.backend.no_padding()
        sample = list(range(len(encodings)))
        if return_overflowing_tokens:  # transformers' order: each input's windows together, the first first
            sample = [i for i, e in enumerate(encodings) for _ in range(1 + len(e.overflowing))]
            encodings = [w for e in encodings for w in (e, *e.overflowing)]
        out: dict[str, Any] = {
            "input_ids": [e.ids for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
        }
        if return_offsets:
            out["offset_mapping"] = [e.offsets for e in encodings]
            out["word_ids"] = [e.word_ids for e in encodings]
            out["sequence_ids"] = [e.sequence_ids for e in encodings]
        if return_overflowing_tokens:
            out["overflow_to_sample_mapping"] = sample
        if return_tensors in ("np", "tf"):
            if len({len(ids) for ids in out["input_ids"]}) > 1:
                raise UserError("tokenizer: texts of different lengths need padding=True for arrays")
            # arrays keep the batch dimension even for one text, as transformers' return_tensors does
            out = {k: np.asarray(v, dtype=np.int64) for k, v in out.items() if k not in ("word_ids", "sequence_ids")}
            if return_tensors == "tf":
                out = _to_tensorflow(out)
        elif return_tensors is not None:
            raise UserError(f"tokenizer: return_tensors must be 'np', 'tf' or None, got {return_tensors!r}")
        elif single and not return_overflowing_tokens:
            out = {k: v[0] for k, v in out.items()}
        return out

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        with self._lock:
            return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)


def _to_tensorflow(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    try:
        import tensorflow as tf
    except ImportError:
        raise UserError("tokenizer: return_tensors='tf' needs TensorFlow: pip install 'distilbert[tf]'") from None
    return {k: tf.constant(v) for k, v in arrays.items()}


def read_vocab(path: str | Path) -> dict[str, int]:
    try:
        lines = Path(path).read_text(encoding="utf-8").split("\n")
    except FileNotFoundError:
        raise UserError(f"vocabulary file {path} does not exist") from None
    if lines and lines[-1] == "":
        lines.pop()
    vocab: dict[str, int] = {}
    for i, token in enumerate(lines):
        vocab.setdefault(token.rstrip("\r"), i)
    if not vocab:
        raise UserError(f"vocabulary file {path} is empty")
    return vocab


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e}); save the tokenizer again") from None


def _token_text(token: Any) -> str:
    """tokenizer_config.json stores a special token as a string or as an AddedToken dict."""
    return token["content"] if isinstance(token, dict) else str(token)

