"""The Recipe: the released model's defaults, the JSON file, the checks, and how flags override a file."""

import dataclasses
import json

import pytest

from distilbert.errors import UserError
from distilbert.train.recipe import Recipe
from helpers.models import ROOT

PLACES = dict(student="s", data="d", out="o")


def test_defaults_are_the_released_models():
    r = Recipe()
    assert (r.temperature, r.alpha_ce, r.alpha_mlm, r.alpha_cos, r.alpha_mse) == (2.0, 5.0, 2.0, 1.0, 0.0)
    assert (r.mlm_probability, r.mask_split, r.mlm_smoothing) == (0.15, (0.8, 0.1, 0.1), 0.7)
    assert (r.learning_rate, r.warmup, r.adam_epsilon, r.max_grad_norm, r.gradient_accumulation) == (5e-4, 0.05, 1e-6, 5.0, 50)


def test_json_round_trip(tmp_path):
    r = Recipe(**PLACES, mask_split=(0.5, 0.25, 0.25), teacher="t", max_steps=7)
    (tmp_path / "r.json").write_text(json.dumps(r.to_dict()))
    back = Recipe.from_file(tmp_path / "r.json")
    assert back == r and isinstance(back.mask_split, tuple) and isinstance(back.adam_betas, tuple)


def test_bad_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        Recipe.from_file(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        Recipe.from_file(tmp_path / "bad.json")
    (tmp_path / "typo.json").write_text(json.dumps({"learning_rat": 1, "epoch": 2}))
    with pytest.raises(UserError, match="unknown settings epoch, learning_rat"):
        Recipe.from_file(tmp_path / "typo.json")


@pytest.mark.parametrize("change, message", [
    (dict(student=""), "no model to train"),
    (dict(data=""), "no data"),
    (dict(out=""), "no output folder"),
    (dict(precision="fp8"), "precision must be fp32, bf16 or fp16"),
    (dict(mask_split=(0.8, 0.1, 0.2)), "must be three fractions summing to 1"),
    (dict(epochs=0), "epochs must be at least 1"),
    (dict(gradient_accumulation=0), "gradient_accumulation must be at least 1"),
    (dict(alpha_mlm=0.0), "pretraining without a teacher needs alpha_mlm > 0"),
])
def test_validate_names_the_bad_setting(change, message):
    with pytest.raises(UserError, match=message):
        Recipe(**{**PLACES, **change}).validate()
    Recipe(**PLACES).validate()


def test_flags_override_only_what_they_set():
    r = Recipe(**PLACES, teacher="t", learning_rate=1e-3)
    changed = r.replace(learning_rate=None, warmup=0.1, adam_betas=[0.9, 0.99])
    assert changed.learning_rate == 1e-3 and changed.warmup == 0.1 and changed.adam_betas == (0.9, 0.99)
    assert r.replace(teacher=None).teacher is None  # pretrain says "no teacher" explicitly
    assert dataclasses.replace(r) == r


@pytest.mark.parametrize("name", ["cpu-teacher.json", "cpu-student.json", "paper.json"])
def test_the_shipped_recipes_load_and_validate(name):
    recipe = Recipe.from_file(ROOT / "recipes" / name).replace(**PLACES)
    recipe.validate()
    if name.startswith("cpu-"):  # evaluation blanks tokens uniformly; so must the training that it measures
        assert not recipe.mlm_smoothing
