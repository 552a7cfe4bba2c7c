"""Shared fixtures: tiny random checkpoints saved by transformers, and the real data in ../shared/data.

Plain helpers live in tests/helpers/; test modules import them from there, never from each other.
"""

from __future__ import annotations

import os

import pytest

from helpers.models import (  # noqa: F401  (also importable from here, for older test modules)
    ARCHS,
    DATA,
    ROOT,
    TASK_OF_ARCH,
    VOCAB,
    data_file,
    hf_config,
    make_reference,
    save_reference,
)


@pytest.fixture(scope="session", autouse=True)
def export_cache(tmp_path_factory):
    """ONNX exports made on first use (backend="onnx" on a PyTorch folder) go to a temporary cache, not ~/.cache."""
    os.environ["DISTILBERT_CACHE"] = str(tmp_path_factory.mktemp("distilbert-cache"))
    return os.environ["DISTILBERT_CACHE"]


@pytest.fixture(scope="session")
def checkpoint_factory(tmp_path_factory):
    """checkpoint_factory(family, arch, vocab="real"|"tiny") -> (folder, transformers model), cached per session."""
    cache = {}

    def make(family: str, arch: str, vocab: str = "tiny", **overrides):
        key = (family, arch, vocab, tuple(sorted(overrides.items())))
        if key not in cache:
            vocab_size = 30522 if vocab == "real" else 99
            ref = make_reference(family, arch, vocab_size, **overrides)
            folder = tmp_path_factory.mktemp(f"{family}-{arch}-{vocab}")
            save_reference(ref, folder, tokenizer=vocab == "real")
            cache[key] = (folder, ref)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def mlm_checkpoint(checkpoint_factory):
    """A DistilBERT masked LM with the real uncased vocabulary and its tokenizer files."""
    data_file("vocab", "bert-base-uncased-vocab.txt")
    return checkpoint_factory("distilbert", "ForMaskedLM", vocab="real")


@pytest.fixture(scope="session")
def exported(tmp_path_factory, checkpoint_factory):
    """exported(family, arch, **export options) -> (export folder, source folder, report), cached per session.

    With quantize="int8" or precisions, the drift is measured on a few lines only (the tests of drift itself pass their own).
    """
    from distilbert.onnx import export

    cache = {}

    def make(family, arch, **options):
        key = (family, arch, tuple(sorted(options.items())))
        if key not in cache:
            source, _ = checkpoint_factory(family, arch, vocab="real")
            out = tmp_path_factory.mktemp(f"onnx-{family}-{arch}")
            if (options.get("quantize") or options.get("precisions")) and "drift_texts" not in options:
                options = {**options, "drift_texts": ("a few words of text to measure the drift on",) * 4}
            cache[key] = (out, source, export(source, out, log=lambda line: None, **options))
        return cache[key]

    return make
