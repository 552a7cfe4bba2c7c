"""The page `distilbert serve` gives a browser at GET /: in headless Chromium, for a server of every task, the
inputs typed, Compute clicked, and the page's answer compared with the pipeline's; a screenshot of each
(to $DISTILBERT_SCREENSHOTS when set). Also: the page loads nothing from the network, a GET / that asks
for JSON is answered as before (405), and with an API key the page asks for it and sends it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import httpx
import numpy as np
import pytest

import distilbert
from helpers.browser import CHROMIUM, Browser
from helpers.models import TASK_OF_ARCH, data_file, make_reference, save_reference
from helpers.serving import ready, start, stop

pytest.importorskip("fastapi")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="no headless browser: /usr/bin/chromium is absent (apt-get install chromium)")
KEY = "k3y"
CARD = "Hello I'm a [MASK] model."
LABELS = {  # labels a person would see on such a model's page (the weights stay random)
    "text-classification": {0: "NEGATIVE", 1: "POSITIVE"},
    "token-classification": {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC", 5: "B-ORG", 6: "I-ORG"},
}


@pytest.fixture(scope="module")
def served(checkpoint_factory, tmp_path_factory):
    """task -> (server, pipeline on the same folder); "keyed": a fill-mask server with an API key."""
    data_file("vocab", "bert-base-uncased-vocab.txt")
    tmp = tmp_path_factory.mktemp("page-servers")
    folders = {task: save_reference(make_reference("distilbert", arch, 30522, id2label=LABELS[task]), tmp / task)
               if task in LABELS else checkpoint_factory("distilbert", arch, vocab="real")[0]
               for arch, task in TASK_OF_ARCH.items()}
    started = {task: start(tmp, folder) for task, folder in folders.items()}
    started["keyed"] = start(tmp, folders["fill-mask"], "--api-key", KEY)
    yield {name: (ready(s), distilbert.pipeline(name if name != "keyed" else "fill-mask",
                                                model=folders.get(name, folders["fill-mask"])))
           for name, s in started.items()}
    for s in started.values():
        stop(s)


@pytest.fixture(scope="module")
def browser():
    with Browser() as b:
        yield b


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("DISTILBERT_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def compute(browser: Browser, url: str, fields: dict[str, str], done: str) -> None:
    """Open the page, type each field, click Compute, wait until `done` (a JavaScript condition) holds."""
    browser.open(url)
    browser.wait_for("document.readyState === 'complete' && document.querySelector('#compute') !== null", 30)
    for selector, text in fields.items():
        browser.type_into(selector, text)
    browser.click("#compute")
    browser.wait_for(f"(() => {{ const error = document.querySelector('#output .error');"
                     f"if (error) throw new Error(error.textContent); return {done}; }})()", 60)


def texts(browser: Browser, selector: str) -> list[str]:
    return browser.evaluate(f"Array.from(document.querySelectorAll({json.dumps(selector)})).map(e => e.textContent)")


def test_fill_mask_shows_the_pipelines_top_tokens(served, browser, shots):
    server, pipe = served["fill-mask"]
    compute(browser, server.url + "/", {"#text": CARD}, "document.querySelectorAll('#output .row').length === 5")
    expected = pipe(CARD)
    assert texts(browser, "#output .row .label") == [p["token_str"] for p in expected]
    shown = [float(v.rstrip("%")) / 100 for v in texts(browser, "#output .row .value")]
    np.testing.assert_allclose(shown, [p["score"] for p in expected], rtol=0.01)  # three digits, however small
    widths = browser.evaluate("Array.from(document.querySelectorAll('#output .fill')).map(e => e.style.width)")
    assert [round(float(w.rstrip("%")), 1) for w in widths] == [round(100 * p["score"], 1) for p in expected]
    assert browser.evaluate("document.querySelector('#task').textContent") == "fill-mask"
    browser.wait_for("document.querySelector('#model').textContent.includes('tokens')", 10)  # /info's line
    browser.screenshot(shots / "fill-mask.png", full_page=True)


def test_text_classification_shows_every_label(served, browser, shots):
    server, pipe = served["text-classification"]
    text = "I like you. I love you"
    compute(browser, server.url + "/", {"#text": text}, "document.querySelectorAll('#output .row').length === 2")
    expected = pipe(text, top_k=None)
    assert texts(browser, "#output .row .label") == [p["label"] for p in expected]
    browser.screenshot(shots / "text-classification.png", full_page=True)


def test_token_classification_marks_the_entities_in_the_text(served, browser, shots):
    server, pipe = served["token-classification"]
    text = "My name is Sarah and I live in London"
    compute(browser, server.url + "/", {"#text": text},
            "document.querySelector('#output .text') !== null || document.querySelector('#output p') !== null")
    entities = pipe(text, aggregation_strategy="simple")
    marks = browser.evaluate("Array.from(document.querySelectorAll('#output mark')).map(m => "
                             "[m.firstChild.textContent, m.querySelector('.tag').textContent])")
    assert entities, "the tiny model found no entity: nothing to show"
    assert marks == [[text[e["start"]:e["end"]], e["entity_group"]] for e in entities]
    shown, at = "", 0  # the whole text, each entity followed by its tag
    for e in entities:
        shown, at = shown + text[at:e["end"]] + e["entity_group"], e["end"]
    assert browser.evaluate("document.querySelector('#output .text').textContent") == shown + text[at:]
    browser.screenshot(shots / "token-classification.png", full_page=True)


def test_question_answering_marks_the_answer_in_the_context(served, browser, shots):
    server, pipe = served["question-answering"]
    question, context = "Where do I live?", "My name is Wolfgang and I live in Berlin."
    compute(browser, server.url + "/", {"#question": question, "#context": context},
            "document.querySelector('#answer') !== null")
    expected = pipe(question=question, context=context)
    assert browser.evaluate("document.querySelector('#answer').textContent") == expected["answer"]
    assert texts(browser, "#output mark") == [context[expected["start"]:expected["end"]]]
    browser.screenshot(shots / "question-answering.png", full_page=True)


def test_feature_extraction_shows_cosine_similarities(served, browser, shots):
    server, pipe = served["feature-extraction"]
    source = "That is a happy person"
    others = ["That is a happy dog", "That is a very happy person", "Today is a sunny day"]
    compute(browser, server.url + "/", {"#source": source, "#sentences": "\n".join(others)},
            "document.querySelectorAll('#output .row').length === 3")
    vectors = pipe([source, *others], pooling="mean", normalize=True)
    expected = [float(vectors[0] @ v) for v in vectors[1:]]
    assert texts(browser, "#output .row .label") == others
    np.testing.assert_allclose([float(v) for v in texts(browser, "#output .row .value")], expected, atol=2e-3)
    browser.screenshot(shots / "feature-extraction.png", full_page=True)


def test_with_an_api_key_the_page_asks_for_it(served, browser, shots):
    server, pipe = served["keyed"]
    browser.open(server.url + "/")  # the page itself needs no key
    browser.wait_for("document.readyState === 'complete' && document.querySelector('#compute') !== null", 30)
    assert browser.evaluate("document.querySelector('#key-box').hidden") is False
    browser.click("#compute")
    browser.wait_for("document.querySelector('#output .error') !== null", 30)
    assert "API key" in browser.evaluate("document.querySelector('#output .error').textContent")
    browser.type_into("#key", KEY)
    browser.click("#save-key")
    assert browser.evaluate("sessionStorage.getItem('distilbert-serve-api-key')") == KEY
    browser.click("#compute")
    browser.wait_for("document.querySelectorAll('#output .row').length === 5", 60)
    assert texts(browser, "#output .row .label")[0] == pipe(CARD)[0]["token_str"]
    browser.screenshot(shots / "fill-mask-with-key.png", full_page=True)


def test_the_page_is_self_contained_and_json_clients_get_what_they_got(served):
    server, _ = served["fill-mask"]
    page = httpx.get(server.url + "/", headers={"Accept": "text/html,*/*;q=0.8"}, timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    # nothing from the network: no URL with a host, no font or script from elsewhere
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text) and "@import" not in page.text
    assert not re.search(r"url\(", page.text) and "fonts.googleapis" not in page.text
    for accept in ("application/json", "application/json, text/plain, */*"):
        r = httpx.get(server.url + "/", headers={"Accept": accept}, timeout=30)
        assert r.status_code == 405 and r.headers["allow"] == "POST" and r.json()["error_type"] == "Validation"
    r = httpx.post(server.url + "/", json={"inputs": CARD}, timeout=30)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
