"""The Keras model against our PyTorch model and transformers, its backend beside torch and onnx, SavedModel."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("keras", reason="Keras 3 is not installed (the tf extra: pip install 'distilbert[tf]')")
pytest.importorskip("tensorflow", reason="TensorFlow is not installed (the tf extra: pip install 'distilbert[tf]')")

import tensorflow as tf  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from helpers.models import ARCHS, OUTPUTS, ROOT, TASK_OF_ARCH, batch, make_reference, save_reference  # noqa: E402
from helpers.venvs import fresh_install
from safetensors.torch import load_file, save_file  # noqa: E402

import distilbert  # noqa: E402
import distilbert.keras as dk  # noqa: E402
from distilbert.backends.keras import KerasBackend  # noqa: E402
from distilbert.checkpoint import load  # noqa: E402
from distilbert.config import Config  # noqa: E402
from distilbert.errors import UserError  # noqa: E402
from distilbert.tokenizer import Tokenizer  # noqa: E402

TOLERANCE = 1e-4
CARD = "Hello I'm a [MASK] model."


def keras_outputs(net, family, **flags):
    ids, mask, types = batch(family)
    return net(ids.numpy(), attention_mask=mask.numpy(), token_type_ids=None if types is None else types.numpy(), **flags)


def assert_close(got, expected, what):
    got = np.asarray(got)
    assert got.shape == tuple(expected.shape), what
    assert not np.isnan(got).any(), what
    np.testing.assert_allclose(got, np.asarray(expected), rtol=0, atol=TOLERANCE, err_msg=what)


def assert_matches(net, ref, family):
    """Every output, each hidden state and each attention map, against transformers and our PyTorch model."""
    ids, mask, types = batch(family)
    ref.set_attn_implementation("eager")  # sdpa gives no attention maps
    with torch.no_grad():
        theirs = ref(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True,
                     **({"token_type_ids": types} if types is not None else {}))
    got = keras_outputs(net, family, output_hidden_states=True, output_attentions=True)
    compared = [name for name in OUTPUTS if getattr(theirs, name, None) is not None]
    assert compared and set(compared) <= set(got)
    for name in compared:
        assert_close(got[name], theirs[name], name)
    assert len(got["hidden_states"]) == len(theirs.hidden_states) == net.config.n_layers + 1
    for i, (x, y) in enumerate(zip(got["hidden_states"], theirs.hidden_states)):
        assert_close(x, y, f"hidden state {i}")
    assert len(got["attentions"]) == len(theirs.attentions) == net.config.n_layers
    for i, (x, y) in enumerate(zip(got["attentions"], theirs.attentions)):
        assert_close(x, y, f"attention map {i}")
    return got


@pytest.mark.parametrize("family", ["distilbert", "bert"])
@pytest.mark.parametrize("arch", ARCHS)
def test_every_head_matches_torch_and_transformers(checkpoint_factory, family, arch):
    folder, ref = checkpoint_factory(family, arch)
    net = dk.from_pretrained(folder)
    assert dk.task_of(net) == TASK_OF_ARCH[arch] and net.config.family == family
    got = assert_matches(net, ref, family)
    ours, _, _ = load(folder)  # our PyTorch model, through its own loader
    ids, mask, types = batch(family)
    with torch.no_grad():
        expected = ours(ids, mask, types, output_hidden_states=True, output_attentions=True)
    for name in OUTPUTS:
        if name in expected:
            assert_close(got[name], expected[name], name)
    for x, y in zip(got["attentions"], expected["attentions"]):
        assert_close(x, y, "attention map")
    assert net.count_params() == sum(p.numel() for p in ref.parameters())  # the projector is tied, not a copy
    if arch == "ForMaskedLM":  # the head at chosen positions alone, as fill-mask asks for it
        at = mask.numpy().astype(bool)
        at[:, 2] = False
        narrowed = keras_outputs(net, family, logits_at=at)["logits"]
        assert_close(narrowed, expected["logits"].numpy()[at], "logits_at")
        only = keras_outputs(net, family, logits_at=at, logits_only=True)  # the last feed-forward there alone
        assert "last_hidden_state" not in only
        assert_close(only["logits"], expected["logits"].numpy()[at], "logits_at, logits_only")
    if arch == "ForSequenceClassification":  # as called plainly: the last feed-forward at [CLS] alone
        plain = keras_outputs(net, family)
        assert "last_hidden_state" not in plain
        assert_close(plain["logits"], expected["logits"], "logits, [CLS] alone")


@pytest.mark.parametrize("family, overrides", [
    ("distilbert", {"sinusoidal_pos_embds": True}),
    ("distilbert", {"activation": "relu"}),
    ("bert", {"hidden_act": "gelu_new", "layer_norm_eps": 1e-5}),
])
def test_config_variants_match(tmp_path, family, overrides):
    ref = make_reference(family, "ForMaskedLM", **overrides)
    save_reference(ref, tmp_path, tokenizer=False)
    assert_matches(dk.from_pretrained(tmp_path), ref, family)


def test_fresh_sinusoidal_positions_are_the_table():
    config = Config(vocab_size=99, dim=38, n_layers=1, n_heads=2, hidden_dim=37, max_position_embeddings=64,
                    sinusoidal_pos_embds=True)
    from distilbert.model import build

    torch_net = build(config, "fill-mask")
    net = dk.build(config, "fill-mask")
    np.testing.assert_array_equal(net.encoder.embeddings.position_embeddings.embeddings.numpy(),
                                  torch_net.encoder.embeddings.position_embeddings.weight.detach().numpy())
    assert not net.encoder.embeddings.word_embeddings.embeddings.numpy()[config.pad_token_id].any()


def test_sharded_and_bf16_checkpoints(tmp_path):
    ref = make_reference("bert", "ForSequenceClassification")
    save_reference(ref, tmp_path / "sharded", tokenizer=False, max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    assert_matches(dk.from_pretrained(tmp_path / "sharded"), ref, "bert")
    # bfloat16 weights (numpy has no such type): widened to float32 as torch widens them
    save_reference(ref, tmp_path / "bf16", tokenizer=False)
    state = load_file(tmp_path / "bf16" / "model.safetensors")
    save_file({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in state.items()},
              tmp_path / "bf16" / "model.safetensors", metadata={"format": "pt"})
    net = dk.from_pretrained(tmp_path / "bf16")
    widened, _, _ = load(tmp_path / "bf16")
    ids, mask, types = batch("bert")
    with torch.no_grad():
        expected = widened(ids, mask, types)["logits"]
    assert_close(keras_outputs(net, "bert")["logits"], expected, "bf16 logits")


TF_ONLY_SCRIPT = """
import sys
import numpy as np
try:
    import torch  # noqa: F401
    sys.exit("torch is importable in the tf-only install")
except ImportError:
    pass
import distilbert.keras as dk
ids, mask = np.load(sys.argv[1])["ids"], np.load(sys.argv[1])["mask"]
out = {name: np.asarray(dk.from_pretrained(folder)(ids, attention_mask=mask)["logits"]) for name, folder in
       zip(("single", "sharded"), sys.argv[3:])}
np.savez(sys.argv[2], **out)
"""


@pytest.mark.slow
def test_the_tf_extra_alone_reads_safetensors_weights(tmp_path):
    """`pip install '.[tf]'` in a fresh venv, no PyTorch there: from_pretrained reads model.safetensors (single and
    sharded, through safetensors' numpy path) and gives this environment's logits."""
    python, work = fresh_install(tmp_path, "tf")
    assert subprocess.run([python, "-c", "import torch"], capture_output=True, timeout=120, cwd=work).returncode != 0
    folders = [save_reference(make_reference("distilbert", "ForMaskedLM"), tmp_path / "single", tokenizer=False),
               save_reference(make_reference("bert", "ForSequenceClassification"), tmp_path / "sharded",
                              tokenizer=False, max_shard_size="20KB")]
    assert (folders[1] / "model.safetensors.index.json").exists()
    ids, mask, _ = batch("distilbert")
    np.savez(tmp_path / "inputs.npz", ids=ids.numpy(), mask=mask.numpy())
    run = subprocess.run([python, "-c", TF_ONLY_SCRIPT, tmp_path / "inputs.npz", tmp_path / "out.npz", *folders],
                         capture_output=True, text=True, timeout=600, cwd=work,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert run.returncode == 0, run.stderr[-3000:]
    there = np.load(tmp_path / "out.npz")
    for name, folder in zip(("single", "sharded"), folders):
        here = np.asarray(dk.from_pretrained(folder)(ids.numpy(), attention_mask=mask.numpy())["logits"])
        np.testing.assert_allclose(there[name], here, rtol=0, atol=1e-5, err_msg=name)


def test_missing_unexpected_and_misshaped_keys_are_all_listed(tmp_path):
    ref = make_reference("distilbert", "ForMaskedLM")
    save_reference(ref, tmp_path, tokenizer=False)
    state = load_file(tmp_path / "model.safetensors")
    del state["distilbert.transformer.layer.1.ffn.lin2.bias"]
    state["distilbert.transformer.layer.7.ffn.lin2.bias"] = torch.zeros(39)
    state["vocab_transform.weight"] = torch.zeros(39, 40)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(UserError) as e:
        dk.from_pretrained(tmp_path)
    message = str(e.value)
    assert "missing keys: encoder.transformer.layer.1.ffn.lin2.bias" in message
    assert "unexpected keys: distilbert.transformer.layer.7.ffn.lin2.bias" in message
    assert "vocab_transform.weight (39, 40) vs (39, 39)" in message  # in torch's layout, as the file has it
    assert "\n" not in message
    with pytest.raises(UserError) as torch_error:
        load(tmp_path)
    assert str(torch_error.value) == message  # one check for both


def test_task_override_drops_or_demands_a_head(checkpoint_factory):
    folder, ref = checkpoint_factory("distilbert", "ForMaskedLM")
    body = dk.from_pretrained(folder, task="feature-extraction")
    assert dk.task_of(body) == "feature-extraction" and not hasattr(body, "vocab_transform")
    with pytest.raises(UserError, match="has a fill-mask head, not a text-classification head; run it as fill-mask"):
        dk.from_pretrained(folder, task="text-classification")
    fresh = dk.from_pretrained(folder, task="text-classification", allow_new_head=True)
    np.testing.assert_array_equal(fresh.encoder.embeddings.word_embeddings.embeddings.numpy(),
                                  ref.distilbert.embeddings.word_embeddings.weight.detach().numpy())


def test_full_size_parameter_count():
    config = Config()  # distilbert-base-uncased's sizes
    net = dk.build(config, "feature-extraction")
    assert net.count_params() == config.parameter_count() == 66_362_880
    from distilbert.model import build

    with torch.device("meta"):
        assert sum(p.numel() for p in build(config, "feature-extraction", init=False).parameters()) == 66_362_880


def test_the_model_cards_example(mlm_checkpoint):
    """The card's TensorFlow example in our API, on a distilbert-base-uncased shaped checkpoint."""
    folder, ref = mlm_checkpoint
    tokenizer = Tokenizer.from_pretrained(folder)
    model = distilbert.keras.from_pretrained(folder)
    text = "Replace me by any text you'd like."
    encoded_input = tokenizer(text, return_tensors="tf")
    assert all(isinstance(v, tf.Tensor) and v.dtype == tf.int64 for v in encoded_input.values())
    output = model(encoded_input)
    assert isinstance(output["last_hidden_state"], tf.Tensor)
    theirs = transformers.AutoTokenizer.from_pretrained(folder)(text, return_tensors="pt")
    with torch.no_grad():
        expected = ref.distilbert(**theirs).last_hidden_state
    assert_close(output["last_hidden_state"], expected, "last_hidden_state")
    with pytest.raises(UserError, match="return_tensors must be 'np', 'tf' or None"):
        tokenizer(text, return_tensors="pt")


# --- pipelines on every backend ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def on_three_backends(checkpoint_factory, tmp_path_factory):
    """on_three_backends(family, arch, task) -> {backend: pipeline}, the ONNX one on our own export."""
    from distilbert.onnx import export

    def make(family, arch, task):
        source, _ = checkpoint_factory(family, arch, vocab="real")
        out = tmp_path_factory.mktemp(f"onnx-{family}-{arch}")
        export(source, out, log=lambda line: None)
        return {"torch": distilbert.pipeline(task, model=source, backend="torch"),
                "onnx": distilbert.pipeline(task, model=out, backend="onnx"),
                "keras": distilbert.pipeline(task, model=source, backend="keras")}

    return make


def test_fill_mask_same_top5_on_every_backend(on_three_backends):
    pipes = on_three_backends("distilbert", "ForMaskedLM", "fill-mask")
    assert type(pipes["keras"].backend) is KerasBackend
    texts = [CARD, "The [MASK] sat on the [MASK].", "A much longer text, with commas, where the [MASK] hides."]
    answers = {name: pipe(texts) for name, pipe in pipes.items()}
    for name in ("onnx", "keras"):
        for ours, theirs in zip(answers[name], answers["torch"]):
            flat_a, flat_b = (x if isinstance(x[0], dict) else sum(x, []) for x in (ours, theirs))
            assert [p["token"] for p in flat_a] == [p["token"] for p in flat_b]
            assert [p["sequence"] for p in flat_a] == [p["sequence"] for p in flat_b]
            assert max(abs(p["score"] - q["score"]) for p, q in zip(flat_a, flat_b)) < 1e-5


def test_text_classification_same_labels_on_every_backend(on_three_backends):
    pipes = on_three_backends("bert", "ForSequenceClassification", "text-classification")
    texts = ["a fine film", "not good at all, and far too long", {"text": "a question?", "text_pair": "an answer."}]
    answers = {name: pipe(texts, top_k=None) for name, pipe in pipes.items()}
    for name in ("onnx", "keras"):
        for ours, theirs in zip(answers[name], answers["torch"]):
            assert [r["label"] for r in ours] == [r["label"] for r in theirs]
            assert max(abs(r["score"] - s["score"]) for r, s in zip(ours, theirs)) < 1e-5


def test_token_classification_same_entities_on_every_backend(on_three_backends):
    pipes = on_three_backends("distilbert", "ForTokenClassification", "token-classification")
    texts = ["George Washington went to Washington.", "A longer text about Paris, Berlin and the river Seine."]
    for strategy in ("none", "simple"):
        answers = {name: pipe(texts, aggregation_strategy=strategy) for name, pipe in pipes.items()}
        for name in ("onnx", "keras"):
            for ours, theirs in zip(answers[name], answers["torch"]):
                strip = lambda entities: [{k: v for k, v in e.items() if k != "score"} for e in entities]  # noqa: E731
                assert strip(ours) == strip(theirs)
                assert max((abs(a["score"] - b["score"]) for a, b in zip(ours, theirs)), default=0) < 1e-5


def test_question_answering_same_answers_on_every_backend(on_three_backends):
    pipes = on_three_backends("bert", "ForQuestionAnswering", "question-answering")
    question, context = "Where does the river flow?", "The river Seine flows through Paris, the capital of France."
    answers = {name: pipe(question=question, context=context, top_k=3) for name, pipe in pipes.items()}
    for name in ("onnx", "keras"):
        assert [(a["start"], a["end"], a["answer"]) for a in answers[name]] == \
            [(a["start"], a["end"], a["answer"]) for a in answers["torch"]]
        assert max(abs(a["score"] - b["score"]) for a, b in zip(answers[name], answers["torch"])) < 1e-5


def test_embeddings_equal_on_every_backend(on_three_backends):
    pipes = on_three_backends("bert", "Model", "feature-extraction")
    texts = ["one text", "and a second, longer one with more words in it", "x"]
    expected = pipes["torch"](texts, pooling="mean")
    for name in ("onnx", "keras"):
        np.testing.assert_allclose(pipes[name](texts, pooling="mean"), expected, rtol=0, atol=1e-5)


def test_xla_compiled_backend_gives_the_same_outputs(checkpoint_factory):
    folder, _ = checkpoint_factory("distilbert", "ForMaskedLM")
    plain, xla = KerasBackend.load(folder), KerasBackend.load(folder, jit_compile=True)
    ids, mask, _ = batch("distilbert")
    arrays = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    at = mask.numpy().astype(bool)
    at[:, 3:] = False
    for kwargs in ({}, {"logits_at": at}):
        a, b = plain.run(**arrays, **kwargs), xla.run(**arrays, **kwargs)
        # logits at some positions: the backend asks for logits alone, and the last feed-forward runs there alone
        assert a.keys() == b.keys() == ({"logits"} if kwargs else {"last_hidden_state", "logits"})
        for name in a:
            np.testing.assert_allclose(b[name], a[name], rtol=0, atol=TOLERANCE)
    assert xla.run(**arrays, logits_at=at)["logits"].shape == (at.sum(), 99)


def test_backend_bad_input(mlm_checkpoint):
    folder, _ = mlm_checkpoint
    with pytest.raises(UserError, match="precision 'int8' is not available with the keras backend"):
        distilbert.pipeline("fill-mask", model=folder, backend="keras", precision="int8")
    with pytest.raises(UserError, match="unknown backend 'tf'; expected one of torch, onnx, keras"):
        distilbert.pipeline("fill-mask", model=folder, backend="tf")


# --- SavedModel ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("family, arch", [("bert", "ForSequenceClassification"), ("distilbert", "ForMaskedLM"),
                                          ("bert", "ForQuestionAnswering")])
def test_savedmodel_round_trip(checkpoint_factory, tmp_path, family, arch):
    folder, _ = checkpoint_factory(family, arch)
    net = dk.from_pretrained(folder)
    dk.save_savedmodel(net, tmp_path / "saved")
    serve = tf.saved_model.load(str(tmp_path / "saved")).signatures["serving_default"]
    inputs = ["input_ids", "attention_mask"] + (["token_type_ids"] if family == "bert" else [])
    assert sorted(serve.structured_input_signature[1]) == sorted(inputs)
    assert all(spec.dtype == tf.int64 and spec.shape.as_list() == [None, None]
               for spec in serve.structured_input_signature[1].values())
    ids, mask, types = batch(family)
    feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": None if types is None else types.numpy()}
    got = serve(**{k: tf.constant(feed[k]) for k in inputs})
    expected = keras_outputs(net, family)
    outputs = {"text-classification": ["logits"], "fill-mask": ["logits"], "question-answering": ["start_logits", "end_logits"]}
    assert sorted(got) == sorted(outputs[TASK_OF_ARCH[arch]])
    for name in got:
        np.testing.assert_allclose(got[name].numpy(), np.asarray(expected[name]), rtol=0, atol=1e-5)


def test_cli_savedmodel_export_and_keras_backend_without_torch(tmp_path, mlm_checkpoint):
    """One process (TensorFlow is slow to start) with torch made unimportable: the CLI's export to a SavedModel,
    then fill-mask on the keras backend, then the export's bad flags."""
    folder, _ = mlm_checkpoint
    out = tmp_path / "saved"
    script = f"""
import sys

class NoTorch:  # `import torch` raises ImportError (not sys.modules["torch"] = None: scipy looks there)
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError("no torch here")

sys.meta_path.insert(0, NoTorch())
from distilbert.cli import main
print("RC", main(["export", {str(folder)!r}, {str(out)!r}, "--format", "savedmodel"]))
print("RC", main(["fill-mask", {CARD!r}, "--model", {str(folder)!r}, "--backend", "keras", "--top-k", "3", "--json"]))
print("RC", main(["export", {str(folder)!r}, {str(out)!r}, "--format", "savedmodel", "--quantize", "int8"]))
print("TORCH", "torch" in sys.modules)
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.splitlines()
    assert [line for line in lines if line.startswith("RC")] == ["RC 0", "RC 0", "RC 2"], p.stdout + p.stderr[-3000:]
    assert "as a TensorFlow SavedModel" in p.stdout and "TORCH False" in lines
    assert "error: --quantize is for ONNX exports only" in p.stderr
    report = json.loads((out / "export_report.json").read_text())
    assert report["task"] == "fill-mask" and report["validation"]["worst"]["logits"] <= 1e-4
    assert (out / "saved_model.pb").is_file() and (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    top3 = json.loads(next(line for line in lines if line.startswith("[")))
    expected = distilbert.pipeline("fill-mask", model=folder, backend="torch")(CARD, top_k=3)
    assert [r["token"] for r in top3] == [r["token"] for r in expected]
    reloaded = tf.saved_model.load(str(out)).signatures["serving_default"]
    feed = Tokenizer.from_pretrained(out)(CARD, return_tensors="tf")
    logits = reloaded(input_ids=feed["input_ids"], attention_mask=feed["attention_mask"])["logits"].numpy()
    at = feed["input_ids"].numpy()[0] == 103
    assert int(logits[0][at][0].argmax()) == top3[0]["token"]
