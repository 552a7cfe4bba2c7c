import json

import pytest
import transformers

from distilbert.config import Config
from distilbert.errors import UserError
from helpers.models import hf_config


@pytest.mark.parametrize("family", ["distilbert", "bert"])
def test_round_trip_of_a_transformers_config(tmp_path, family):
    hf = hf_config(family, num_labels=4, sinusoidal_pos_embds=True) if family == "distilbert" else hf_config(family, num_labels=4)
    hf.save_pretrained(tmp_path)
    original = json.loads((tmp_path / "config.json").read_text())
    original["some_future_field"] = {"kept": [1, 2]}
    config = Config.from_dict(original)
    assert config.family == family and config.dim == 39 and config.n_layers == 2 and config.n_heads == 3
    assert config.hidden_dim == 37 and config.num_labels == 4
    out = config.to_dict()
    for key, value in original.items():
        assert out[key] == value, key
    # and transformers reads what we write
    config.save(tmp_path / "config.json")
    again = transformers.AutoConfig.from_pretrained(tmp_path)
    assert again.to_dict()["id2label"] == hf.to_dict()["id2label"]
    assert (again.hidden_size if family == "bert" else again.dim) == 39


def test_every_field_of_both_families():
    d = Config.from_dict({"model_type": "distilbert", "sinusoidal_pos_embds": True, "activation": "relu", "dim": 12,
                          "n_heads": 4, "seq_classif_dropout": 0.3, "qa_dropout": 0.2, "layer_norm_eps": 1e-5,
                          "id2label": {"0": "NEG", "1": "POS"}})
    assert d.sinusoidal_pos_embds and d.activation == "relu" and d.classifier_dropout == 0.3 and d.qa_dropout == 0.2
    assert d.layer_norm_eps == 1e-5 and d.label2id == {"NEG": 0, "POS": 1} and d.type_vocab_size == 0
    b = Config.from_dict({"model_type": "bert", "hidden_size": 12, "num_attention_heads": 4, "hidden_act": "gelu_new",
                          "type_vocab_size": 5, "layer_norm_eps": 1e-7, "label2id": {"A": 1, "B": 0}})
    assert b.type_vocab_size == 5 and b.layer_norm_eps == 1e-7 and b.activation == "gelu_new"
    assert b.id2label == {0: "B", 1: "A"}
    assert Config.from_dict({"model_type": "bert"}).type_vocab_size == 2  # BERT's default


@pytest.mark.parametrize(
    "data, message",
    [
        ({"model_type": "distilbert", "dim": 10, "n_heads": 3}, "dim 10 is not divisible by n_heads 3"),
        ({"model_type": "distilbert", "activation": "swiglu"}, "unknown activation 'swiglu'"),
        ({"model_type": "bert", "hidden_act": "nope"}, "unknown activation 'nope'"),
        ({"model_type": "roberta"}, "model_type 'roberta' is not supported"),
        ({"model_type": "distilbert", "n_layers": 0}, "n_layers must be a positive integer"),
        ({"model_type": "bert", "position_embedding_type": "relative_key"}, "position_embedding_type"),
    ],
)
def test_invalid_values_are_named(data, message):
    with pytest.raises(UserError, match=message):
        Config.from_dict(data)


def test_bad_config_file(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        Config.from_file(tmp_path / "config.json")
    with pytest.raises(UserError, match="no config.json"):
        Config.from_file(tmp_path / "missing" / "config.json")


def test_parameter_count_matches_transformers():
    for family in ("distilbert", "bert"):
        hf = hf_config(family)
        model = transformers.AutoModel.from_config(hf)
        ours = Config.from_dict(hf.to_dict())
        assert ours.parameter_count(with_pooler=family == "bert") == sum(p.numel() for p in model.parameters())


def test_a_config_made_in_python_saves_what_transformers_builds_a_classifier_from(tmp_path):
    config = Config(vocab_size=99, dim=39, n_layers=1, n_heads=3, hidden_dim=37, id2label={0: "no", 1: "yes"})
    config.save(tmp_path / "config.json")
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["seq_classif_dropout"] == 0.2  # what transformers' DistilBertConfig means by default, not null
    model = transformers.DistilBertForSequenceClassification(transformers.AutoConfig.from_pretrained(tmp_path))
    assert model.dropout.p == 0.2 and model.config.id2label == {0: "no", 1: "yes"}
    assert Config.from_file(tmp_path / "config.json").classifier_dropout == 0.2
    bert = Config(family="bert", vocab_size=99, dim=39, n_layers=1, n_heads=3, hidden_dim=37, type_vocab_size=2)
    assert bert.classifier_dropout is None  # BERT's null means: the hidden dropout
