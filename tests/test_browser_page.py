"""examples/browser: our export in a real browser through transformers.js (served from the local node_modules,
no CDN), the card's fill-mask compared with our pipeline's, in fp32 and q8."""

import json
import os
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

import distilbert
from helpers.browser import CHROMIUM, Browser
from helpers.models import ROOT, data_file

NODE_MODULES = ROOT / ".venv" / "js" / "node_modules"
CARD = "Hello I'm a [MASK] model."
pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no headless browser: /usr/bin/chromium is absent (apt-get install chromium)"),
    pytest.mark.skipif(not (NODE_MODULES / "@huggingface" / "transformers").is_dir(),
                       reason="transformers.js is not installed in .venv/js (./scripts/test installs it with npm)"),
]


@pytest.fixture(scope="module")
def page(exported):
    data_file("vocab", "bert-base-uncased-vocab.txt")
    out, _, _ = exported("distilbert", "ForMaskedLM", precisions="fp32,int8,q4")
    with socketless_port() as port:
        server = subprocess.Popen([sys.executable, str(ROOT / "examples" / "browser" / "serve.py"), str(out),
                                   "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}/"
    for _ in range(100):
        try:
            urllib.request.urlopen(base, timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    yield base, out
    server.terminate()
    server.wait(timeout=10)


class socketless_port:
    """A free port on loopback, closed again before the server binds it."""

    def __enter__(self):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("dtype, precision", [("fp32", "fp32"), ("q8", "int8")])
def test_the_page_fills_the_mask_as_our_pipeline_does(page, tmp_path, dtype, precision):
    base, out = page
    with Browser() as browser:
        browser.open(f"{base}?dtype={dtype}")
        shown = json.loads(browser.wait_for("document.body.dataset.answer"))
        expected = distilbert.pipeline("fill-mask", model=out, precision=precision)(CARD, top_k=5)
        assert [a["token_str"] for a in shown] == [e["token_str"] for e in expected]
        np.testing.assert_allclose([a["score"] for a in shown], [e["score"] for e in expected], rtol=0, atol=1e-5)
        rows = browser.evaluate("[...document.querySelectorAll('#answers li .token')].map(e => e.textContent)")
        assert rows == [e["token_str"] for e in expected]  # what a person sees
        assert "error" not in browser.evaluate("document.getElementById('status').className")
        # a person types another sentence and presses the button
        browser.type_into("#text", "The capital of France is [MASK].")
        browser.evaluate("document.body.dataset.answer = ''; document.getElementById('run').click()")
        shown = json.loads(browser.wait_for("document.body.dataset.answer"))
        expected = distilbert.pipeline("fill-mask", model=out, precision=precision)("The capital of France is [MASK].")
        assert [a["token_str"] for a in shown] == [e["token_str"] for e in expected]
        shot = browser.screenshot(tmp_path / f"fill-mask-{dtype}.png")
        assert shot.stat().st_size > 10_000
        if os.environ.get("DISTILBERT_SCREENSHOTS"):  # to look at: DISTILBERT_SCREENSHOTS=folder ./scripts/test -k page
            shot.replace(os.path.join(os.environ["DISTILBERT_SCREENSHOTS"], shot.name))
