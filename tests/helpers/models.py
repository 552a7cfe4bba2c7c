"""Tiny random checkpoints saved by transformers, and where the real data is (../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("DISTILBERT_DATA", ROOT.parent / "shared" / "data"))
VOCAB = DATA / "vocab" / "bert-base-uncased-vocab.txt"

OUTPUTS = ("last_hidden_state", "logits", "start_logits", "end_logits", "pooler_output")  # every head's
ARCHS = ("Model", "ForMaskedLM", "ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering")
TASK_OF_ARCH = {
    "Model": "feature-extraction",
    "ForMaskedLM": "fill-mask",
    "ForSequenceClassification": "text-classification",
    "ForTokenClassification": "token-classification",
    "ForQuestionAnswering": "question-answering",
}


def data_file(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data {path} is missing (set DISTILBERT_DATA to the shared/data folder)")
    return path


def hf_config(family: str, vocab_size: int = 99, num_labels: int = 3, **overrides):
    """Deliberately odd sizes, so a swapped dimension fails loudly."""
    import transformers

    if family == "distilbert":
        kw = dict(vocab_size=vocab_size, dim=39, n_layers=2, n_heads=3, hidden_dim=37, max_position_embeddings=64)
        kw.update(overrides)
        return transformers.DistilBertConfig(num_labels=num_labels, **kw)
    kw = dict(vocab_size=vocab_size, hidden_size=39, num_hidden_layers=2, num_attention_heads=3, intermediate_size=37,
              max_position_embeddings=64, type_vocab_size=3)
    kw.update(overrides)
    return transformers.BertConfig(num_labels=num_labels, **kw)


def make_reference(family: str, arch: str, vocab_size: int = 99, seed: int = 0, **overrides):
    """A transformers model with random weights (biases and LayerNorms too, so nothing hides at zero or one)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    num_labels = len(overrides["id2label"]) if "id2label" in overrides else 2 if arch == "ForQuestionAnswering" else 3
    cls = getattr(transformers, ("DistilBert" if family == "distilbert" else "Bert") + arch)
    model = cls(hf_config(family, vocab_size, num_labels, **overrides)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model


def save_reference(model, folder: Path, tokenizer: bool = True, **kwargs) -> Path:
    model.save_pretrained(folder, **kwargs)
    if tokenizer:
        import transformers

        transformers.BertTokenizerFast(str(VOCAB)).save_pretrained(folder)
    return folder


def batch(family, vocab_size=99, seed=1):
    """Four rows of length 11: a padded row and one that is all padding but [CLS]; token types for BERT."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab_size, (4, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # padded row
    mask[2, 1:] = 0  # everything but [CLS] is padding
    ids[mask == 0] = 0
    types = torch.randint(0, 3, ids.shape, generator=g) if family == "bert" else None
    return ids, mask, types


def sentence_transformers_folder(source: Path, folder: Path, pooling: str = "mean", normalize: bool = False,
                                 max_seq_length: int | None = None) -> Path:
    """A copy of the checkpoint in `source` laid out as sentence-transformers saves one: modules.json naming the
    Transformer, a Pooling module in 1_Pooling (and a Normalize module in 2_Normalize)."""
    import json
    import shutil

    shutil.copytree(source, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": config.get("dim", config.get("hidden_size")),
        **{f"pooling_mode_{mode}": mode == f"{pooling}_tokens" or mode == f"{pooling}_token"
           for mode in ("cls_token", "mean_tokens", "max_tokens")}}))
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (folder / "2_Normalize").mkdir()
    (folder / "modules.json").write_text(json.dumps(modules))
    if max_seq_length is not None:
        (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length,
                                                                      "do_lower_case": False}))
    return folder
