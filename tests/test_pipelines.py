"""Pipelines against transformers' pipelines on the same checkpoint."""

import logging

import numpy as np
import pytest
import torch
import transformers

import distilbert
from distilbert.errors import UserError
from distilbert.pipelines.features import pool
from helpers.models import sentence_transformers_folder


# Every backend passes the same tests: PyTorch and ONNX Runtime to fp32 precision, int8 to its own looser one.
BACKENDS = {"torch": {"backend": "torch"}, "onnx": {"backend": "onnx"},
            "int8": {"backend": "onnx", "precision": "int8"}}
TOLERANCE = {"torch": 1e-5, "onnx": 1e-5, "int8": 0.05}


@pytest.fixture(scope="module", params=list(BACKENDS))
def engine(request, mlm_checkpoint, exported):
    """engine(task) -> (model folder, pipeline options, tolerance) for this backend; the same checkpoint for all."""
    name = request.param

    def folder_for(task):
        if name == "torch":
            return mlm_checkpoint[0]
        out, _, _ = exported("distilbert", "ForMaskedLM", task=task, quantize="int8")
        return out

    return lambda task: (folder_for(task), BACKENDS[name], TOLERANCE[name])


def assert_same_fill(ours, theirs, tolerance=1e-5):
    """Key for key; scores within `tolerance`. Looser than fp32 (int8), the predicted tokens may trade places
    where their scores are that close, and the result must keep transformers' structure and formatting."""
    if isinstance(theirs, dict):
        assert set(ours) == set(theirs) == {"score", "token", "token_str", "sequence"}
        if tolerance <= 1e-4 or ours["token"] == theirs["token"]:
            assert ours["token"] == theirs["token"] and ours["token_str"] == theirs["token_str"]
            assert ours["sequence"] == theirs["sequence"]
        assert abs(ours["score"] - theirs["score"]) <= tolerance
        return
    assert isinstance(ours, list) and len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert_same_fill(a, b, tolerance)
    if theirs and isinstance(theirs[0], dict) and tolerance > 1e-4:  # int8: the same tokens, nearly in order
        assert ours[0]["token"] in [t["token"] for t in theirs[:2]]
        shared = {t["token"] for t in ours} & {t["token"] for t in theirs}
        assert len(shared) >= len(theirs) - 2


@pytest.fixture(scope="module")
def fill(engine, mlm_checkpoint):
    folder, options, tolerance = engine("fill-mask")
    reference = transformers.pipeline("fill-mask", model=str(mlm_checkpoint[0]))
    return distilbert.pipeline("fill-mask", model=folder, **options), reference, tolerance


@pytest.mark.parametrize(
    "inputs, kwargs",
    [
        ("Hello I'm a [MASK] model.", {}),
        ("Hello I'm a [MASK] model.", {"top_k": 12}),
        ("The [MASK] sat on the [MASK] near the [MASK].", {"top_k": 3}),
        (["Paris is the [MASK] of France.", "A much longer text, with commas, where the [MASK] hides.", "[MASK]"], {}),
        (["Only one text in a [MASK]."], {}),
        ("I like [MASK] very much.", {"targets": ["dogs", "cats", "music", "zzqxj"]}),
        ("I like [MASK] and [MASK].", {"targets": "tea", "top_k": 2}),
    ],
)
def test_fill_mask_matches_transformers(fill, inputs, kwargs):
    ours, theirs, tolerance = fill
    assert_same_fill(ours(inputs, **kwargs), theirs(inputs, **kwargs), tolerance)


def test_fill_mask_batched_equals_one_by_one(fill):
    ours, _, _ = fill
    texts = [f"text number {i} with a [MASK] " + "and more " * i for i in range(9)]
    together = ours(texts)
    for text, answer in zip(texts, together):
        assert_same_fill(answer, ours(text))


def test_fill_mask_bad_input(fill):
    ours, _, _ = fill
    with pytest.raises(UserError, match=r"no \[MASK\] in 'no mask here'"):
        ours("no mask here")
    with pytest.raises(UserError, match="no input text"):
        ours([])
    with pytest.raises(UserError, match="top_k must be a positive integer"):
        ours("a [MASK]", top_k=0)


def test_long_text_is_truncated_with_a_warning(fill, caplog):
    ours, theirs, tolerance = fill
    text = "[MASK] " + "word " * 700
    with caplog.at_level(logging.WARNING, logger="distilbert"):
        answer = ours(text)
    assert "truncated" in caplog.text
    expected = theirs(text, tokenizer_kwargs={"truncation": True, "max_length": 64})  # it would crash at 512
    assert_same_fill(answer, expected, tolerance)


def test_a_mask_cut_off_by_truncation_says_so(fill):
    ours, _, _ = fill
    text = "word " * 100 + "and the [MASK]."
    with pytest.raises(UserError) as e:
        ours(text)
    assert str(e.value) == (f"the text {text[:60]!r} was truncated before its [MASK]: the mask is token 104 of 106 "
                            "and the model reads 64; put it within the first 62 tokens or shorten the text")


@pytest.fixture(scope="module")
def features(engine, mlm_checkpoint):
    folder, options, tolerance = engine("feature-extraction")
    reference = transformers.pipeline("feature-extraction", model=str(mlm_checkpoint[0]))
    return distilbert.pipeline("feature-extraction", model=folder, **options), reference, tolerance


TEXTS = ["Hello world.", "A somewhat longer sentence about distillation of language models.", "x", ""]


def test_token_features_match_transformers(features):
    ours, theirs, tolerance = features
    for text in TEXTS:
        expected = np.asarray(theirs(text))[0]
        got = ours(text)
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=tolerance)


@pytest.mark.parametrize("pooling", ["cls", "mean", "max"])
@pytest.mark.parametrize("normalize", [False, True])
def test_pooled_embeddings_follow_sentence_transformers(features, mlm_checkpoint, pooling, normalize):
    ours, _, tolerance = features
    folder, ref = mlm_checkpoint
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = ref.distilbert(**enc).last_hidden_state
    m = enc["attention_mask"][..., None].float()
    expected = {  # sentence_transformers.models.Pooling, written out
        "cls": h[:, 0],
        "mean": (h * m).sum(1) / m.sum(1).clamp(min=1e-9),
        "max": torch.where(m > 0, h, torch.tensor(-1e9)).max(1).values,
    }[pooling]
    if normalize:
        expected = torch.nn.functional.normalize(expected, dim=-1)
    got = ours(TEXTS, pooling=pooling, normalize=normalize)
    assert got.shape == (len(TEXTS), 39)
    np.testing.assert_allclose(got, expected.numpy(), rtol=0, atol=tolerance)
    single = ours(TEXTS[1], pooling=pooling, normalize=normalize)
    # batched equals one by one (int8 to its tolerance: dynamic quantization scales activations per batch)
    np.testing.assert_allclose(single, got[1], rtol=0, atol=tolerance)


def test_sentence_transformers_folder_settings(tmp_path, mlm_checkpoint):
    folder, _ = mlm_checkpoint
    st = sentence_transformers_folder(folder, tmp_path / "st", pooling="max", normalize=True, max_seq_length=16)
    p = distilbert.pipeline("feature-extraction", model=st)
    assert (p.pooling, p.normalize, p.max_length) == ("max", True, 16)
    plain = distilbert.pipeline("feature-extraction", model=folder, max_length=16)
    np.testing.assert_allclose(p(TEXTS), plain(TEXTS, pooling="max", normalize=True), rtol=0, atol=1e-6)
    assert np.allclose(np.linalg.norm(p(TEXTS), axis=-1), 1.0, atol=1e-5)


def test_pooling_none_gives_token_features_on_a_sentence_transformers_folder(tmp_path, mlm_checkpoint):
    """pooling=None is the folder's pooling; "none" is no pooling: transformers' last_hidden_state, per text."""
    folder, ref = mlm_checkpoint
    st = sentence_transformers_folder(folder, tmp_path / "st", pooling="max", normalize=True)
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    expected = []
    for text in TEXTS:
        with torch.no_grad():
            expected.append(ref.distilbert(**tok(text, return_tensors="pt")).last_hidden_state[0].numpy())
    folder_pools = distilbert.pipeline("feature-extraction", model=st)
    assert folder_pools(TEXTS[1]).shape == (39,) and folder_pools(TEXTS[1], pooling=None).shape == (39,)
    got = folder_pools(TEXTS, pooling="none")
    assert [g.shape for g in got] == [e.shape for e in expected]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=0, atol=1e-5)
    np.testing.assert_allclose(folder_pools(TEXTS[1], pooling="none"), expected[1], rtol=0, atol=1e-5)
    never_pools = distilbert.pipeline("feature-extraction", model=st, pooling="none")
    np.testing.assert_allclose(never_pools(TEXTS[1]), expected[1], rtol=0, atol=1e-5)
    assert never_pools(TEXTS[1], pooling="mean").shape == (39,)


def test_pool_ignores_padding():
    hidden = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    np.testing.assert_allclose(pool(hidden, mask, "mean"), [[1, 2], [6, 7]])
    np.testing.assert_allclose(pool(hidden, mask, "max"), [[2, 3], [6, 7]])
    np.testing.assert_allclose(pool(hidden, mask, "cls"), [[0, 1], [6, 7]])


def test_unknown_task_and_pooling(mlm_checkpoint):
    folder, _ = mlm_checkpoint
    with pytest.raises(UserError, match="unknown task 'summarize'"):
        distilbert.pipeline("summarize", model=folder)
    with pytest.raises(UserError, match="unknown pooling 'median'"):
        distilbert.pipeline("feature-extraction", model=folder, pooling="median")


def test_top_k_equals_a_stable_full_sort_even_with_ties():
    from distilbert.pipelines.fill_mask import top_k_indices

    rng = np.random.default_rng(0)
    for _ in range(300):
        row = rng.integers(0, 40, size=257).astype(np.float32)  # many ties, also at the k-th place
        k = int(rng.integers(1, 300))
        np.testing.assert_array_equal(top_k_indices(row, k), np.argsort(-row, kind="stable")[:k])
    for i in range(300):  # vocabulary-sized rows take the block-maxima path: ties, sorted rows, all equal
        row = rng.standard_normal(30522).astype(np.float32)
        row = (np.round(row, 1), np.sort(row), np.zeros_like(row), row)[i % 4]
        k = int(rng.integers(1, 70))
        np.testing.assert_array_equal(top_k_indices(row, k), np.argsort(-row, kind="stable")[:k])


def test_bf16_fast_mode_stays_close_to_fp32(mlm_checkpoint):
    folder, _ = mlm_checkpoint
    exact = distilbert.pipeline("feature-extraction", model=folder)
    fast = distilbert.pipeline("feature-extraction", model=folder, precision="bf16")
    assert next(fast.backend.net.parameters()).dtype == torch.bfloat16  # weights held in bf16, not autocast
    a, b = exact(TEXTS, pooling="mean"), fast(TEXTS, pooling="mean")
    assert b.dtype == np.float32
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosine.min() > 0.99
    with pytest.raises(UserError, match="int8 runs on ONNX Runtime"):
        distilbert.pipeline("fill-mask", model=folder, backend="torch", precision="int8")


def test_a_tokenizer_that_does_not_belong_to_the_model_is_refused(tmp_path, mlm_checkpoint):
    """transformers 5's keyword form BertTokenizerFast(vocab_file=...) writes a 5-token vocabulary."""
    from helpers.models import VOCAB

    folder, _ = mlm_checkpoint
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    for name in ("config.json", "model.safetensors"):
        (wrong / name).write_bytes((folder / name).read_bytes())
    transformers.BertTokenizerFast(vocab_file=str(VOCAB)).save_pretrained(wrong)
    with pytest.raises(UserError, match="has 5 tokens but the model's config.json says vocab_size 30522") as e:
        distilbert.pipeline("fill-mask", model=wrong)
    assert "\n" not in str(e.value)


def test_a_slightly_smaller_tokenizer_is_run_with_a_warning(tmp_path, caplog):
    """Embedding tables padded past the vocabulary (to a multiple of 8, say) are common: warn, and run."""
    from helpers.models import make_reference, save_reference

    folder = save_reference(make_reference("distilbert", "ForMaskedLM", vocab_size=30528), tmp_path / "padded")
    with caplog.at_level(logging.WARNING, logger="distilbert"):
        fill = distilbert.pipeline("fill-mask", model=folder)
    assert "has 30522 tokens and the model's vocab_size is 30528" in caplog.text
    assert len(fill("Hello [MASK].", top_k=2)) == 2
