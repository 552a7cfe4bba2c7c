"""Feature extraction: token features, or pooled sentence embeddings (cls, mean, max; optional L2 norm).

pooling None means the folder's own: its sentence-transformers Pooling module, else none (token features, as
transformers' pipeline gives). pooling "none" asks for token features on any folder.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import UserError
from .base import Job, Pipeline

POOLINGS = ("cls", "mean", "max")
NO_POOLING = "none"  # one (tokens, dim) array per text, also where the folder pools
SENTENCE_POOLING = "mean"  # where a sentence embedding is wanted and the folder names no pooling (as TEI does)


class FeatureExtractionPipeline(Pipeline):
    task = "feature-extraction"

    def __init__(self, *args, pooling: str | None = None, normalize: bool | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        st = sentence_transformers_settings(self.backend.folder)
        self.pooling = pooling if pooling is not None else st.get("pooling")
        self.normalize = normalize if normalize is not None else st.get("normalize", False)
        if st.get("max_length"):
            self.max_length = min(self.max_length, st["max_length"])
        _check_pooling(self.pooling)

    @property
    def sentence_pooling(self) -> str:
        """The pooling of a sentence embedding from this model (the CLI's `embed`, the server's embeddings, Ray):
        the folder's own, else mean."""
        return self.pooling or SENTENCE_POOLING

    def preprocess(self, inputs: str | Sequence[str], pooling: str | None = None, normalize: bool | None = None) -> Job:
        """Without pooling ("none", or None on a folder that does not pool): one (tokens, dim) float32 array
        per text, [CLS] and [SEP] included. With pooling: a (dim,) array for one text, an (n, dim) array for a list.
        """
        pooling = pooling if pooling is not None else self.pooling
        normalize = normalize if normalize is not None else self.normalize
        _check_pooling(pooling)
        single = isinstance(inputs, str)
        texts = [inputs] if single else list(inputs)
        enc = self.encode(texts)
        return Job(self.features(enc), {"pooling": pooling, "normalize": normalize, "single": single}, enc["truncated"])

    def postprocess(self, job: Job, outputs):
        pooling, single = job.state["pooling"], job.state["single"]
        hidden = [out["last_hidden_state"] for out in outputs]  # each (tokens, dim)
        if pooling in (None, NO_POOLING):
            results = [h.copy() for h in hidden]
            return results[0] if single else results
        pooled = np.stack([pool(h[None], np.ones((1, len(h)), dtype=np.int64), pooling)[0] for h in hidden])
        if job.state["normalize"]:
            pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
        return pooled[0] if single else pooled


def pool(hidden: np.ndarray, mask: np.ndarray, pooling: str) -> np.ndarray:
    """(B, T, dim) features and (B, T) mask -> (B, dim), over real tokens only (sentence-transformers' Pooling)."""
    if pooling == "cls":
        return hidden[:, 0]
    m = mask[..., None].astype(hidden.dtype)  # (B, T, 1)
    if pooling == "mean":
        return (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
    return np.where(m > 0, hidden, -1e9).max(axis=1)  # max


def sentence_transformers_settings(folder: Path) -> dict:
    """Pooling, normalisation and max length from a sentence-transformers folder, when it is one."""
    modules_file = Path(folder) / "modules.json"
    if not modules_file.is_file():
        return {}
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        settings: dict = {}
        for module in modules:
            kind = module.get("type", "")
            if kind.endswith("Pooling"):
                pooling = json.loads((Path(folder) / module["path"] / "config.json").read_text(encoding="utf-8"))
                modes = [name for name, key in (("cls", "pooling_mode_cls_token"), ("mean", "pooling_mode_mean_tokens"), ("max", "pooling_mode_max_tokens")) if pooling.get(key)]
                if len(modes) != 1:
                    raise UserError(f"{folder}: pooling {modes or 'none'} is not supported; exactly one of cls, mean, max is")
                settings["pooling"] = modes[0]
            elif kind.endswith("Normalize"):
                settings["normalize"] = True
        st_config = Path(folder) / "sentence_bert_config.json"
        if st_config.is_file():
            settings["max_length"] = json.loads(st_config.read_text(encoding="utf-8")).get("max_seq_length")
        return settings
    except (json.JSONDecodeError, KeyError, TypeError, OSError) as e:
        raise UserError(f"{modules_file} or a module config it names cannot be read ({e})") from None


def _check_pooling(pooling: str | None) -> None:
    if pooling is not None and pooling not in (*POOLINGS, NO_POOLING):
        raise UserError(f"unknown pooling {pooling!r}; expected one of {', '.join((*POOLINGS, NO_POOLING))}")
