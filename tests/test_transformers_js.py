"""transformers.js (npm @huggingface/transformers 4, in Node with onnxruntime-node) loads our exports unchanged.

Each tiny random model of both families and every task is exported once with fp32, int8 and q4 graphs; the
folder is handed to transformers.js as it is (env.localModelPath, nothing fetched), its `dtype` choosing the
graph, and its answers are compared with our pipelines' on the same folder and precision.

Where transformers.js formats an answer differently from transformers (and so from us), the comparison says so:
fill-mask's `sequence` is decoded by its own tokenizer, whose clean-up of spaces around punctuation differs from
the WordPiece decoder's in a few cases ("i ' m" against "i'm"), so tokens and scores are compared exactly, and the
sequence with its spaces removed; its token classification has no aggregation and no character offsets; its
question answering gives the answer decoded from its tokens (lower case with an uncased vocabulary) where
transformers gives the context's own characters, and no offsets.
"""

import json
import shutil
import subprocess

import numpy as np
import pytest

import distilbert
from helpers.models import ROOT, TASK_OF_ARCH, data_file

JS = ROOT / ".venv" / "js"
TRANSFORMERS_JS = JS / "node_modules" / "@huggingface" / "transformers"
pytestmark = pytest.mark.skipif(
    not TRANSFORMERS_JS.is_dir() or shutil.which("node") is None,
    reason="transformers.js is not installed in .venv/js (./scripts/test installs it with npm) or node is missing")

# transformers.js's dtype for each of our precisions
DTYPES = {"fp32": "fp32", "int8": "q8", "q4": "q4"}
TEXTS = ["Hello I'm a [MASK] model.", "The capital of France is [MASK].", "My name is Wolfgang and I live in Berlin."]
QUESTIONS = [{"question": "Where do I live?", "context": "My name is Wolfgang and I live in Berlin."},
             {"question": "What is the capital of France?", "context": "Paris is the capital and largest city of France."}]


@pytest.fixture(scope="module")
def models(tmp_path_factory, exported):
    """The export folders, each under one models root as transformers.js's localModelPath wants them."""
    data_file("vocab", "bert-base-uncased-vocab.txt")
    root = tmp_path_factory.mktemp("js-models")
    (JS / "pipeline.mjs").write_text((ROOT / "tests" / "js" / "pipeline.mjs").read_text())
    return root, lambda family, arch: _linked(root, family, arch, exported)


def _linked(root, family, arch, exported):
    out, _, _ = exported(family, arch, precisions="fp32,int8,q4")
    name = f"{family}-{arch}"
    if not (root / name).exists():
        (root / name).symlink_to(out)
    return name, out


def transformers_js(root, name, task, dtype, requests):
    p = subprocess.run(["node", str(JS / "pipeline.mjs"), str(root), name, task, dtype],
                       input=json.dumps(requests), capture_output=True, text=True, timeout=180, cwd=JS)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout)


def squeeze(text: str) -> str:
    return text.replace(" ", "")


@pytest.mark.parametrize("precision", list(DTYPES))
@pytest.mark.parametrize("family", ["distilbert", "bert"])
@pytest.mark.parametrize("arch", list(TASK_OF_ARCH))
def test_transformers_js_gives_our_answers(models, family, arch, precision):
    root, link = models
    task = TASK_OF_ARCH[arch]
    name, folder = link(family, arch)
    ours = distilbert.pipeline(task, model=folder, precision=precision)
    if task == "fill-mask":
        requests = [[text, {"top_k": 5}] for text in TEXTS[:2]]
        theirs = transformers_js(root, name, task, DTYPES[precision], requests)
        for (text, _), answer in zip(requests, theirs):
            expected = ours(text, top_k=5)
            assert [a["token"] for a in answer] == [e["token"] for e in expected]
            assert [a["token_str"] for a in answer] == [e["token_str"] for e in expected]
            np.testing.assert_allclose([a["score"] for a in answer], [e["score"] for e in expected], rtol=0, atol=1e-5)
            assert [squeeze(a["sequence"]) for a in answer] == [squeeze(e["sequence"]) for e in expected]
    elif task == "feature-extraction":
        requests = [[TEXTS[2], {"pooling": "none"}], [TEXTS[2], {"pooling": "mean", "normalize": True}],
                    [TEXTS[:2], {"pooling": "mean", "normalize": True}]]
        theirs = transformers_js(root, name, task, DTYPES[precision], requests)
        np.testing.assert_allclose(np.asarray(theirs[0])[0], ours(TEXTS[2], pooling="none"), rtol=0, atol=1e-5)
        np.testing.assert_allclose(np.asarray(theirs[1])[0], ours(TEXTS[2], pooling="mean", normalize=True),
                                   rtol=0, atol=1e-5)
        np.testing.assert_allclose(np.asarray(theirs[2]), ours(TEXTS[:2], pooling="mean", normalize=True),
                                   rtol=0, atol=1e-5)
    elif task == "text-classification":
        requests = [[text, {"top_k": None}] for text in TEXTS]
        theirs = transformers_js(root, name, task, DTYPES[precision], requests)
        for (text, _), answer in zip(requests, theirs):
            expected = ours(text, top_k=None)
            assert [a["label"] for a in answer] == [e["label"] for e in expected]
            np.testing.assert_allclose([a["score"] for a in answer], [e["score"] for e in expected], rtol=0, atol=1e-5)
    elif task == "token-classification":
        requests = [[text, {"ignore_labels": []}] for text in TEXTS[2:]]
        theirs = transformers_js(root, name, task, DTYPES[precision], requests)
        for (text, _), answer in zip(requests, theirs):
            expected = ours(text, ignore_labels=[])
            assert [(a["entity"], a["index"], a["word"]) for a in answer] == \
                   [(e["entity"], e["index"], e["word"]) for e in expected]
            np.testing.assert_allclose([a["score"] for a in answer], [e["score"] for e in expected], rtol=0, atol=1e-5)
    else:
        requests = [[q, {}] for q in QUESTIONS]
        theirs = transformers_js(root, name, task, DTYPES[precision], requests)
        for (q, _), answer in zip(requests, theirs):
            expected = ours(question=q["question"], context=q["context"])
            # the same span: transformers.js decodes the answer's tokens (lower case, as the uncased vocabulary
            # has them) where transformers cuts the context at the span's character offsets
            assert answer["answer"] == expected["answer"].lower(), (answer, expected)
            assert answer["score"] == pytest.approx(expected["score"], abs=1e-5)
