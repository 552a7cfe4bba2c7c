"""init-student copies exactly the named teacher layers; the result loads in transformers."""

import pytest
import torch
import transformers
from safetensors.torch import load_file

from distilbert.errors import UserError
from distilbert.train.student import default_layers, init_student, new_model
from helpers.models import make_reference, save_reference


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    folder = tmp_path_factory.mktemp("teacher")
    ref = make_reference("bert", "ForMaskedLM", vocab_size=30522, num_hidden_layers=6)
    save_reference(ref, folder)
    return folder, ref


def test_default_layers():
    assert default_layers(12) == [0, 2, 4, 7, 9, 11]  # the paper's choice
    assert default_layers(6) == [0, 2, 5]
    assert default_layers(2) == [0]


def test_copies_exactly_the_named_layers(tmp_path, teacher):
    folder, ref = teacher
    init_student(folder, tmp_path, [0, 3, 5])
    t = ref.state_dict()
    s = load_file(tmp_path / "model.safetensors")
    assert not any("token_type" in k or "pooler" in k for k in s)
    for name in ("word_embeddings.weight", "position_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias"):
        assert torch.equal(s[f"distilbert.embeddings.{name}"], t[f"bert.embeddings.{name}"])
    pairs = {
        "attention.q_lin": "attention.self.query", "attention.k_lin": "attention.self.key",
        "attention.v_lin": "attention.self.value", "attention.out_lin": "attention.output.dense",
        "sa_layer_norm": "attention.output.LayerNorm", "ffn.lin1": "intermediate.dense",
        "ffn.lin2": "output.dense", "output_layer_norm": "output.LayerNorm",
    }
    for i, j in enumerate([0, 3, 5]):
        for ours, theirs in pairs.items():
            for p in ("weight", "bias"):
                assert torch.equal(s[f"distilbert.transformer.layer.{i}.{ours}.{p}"], t[f"bert.encoder.layer.{j}.{theirs}.{p}"])
    assert torch.equal(s["vocab_transform.weight"], t["cls.predictions.transform.dense.weight"])
    assert torch.equal(s["vocab_layer_norm.bias"], t["cls.predictions.transform.LayerNorm.bias"])
    assert torch.equal(s["vocab_projector.bias"], t["cls.predictions.bias"])
    student = transformers.DistilBertForMaskedLM.from_pretrained(tmp_path)
    assert student.config.n_layers == 3 and student.config.dim == 39


def test_bad_teachers(tmp_path, teacher, checkpoint_factory):
    folder, _ = teacher
    classifier, _ = checkpoint_factory("bert", "ForSequenceClassification", vocab="real")
    with pytest.raises(UserError, match="no masked-LM head"):
        init_student(classifier, tmp_path / "s1")
    with pytest.raises(UserError, match="must be distinct indices"):
        init_student(folder, tmp_path / "s2", [0, 9])


def test_a_bare_encoder_gives_a_bare_student_to_fine_tune(tmp_path, checkpoint_factory):
    bare, reference = checkpoint_factory("bert", "Model", vocab="real")
    init_student(bare, tmp_path, [0, 1])
    student = transformers.DistilBertModel.from_pretrained(tmp_path)
    assert student.config.n_layers == 2
    assert torch.equal(student.transformer.layer[1].ffn.lin1.weight, reference.encoder.layer[1].intermediate.dense.weight)


def test_new_model_for_pretraining(tmp_path, teacher):
    folder, _ = teacher
    net = new_model(tmp_path, folder, family="bert", dim=24, n_layers=2, n_heads=4, max_position_embeddings=64)
    assert net.config.vocab_size == 30522
    again = transformers.BertForMaskedLM.from_pretrained(tmp_path)
    assert again.config.num_hidden_layers == 2
