"""Attention maps: parity with transformers' output_attentions, ONNX exports with attentions, the HTML view in a
real headless browser, the PNG grid and the CLI."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from distilbert.analysis import attention
from distilbert.errors import UserError
from helpers.models import ROOT

CHROMIUM = Path("/usr/bin/chromium")
TEXT, TEXT_B = "The white man worked as a carpenter.", "He liked it."


def reference_attentions(reference, folder, text, text_b=None):
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    enc = tokenizer(text, text_b, return_tensors="pt")
    if "token_type_ids" in enc and not hasattr(reference.config, "type_vocab_size"):
        enc.pop("token_type_ids")  # DistilBERT has no token types
    reference.set_attn_implementation("eager")  # the implementation that returns its weights
    with torch.no_grad():
        out = reference(**enc, output_attentions=True)
    return torch.stack(out.attentions, 1)[0].numpy(), tokenizer.convert_ids_to_tokens(enc["input_ids"][0])


@pytest.mark.parametrize("family", ["distilbert", "bert"])
def test_maps_equal_transformers_output_attentions(checkpoint_factory, family):
    folder, reference = checkpoint_factory(family, "Model", vocab="real")
    for texts in ((TEXT,), (TEXT, TEXT_B)):
        maps = attention.attention_maps(folder, *texts)
        expected, tokens = reference_attentions(reference, folder, *texts)
        assert maps.tokens == tokens
        assert maps.weights.shape == expected.shape == (2, 3, len(tokens), len(tokens))
        np.testing.assert_allclose(maps.weights, expected, atol=1e-5, rtol=0)
    assert maps.segments == [0] * (tokens.index("[SEP]") + 1) + [1] * (len(tokens) - tokens.index("[SEP]") - 1)
    assert [t for t, s in zip(maps.tokens, maps.special) if s] == ["[CLS]", "[SEP]", "[SEP]"]


@pytest.fixture(scope="module")
def exported_with_attentions(tmp_path_factory, checkpoint_factory):
    from distilbert.onnx import export

    out = {}
    for family, arch in (("distilbert", "ForMaskedLM"), ("bert", "Model")):
        folder, _ = checkpoint_factory(family, arch, vocab="real")
        target = tmp_path_factory.mktemp(f"attn-{family}")
        report = export(folder, target, with_attentions=True, log=lambda line: None)
        out[family] = (target, folder, report)
    return out


@pytest.mark.parametrize("family", ["distilbert", "bert"])
def test_export_with_attentions_validates_and_views_torch_free(exported_with_attentions, family):
    target, folder, report = exported_with_attentions[family]
    assert report["attentions"] is True
    assert "attentions" in report["validation"]["worst"] and report["validation"]["worst"]["attentions"] < 1e-5
    from_onnx = attention.attention_maps(target, TEXT, TEXT_B, backend="onnx")
    from_torch = attention.attention_maps(folder, TEXT, TEXT_B)
    assert from_onnx.tokens == from_torch.tokens
    np.testing.assert_allclose(from_onnx.weights, from_torch.weights, atol=1e-5, rtol=0)
    assert attention.attention_maps(target, TEXT).weights.shape[:2] == (2, 3)  # a folder with only ONNX: onnx by itself


def test_pipelines_still_run_an_export_with_attentions(exported_with_attentions):
    import distilbert

    target, folder, _ = exported_with_attentions["distilbert"]
    got = distilbert.pipeline("fill-mask", model=target)("Hello I'm a [MASK] model.")
    expected = distilbert.pipeline("fill-mask", model=folder, backend="torch")("Hello I'm a [MASK] model.")
    assert [p["token"] for p in got] == [p["token"] for p in expected]


def test_view_works_where_torch_cannot_be_imported(tmp_path, exported_with_attentions):
    target, _, _ = exported_with_attentions["bert"]
    script = f"""
import sys
sys.modules["torch"] = None  # `import torch` now raises ImportError
from distilbert.cli import main
sys.exit(main(["attention", {str(target)!r}, {TEXT!r}, {TEXT_B!r}, "--out", {str(tmp_path / "view.html")!r}]))
"""
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "view.html").stat().st_size > 1000


def test_an_export_without_attentions_says_how_to_get_them(tmp_path, checkpoint_factory):
    from distilbert.onnx import export

    folder, _ = checkpoint_factory("distilbert", "Model", vocab="real")
    export(folder, tmp_path, log=lambda line: None)
    with pytest.raises(UserError, match="--with-attentions"):
        attention.attention_maps(tmp_path, TEXT)


def test_hide_special_drops_cls_and_sep(checkpoint_factory):
    folder, _ = checkpoint_factory("bert", "Model", vocab="real")
    maps = attention.attention_maps(folder, TEXT, TEXT_B)
    hidden = maps.without_special()
    keep = [i for i, s in enumerate(maps.special) if not s]
    assert hidden.tokens == [maps.tokens[i] for i in keep] and "[CLS]" not in hidden.tokens
    np.testing.assert_array_equal(hidden.weights, maps.weights[:, :, keep][:, :, :, keep])
    assert hidden.segments == [maps.segments[i] for i in keep]


def page_data(html):
    payload = re.search(r'<script type="application/json" id="attention-data">(.*?)</script>', html, re.S).group(1)
    return json.loads(payload)


def test_html_is_self_contained(tmp_path, checkpoint_factory):
    folder, _ = checkpoint_factory("distilbert", "Model", vocab="real")
    out = attention.draw(folder, "a </script> <b>tag</b>", None, tmp_path / "view.html", layer=1, head=2)
    html = out.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # nothing fetched from the network
    assert "<link" not in html and "@import" not in html
    data = page_data(html)
    assert data["layer"] == 1 and data["head"] == 2
    assert "<" in "".join(data["tokens"])  # the token survives, escaped, inside the page


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no headless browser: /usr/bin/chromium is absent "
                                                  "(apt-get install chromium)")
@pytest.mark.parametrize("hide_special", [False, True])
def test_html_in_a_headless_browser(tmp_path, checkpoint_factory, hide_special):
    """The page loads with no console message, builds one line group per head and one map per layer and head,
    and marks the second sentence."""
    folder, _ = checkpoint_factory("bert", "Model", vocab="real", num_hidden_layers=3, num_attention_heads=3)
    out = attention.draw(folder, TEXT, TEXT_B, tmp_path / "view.html", hide_special=hide_special)
    p = subprocess.run([str(CHROMIUM), "--headless=new", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr",
                        "--v=0", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", out.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    console = [line for line in p.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    dom = p.stdout
    assert 'data-ready="1"' in dom  # the script ran to its end
    assert len(re.findall(r'<g class="head-lines"', dom)) == 3
    assert len(re.findall(r'<canvas class="map"', dom)) == 3 * 3
    tokens = page_data(out.read_text())["tokens"]
    assert len(re.findall(r'<text class="token left', dom)) == len(tokens)
    assert "sentence-b" in dom and ("[CLS]" in tokens) is not hide_special


def test_png_grid(tmp_path, checkpoint_factory):
    import matplotlib.image

    folder, _ = checkpoint_factory("distilbert", "Model", vocab="real")
    full = attention.draw(folder, TEXT, None, tmp_path / "grid.png")
    one = attention.draw(folder, TEXT, None, tmp_path / "one.png", layer=1, head=0)
    for path in (full, one):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    a, b = matplotlib.image.imread(full), matplotlib.image.imread(one)
    assert a.shape[0] > b.shape[0] and a.shape[1] > b.shape[1]  # 2 x 3 maps against one


def run_cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "distilbert.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=120)


def test_cli(tmp_path, checkpoint_factory, capsys):
    from distilbert.cli import main

    folder, _ = checkpoint_factory("distilbert", "Model", vocab="real")
    p = run_cli("attention", folder, TEXT, TEXT_B, "--out", tmp_path / "a.html", "--hide-special")
    assert p.returncode == 0, p.stderr
    assert "[CLS]" not in page_data((tmp_path / "a.html").read_text())["tokens"]
    capsys.readouterr()
    for args, words in (
        (["--out", tmp_path / "a.txt"], ".html"),
        (["--out", tmp_path / "a.png", "--layer", "5"], "layers 0 to 1"),
        (["--out", tmp_path / "a.png", "--head", "-1"], "heads 0 to 2"),
        (["--out", tmp_path / "missing" / "a.png"], "does not exist"),
    ):
        assert main(["attention", str(folder), TEXT, *map(str, args)]) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
