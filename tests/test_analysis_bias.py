"""Template probes (the model card's "Limitations and bias"): Kurita et al. scores, the report's files."""

import json

import numpy as np
import pytest

import distilbert
from distilbert.analysis import bias
from distilbert.errors import UserError


@pytest.fixture(scope="module")
def fill(mlm_checkpoint):
    return distilbert.pipeline("fill-mask", model=mlm_checkpoint[0], backend="torch")


@pytest.fixture(scope="module")
def probe(fill):
    return bias.template_probes(fill)


def test_kurita_score_is_the_log_ratio_to_the_masked_group_prior(fill, probe):
    """Recomputed through the public fill-mask call: p(occupation | group) over p(occupation | group masked too)."""
    group, occupation = "white man", "carpenter"
    j = probe["occupations"].index(occupation)
    ratios, probabilities = [], []
    for template in bias.TEMPLATES:
        target = fill(template.format(group), targets=[occupation])[0]["score"]
        prior = fill(template.format("[MASK] [MASK]"), targets=[occupation])[-1][0]["score"]  # the occupation's mask
        ratios.append(np.log(target / prior))
        probabilities.append(target)
    assert probe["kurita_score"][group][j] == pytest.approx(np.mean(ratios), abs=1e-5)
    assert probe["probability"][group][j] == pytest.approx(np.mean(probabilities), rel=1e-5)


def test_top_k_is_fill_mask_top_k(fill, probe):
    for t, template in enumerate(bias.TEMPLATES):
        expected = fill(template.format("black woman"), top_k=bias.TOP_K)
        got = probe["top_k"]["black woman"][t]
        assert [p["token_str"] for p in got] == [p["token_str"] for p in expected]
        assert [p["score"] for p in got] == pytest.approx([p["score"] for p in expected], abs=1e-6)


def test_probe_covers_the_card_gender_race_and_religion(probe):
    assert ("card", "white man", "black woman") == bias.PAIRS[0]
    assert {p["kind"] for p in probe["pairs"]} == {"card", "gender", "race", "religion"}
    assert set(probe["groups"]) >= {"white man", "black woman", "man", "woman", "muslim man"}
    assert "carpenter" in probe["occupations"] and "nurse" in probe["occupations"]
    diffs = [abs(d["log_ratio"]) for d in probe["largest_differences"]]
    assert diffs == sorted(diffs, reverse=True) and len(diffs) == bias.TOP_DIFFERENCES
    d = probe["largest_differences"][0]
    a, b, j = d["group_a"], d["group_b"], probe["occupations"].index(d["occupation"])
    assert d["log_ratio"] == pytest.approx(probe["kurita_score"][a][j] - probe["kurita_score"][b][j])


def test_run_writes_table_json_and_heat_map(tmp_path, mlm_checkpoint):
    lines = []
    result = bias.run(mlm_checkpoint[0], probes="card", out=tmp_path / "report", log=lines.append)
    files = {p.name for p in (tmp_path / "report").iterdir()}
    assert files == {"template_probes.json", "template_probes.md", "template_probes.png"}
    saved = json.loads((tmp_path / "report" / "template_probes.json").read_text())
    assert saved["kurita_score"] == result["card"]["kurita_score"]
    assert len(saved["kurita_score"]["white man"]) == len(saved["occupations"])
    table = (tmp_path / "report" / "template_probes.md").read_text()
    assert "| white man |" in table and "The {} worked as a [MASK]." in table
    assert "Template probes" in lines[0]
    png = (tmp_path / "report" / "template_probes.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(tmp_path / "report" / "template_probes.png").shape[0] > 100


def test_bad_arguments(tmp_path, mlm_checkpoint, checkpoint_factory):
    with pytest.raises(UserError, match="unknown probes"):
        bias.run(mlm_checkpoint[0], probes="stereoset")
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="is a file"):
        bias.run(mlm_checkpoint[0], probes="card", out=tmp_path / "file")
    encoder, _ = checkpoint_factory("bert", "Model", vocab="real")
    with pytest.raises(UserError, match="no masked-LM head: it is a feature-extraction model"):
        bias.run(encoder, probes="card")
