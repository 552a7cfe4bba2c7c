"""`distilbert serve`: a real server in a subprocess on 127.0.0.1, real HTTP, answers compared with the pipeline's.

Every request loop here is bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import inspect
import json
import os
import random
import re
import signal
import subprocess
import sys

import httpx
import numpy as np
import pytest

import distilbert
from helpers.models import ROOT, data_file, sentence_transformers_folder
from helpers.serving import metric, ready, rss, serve, start, stop, text_of

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

KEY = "s3cret"


def significant_digits(number: str) -> int:
    """How many significant digits a decimal number's text carries ("-0.0123e-5" -> 3)."""
    mantissa = number.lower().split("e")[0].lstrip("-").replace(".", "")
    return max(len(mantissa.lstrip("0").rstrip("0")), 1)


def assert_same(got, expected, path="answer"):
    """JSON answers equal: floats within fp32 noise (batched and single runs pad differently), the rest exactly."""
    if isinstance(expected, np.ndarray):
        expected = expected.tolist()
    if isinstance(expected, (float, np.floating)):
        assert isinstance(got, (int, float)), f"{path}: {got!r} is not a number"
        assert abs(got - float(expected)) <= 1e-5 + 1e-4 * abs(float(expected)), f"{path}: {got} != {expected}"
    elif isinstance(expected, dict):
        assert isinstance(got, dict) and set(got) == set(expected), f"{path}: keys {got} != {expected}"
        for k in expected:
            assert_same(got[k], expected[k], f"{path}.{k}")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(got, list) and len(got) == len(expected), f"{path}: {got!r:.200} != {expected!r:.200}"
        for i, (g, e) in enumerate(zip(got, expected)):
            assert_same(g, e, f"{path}[{i}]")
    else:
        assert got == expected, f"{path}: {got!r} != {expected!r}"


# --- fixtures ----------------------------------------------------------------------------------------


BIG = dict(dim=192, n_heads=3, n_layers=4, hidden_dim=768, max_position_embeddings=512)


@pytest.fixture(scope="module")
def models(checkpoint_factory, tmp_path_factory):
    """The checkpoints, and an ONNX export of the masked LM."""
    data_file("vocab", "bert-base-uncased-vocab.txt")
    from distilbert.onnx import export

    found = {
        "embed": checkpoint_factory("distilbert", "Model", vocab="real")[0],
        "fill": checkpoint_factory("distilbert", "ForMaskedLM", vocab="real")[0],
        "classify": checkpoint_factory("bert", "ForSequenceClassification", vocab="real")[0],
        # big enough that a burst is still running when SIGTERM comes; a sentence-transformers folder (mean
        # pooling), whose token features /embed_all and "pooling": "none" must still give
        "big": sentence_transformers_folder(checkpoint_factory("distilbert", "Model", vocab="real", **BIG)[0],
                                            tmp_path_factory.mktemp("st") / "big", pooling="mean"),
    }
    for task in LATER_TASKS:  # pipelines that other work adds: served as soon as they exist
        arch = "ForTokenClassification" if task == "token-classification" else "ForQuestionAnswering"
        found[task] = checkpoint_factory("distilbert", arch, vocab="real")[0]
    found["onnx"] = tmp_path_factory.mktemp("onnx") / "fill-mask"
    export(found["fill"], found["onnx"], log=lambda line: None)
    return found


LATER_TASKS = [task for task, module in (("token-classification", "token_classification"),
                                         ("question-answering", "question_answering"))
               if importlib.util.find_spec(f"distilbert.pipelines.{module}") is not None]
TORCH_BLOCKED = [sys.executable, "-c", "import sys; sys.modules['torch'] = None; from distilbert.cli import main; "
                 "sys.exit(main(sys.argv[1:]))"]


@pytest.fixture(scope="module")
def servers(models, tmp_path_factory):
    """Every server this file uses, started at once (each start is mostly imports: in parallel they overlap)."""
    tmp = tmp_path_factory.mktemp("servers")
    started = {
        "embed": start(tmp, models["embed"]),
        "fill": start(tmp, models["fill"]),
        "classify": start(tmp, models["classify"]),
        "guarded": start(tmp, models["embed"], "--max-concurrent-requests", "4", "--max-client-batch-size", "4",
                         "--payload-limit", "3000", "--api-key", KEY),
        "big": start(tmp, models["big"]),
        "torch-free": start(tmp, models["onnx"], prefix=TORCH_BLOCKED),
        **{task: start(tmp, models[task]) for task in LATER_TASKS},
    }
    yield started
    for served in started.values():
        stop(served)


@pytest.fixture(scope="module")
def embedder(servers, models):
    return ready(servers["embed"]), distilbert.pipeline("feature-extraction", model=models["embed"])


@pytest.fixture(scope="module")
def filler(servers, models):
    return ready(servers["fill"]), distilbert.pipeline("fill-mask", model=models["fill"])


@pytest.fixture(scope="module")
def classifier(servers, models):
    return ready(servers["classify"]), distilbert.pipeline("text-classification", model=models["classify"])


@pytest.fixture(scope="module")
def guarded(servers):
    """Small limits and an API key."""
    return ready(servers["guarded"])


# --- TEI routes ---------------------------------------------------------------------------------------


def test_embed_equals_the_pipeline(embedder):
    served, pipe = embedder
    texts = [text_of(3), text_of(20, 1), "Hello world"]
    with served.client() as client:
        r = client.post("/embed", json={"inputs": texts[0]})
        assert r.status_code == 200
        assert_same(r.json(), [pipe(texts[0], pooling="mean", normalize=True)])
        # float32 written as the shortest text that reads back to the same float32 (as TEI writes them), checked
        # on the server's own values: the server and this pipeline run in different processes with different
        # thread counts, so their sums may differ in the last place (they agree within assert_same's tolerance)
        written = re.findall(r"-?[0-9][0-9.eE+-]*", r.text)
        assert len(written) == len(r.json()[0])
        for text in written:
            assert significant_digits(text) == significant_digits(np.format_float_scientific(
                np.float32(text), unique=True)), f"{text} is not the shortest text of its float32"
        as_float64 = json.dumps([[float(np.float32(v)) for v in r.json()[0]]], separators=(",", ":"))
        assert len(r.content) < 0.8 * len(as_float64)  # not the float32 values widened to float64's digits
        for name in ("x-compute-time", "x-compute-characters", "x-compute-tokens", "x-total-time",
                     "x-tokenization-time", "x-queue-time", "x-inference-time"):
            assert r.headers[name].isdigit(), name
        assert int(r.headers["x-compute-tokens"]) == len(pipe.tokenizer(texts[0])["input_ids"])
        assert int(r.headers["x-compute-characters"]) == len(texts[0])
        r = client.post("/embed", json={"inputs": texts, "normalize": False})
        assert_same(r.json(), pipe(texts, pooling="mean", normalize=False))
        r = client.post("/embed_all", json={"inputs": texts})
        assert_same(r.json(), pipe(texts))


def test_route_dependencies_run_on_the_event_loop(models):
    """A plain-`def` handler or dependency would make FastAPI hop to its thread pool and back on every request."""
    from distilbert.serve import hf, openai, tei
    from distilbert.serve.core import Server, Settings

    server = Server(Settings(model=models["embed"], backend="torch"))
    try:
        for router in (tei.routes(server), openai.routes(server), hf.routes(server)):
            for route in router.routes:
                assert inspect.iscoroutinefunction(route.endpoint), f"{route.path}: {route.endpoint.__name__} is sync"
                for dependency in route.dependant.dependencies:
                    assert inspect.iscoroutinefunction(dependency.call), f"{route.path}: {dependency.call.__name__}"
    finally:
        server.close()


def test_the_model_loads_and_runs_on_one_thread(models, monkeypatch):
    """An OpenMP runtime keeps a team of threads for every thread that has run PyTorch's parallel work; with
    more team threads than cores its workers sleep between parallel regions, and a forward on the full-size
    model took 5 ms longer. So loading happens on the inference thread, the one that runs every batch."""
    import threading

    import distilbert.backends
    from distilbert.serve.core import Server, Settings

    loaded_on = []
    load_backend = distilbert.backends.load_backend

    def spy(*args, **kwargs):
        loaded_on.append(threading.current_thread())
        return load_backend(*args, **kwargs)

    monkeypatch.setattr(distilbert.backends, "load_backend", spy)
    server = Server(Settings(model=models["embed"], backend="torch"))
    try:
        assert server.batcher.executor is server.inference
        assert loaded_on == [server.inference.submit(threading.current_thread).result()]
    finally:
        server.close()


def test_the_worker_pads_as_the_pipeline_does(models):
    """A drain is grouped with the pipeline's own split, so the batches it counts are the batches that run: rows
    of like length share one, a short row runs apart (on a CPU its padding costs what real tokens do)."""
    from distilbert import batching
    from distilbert.serve.core import Server, Settings

    server = Server(Settings(model=models["embed"], backend="torch"))
    pipe, batches, forward = server.pipe, [], server.pipe.forward_batch

    def spy(features):  # the real forward, its batches written down
        batches.append(sorted((len(f) for f in features), reverse=True))
        return forward(features)

    pipe.forward_batch = spy
    rows = [pipe.features(pipe.encode([text_of(n, seed)])) for seed, n in enumerate((40, 38, 8))]
    lengths = [len(f[0]) for f in rows]
    assert batching.group(lengths, None, None, pipe.batch_cost) == [[0, 1], [2]]

    async def drain():
        server.batcher.start()
        try:
            return await asyncio.gather(*(server.batcher.submit(f) for f in rows))
        finally:
            await server.batcher.stop()

    try:
        answers = asyncio.run(drain())
    finally:
        server.close()
    assert batches == [sorted(lengths[:2], reverse=True), [lengths[2]]]
    for (outputs, _), features in zip(answers, rows):
        np.testing.assert_allclose(outputs[0]["last_hidden_state"], forward(features)[0]["last_hidden_state"],
                                   atol=1e-5)


def test_truncation(embedder):
    served, pipe = embedder
    long = text_of(200, 3)  # past the tiny model's 64 positions
    with served.client() as client:
        r = client.post("/embed", json={"inputs": long})
        assert r.status_code == 200
        assert_same(r.json(), [pipe(long, pooling="mean", normalize=True)])
        r = client.post("/embed", json={"inputs": [long], "truncate": False})
        assert r.status_code == 413 and "64 tokens" in r.json()["error"]
        r = client.post("/", json={"inputs": long, "parameters": {"truncate": False}})
        assert r.status_code == 413


def test_tokenize_and_decode(embedder):
    served, pipe = embedder
    text = "Hello [MASK] world, isn't it?"
    with served.client() as client:
        tokens = client.post("/tokenize", json={"inputs": text}).json()[0]
        ids = pipe.tokenizer(text)["input_ids"]
        assert [t["id"] for t in tokens] == ids
        assert [t["special"] for t in tokens] == [i in pipe.tokenizer.all_special_ids for i in ids]
        assert tokens[1] == {"id": ids[1], "text": "Hello", "special": False, "start": 0, "stop": 5}
        assert all(text[t["start"]:t["stop"]] == t["text"] for t in tokens if not t["special"])
        plain = client.post("/tokenize", json={"inputs": [text, "a"], "add_special_tokens": False}).json()
        assert [t["id"] for t in plain[1]] == pipe.tokenizer("a", add_special_tokens=False)["input_ids"]
        assert client.post("/decode", json={"ids": ids}).json() == [pipe.tokenizer.decode(ids, skip_special_tokens=True)]
        both = client.post("/decode", json={"ids": [ids, ids[:2]], "skip_special_tokens": False}).json()
        assert both == [pipe.tokenizer.decode(ids), pipe.tokenizer.decode(ids[:2])]
        r = client.post("/decode", json={"ids": [10**9]})
        assert r.status_code == 422 and "ids" in r.json()["error"]


def test_info_health_docs(embedder):
    served, pipe = embedder
    with served.client() as client:
        info = client.get("/info").json()
        assert info["model_type"] == {"embedding": {"pooling": "mean"}}
        assert info["max_input_length"] == pipe.max_length and info["max_client_batch_size"] == 32
        assert client.get("/health").status_code == 200
        spec = client.get("/openapi.json").json()
        assert {"/embed", "/embed_all", "/predict", "/tokenize", "/decode", "/v1/embeddings", "/"} <= set(spec["paths"])
        assert client.get("/docs").status_code == 200


def test_a_route_that_does_not_fit_the_model_is_a_4xx(embedder):
    served, _ = embedder
    with served.client() as client:
        r = client.post("/predict", json={"inputs": "a"})
        assert r.status_code == 424 and "text-classification" in r.json()["error"] and r.json()["error_type"]
        r = client.post("/pipeline/fill-mask", json={"inputs": "a [MASK]"})
        assert r.status_code == 424
        assert client.post("/nowhere", json={}).status_code == 404


# --- the document is the contract ------------------------------------------------------------------------


def test_the_document_says_what_this_server_does(filler, embedder, guarded):
    """Each server's /openapi.json describes its own task: its inputs, its answers, and every status it gives."""
    fill = httpx.get(filler[0].url + "/openapi.json", timeout=30).json()
    embed = httpx.get(embedder[0].url + "/openapi.json", timeout=30).json()
    ops = {(path, method): op for path, item in fill["paths"].items() for method, op in item.items()}
    for (path, method), op in ops.items():
        assert {"413", "503"} <= set(op["responses"]), (path, method)  # the gate's, on every route
        assert "401" not in op["responses"]  # no key, no 401
        for status, response in op["responses"].items():
            if status != "200":
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
        if method == "post":
            assert "422" in op["responses"], path
    assert set(fill["components"]["schemas"]["Error"]["required"]) == {"error", "error_type"}
    # a route of another task stays, answering 424 and nothing else
    assert "200" not in ops["/embed", "post"]["responses"] and "424" in ops["/embed", "post"]["responses"]
    served_here = embed["paths"]["/embed"]["post"]["responses"]
    assert "200" in served_here and "424" not in served_here
    # the Inference API's inputs are the task's own
    request = fill["components"]["schemas"]["FillMaskRequest"]["properties"]["inputs"]["anyOf"]
    assert request[0]["pattern"] == r"\[MASK\]" and request[1]["maxItems"] == 32 and request[1]["minItems"] == 1
    schemas = embed["components"]["schemas"]
    assert "FeatureExtractionRequest" in schemas and "FillMaskRequest" not in schemas
    task = next(p for p in ops["/pipeline/{task}", "post"]["parameters"] if p["name"] == "task")
    assert task["schema"]["enum"] == ["fill-mask"]
    # the answers that are not JSON, with their real types
    assert "content" not in ops["/health", "get"]["responses"]["200"]
    assert list(ops["/metrics", "get"]["responses"]["200"]["content"]) == ["text/plain"]
    r = httpx.get(filler[0].url + "/metrics", timeout=30)
    assert r.headers["content-type"].startswith("text/plain")
    r = httpx.get(filler[0].url + "/health", timeout=30)
    assert r.status_code == 200 and r.content == b"" and "content-type" not in r.headers
    # with a key: the scheme, 401 everywhere but /health
    key = {"Authorization": f"Bearer {KEY}"}
    spec = httpx.get(guarded.url + "/openapi.json", headers=key, timeout=30).json()
    assert spec["components"]["securitySchemes"]["key"]["scheme"] == "bearer" and spec["security"] == [{"key": []}]
    assert spec["paths"]["/health"]["get"]["security"] == [] and "401" in spec["paths"]["/embed"]["post"]["responses"]


def test_bodies_no_tokenizer_can_read_are_a_422(filler):
    served, pipe = filler
    with served.client() as client:
        r = client.post("/tokenize", content=b'{"inputs": "caf\xe9 [MASK]"}',
                        headers={"content-type": "application/json"})
        assert r.status_code == 422 and "not UTF-8" in r.json()["error"], r.text
        for route, body in (("/tokenize", '{"inputs": "a \\ud800 b"}'), ("/", '{"inputs": "a [MASK] \\udfff"}')):
            r = client.post(route, content=body.encode(), headers={"content-type": "application/json"})
            assert r.status_code == 422 and "lone surrogate" in r.json()["error"], (route, r.text)
        r = client.post("/decode", json={"ids": [101.0, 102]})  # JSON Schema's integers include 101.0
        assert r.status_code == 200 and r.json() == [pipe.tokenizer.decode([101, 102], skip_special_tokens=True)]
        r = client.post("/decode", json={"ids": [101.5]})
        assert r.status_code == 422
        r = client.put("/embed", json={"inputs": "a"})
        assert r.status_code == 405 and r.headers["allow"] == "POST"


# --- OpenAI ---------------------------------------------------------------------------------------------


def test_openai_embeddings(embedder):
    served, pipe = embedder
    texts = ["first text", text_of(15, 4)]
    expected = pipe(texts, pooling="mean", normalize=True)
    tokens = sum(len(ids) for ids in pipe.tokenizer(texts)["input_ids"])
    with served.client() as client:  # what the openai client sends, and reads back
        r = client.post("/v1/embeddings", json={"input": texts, "model": "my-model", "encoding_format": "float"})
        body = r.json()
        assert body["object"] == "list" and body["model"] == "my-model"
        assert [d["index"] for d in body["data"]] == [0, 1] and all(d["object"] == "embedding" for d in body["data"])
        assert_same([d["embedding"] for d in body["data"]], expected)
        assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
        body = client.post("/v1/embeddings", json={"input": texts[0], "encoding_format": "base64"}).json()
        decoded = np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), dtype="<f4")
        np.testing.assert_allclose(decoded, expected[0], atol=1e-5)
        r = client.post("/v1/embeddings", json={"input": "a", "encoding_format": "int8"})
        assert r.status_code == 422 and "encoding_format" in r.json()["error"]


# --- Hugging Face Inference API ---------------------------------------------------------------------------


def test_hf_feature_extraction_agrees_with_tei(embedder):
    from huggingface_hub import InferenceClient

    served, pipe = embedder
    text = text_of(9, 5)
    with served.client() as client:
        pooled = client.post("/", json={"inputs": text, "parameters": {"normalize": True}}).json()
        tei = client.post("/embed", json={"inputs": text}).json()
        assert_same(pooled, tei[0])
        tokens = client.post("/", json={"inputs": [text], "parameters": {"pooling": "none"}}).json()
        assert_same(tokens, client.post("/embed_all", json={"inputs": [text]}).json())
        r = client.post("/", json={"inputs": text, "parameters": {"top_k": 3}})
        assert r.status_code == 422 and "top_k" in r.json()["error"]
    vector = InferenceClient(model=served.url).feature_extraction(text)
    np.testing.assert_allclose(vector, pipe(text, pooling="mean"), atol=1e-5)


def test_token_features_where_the_folder_pools(servers, checkpoint_factory):
    """On a sentence-transformers folder, /embed_all (as TEI's) and "pooling": "none" give each token's features;
    the Inference API's default is the folder's pooling. Token features checked against transformers' model."""
    import torch
    import transformers

    folder, ref = checkpoint_factory("distilbert", "Model", vocab="real", **BIG)
    texts = [text_of(5, 7), text_of(12, 8)]
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        expected = [ref(**tok(text, return_tensors="pt")).last_hidden_state[0].numpy() for text in texts]
    with ready(servers["big"]).client() as client:
        every = client.post("/embed_all", json={"inputs": texts})
        none = client.post("/", json={"inputs": texts, "parameters": {"pooling": "none"}})
        one = client.post("/", json={"inputs": texts[0], "parameters": {"pooling": "none"}})
        pooled = client.post("/", json={"inputs": texts})
    assert every.status_code == none.status_code == one.status_code == pooled.status_code == 200, none.text
    for answer in (every.json(), none.json()):
        assert [np.shape(a) for a in answer] == [e.shape for e in expected]
        for got, want in zip(answer, expected):
            np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(one.json(), expected[0], atol=1e-4)
    np.testing.assert_allclose(pooled.json(), [e.mean(0) for e in expected], atol=1e-4)


def test_hf_fill_mask(filler):
    from huggingface_hub import InferenceClient

    served, pipe = filler
    text = "Hello I'm a [MASK] model."
    with served.client() as client:
        r = client.post("/", json={"inputs": text})
        assert_same(r.json(), pipe(text))
        texts = [text, "The [MASK] sat on the [MASK]."]
        assert_same(client.post("/", json={"inputs": texts, "parameters": {"top_k": 2}}).json(), pipe(texts, top_k=2))
        r = client.post("/", json={"inputs": text, "parameters": {"targets": ["tea", "coffee"]}})
        assert_same(r.json(), pipe(text, targets=["tea", "coffee"]))
        assert_same(client.post("/pipeline/fill-mask", json={"inputs": text}).json(), pipe(text))
        r = client.post("/", json={"inputs": "no mask here"})
        assert r.status_code == 422 and "[MASK]" in r.json()["error"]
        r = client.post("/", json={"inputs": text, "parameters": {"top_k": 0}})
        assert r.status_code == 422 and "top_k" in r.json()["error"]
        for _ in range(2):  # the accepted names are read once, then from the cache: the same answer
            r = client.post("/", json={"inputs": text, "parameters": {"colour": 1}})
            assert r.status_code == 422 and r.json()["error"].startswith("parameters.colour:")
            assert r.json()["error"].endswith("it takes top_k, targets, truncate")
        r = client.post("/", json={"inputs": 5})
        assert r.status_code == 422 and "inputs" in r.json()["error"]
        assert client.post("/embed", json={"inputs": "a"}).status_code == 424
    answer = InferenceClient(model=served.url).fill_mask(text)
    assert [a.token for a in answer] == [p["token"] for p in pipe(text)]


def test_classification_tei_and_hf_agree(classifier):
    from huggingface_hub import InferenceClient

    served, pipe = classifier
    a, b = text_of(6, 7), text_of(4, 8)
    every = dict(top_k=None, function_to_apply="softmax")
    with served.client() as client:
        single = client.post("/predict", json={"inputs": a}).json()
        assert_same(single, pipe(a, **every))
        pair = client.post("/predict", json={"inputs": [a, b]}).json()
        assert_same(pair, pipe({"text": a, "text_pair": b}, **every))
        batch = client.post("/predict", json={"inputs": [[a], [a, b]]}).json()
        assert_same(batch, pipe([a, {"text": a, "text_pair": b}], **every))
        raw = client.post("/predict", json={"inputs": a, "raw_scores": True}).json()
        assert_same(raw, pipe(a, top_k=None, function_to_apply="none"))
        hf = client.post("/", json={"inputs": a}).json()
        assert_same(hf, [single])
        assert_same(client.post("/", json={"inputs": {"text": a, "text_pair": b}}).json(), [pair])
        assert_same(client.post("/", json={"inputs": [a, b], "parameters": {"top_k": 1}}).json(), pipe([a, b], top_k=1))
        assert client.post("/predict", json={"inputs": [a, b, a]}).status_code == 422
    labels = InferenceClient(model=served.url).text_classification(a)
    assert [(x.label, round(x.score, 5)) for x in labels] == [(p["label"], round(p["score"], 5)) for p in single]


@pytest.mark.skipif("token-classification" not in LATER_TASKS, reason="no token-classification pipeline yet")
def test_hf_token_classification(servers, models):
    from huggingface_hub import InferenceClient

    served = ready(servers["token-classification"])
    pipe = distilbert.pipeline("token-classification", model=models["token-classification"])
    text, texts = "My name is Sarah and I live in London", ["Paris is nice", "Hugging Face in New York"]
    with served.client() as client:
        assert_same(client.post("/", json={"inputs": text}).json(), pipe(text))
        for params in ({"aggregation_strategy": "simple"}, {"aggregation_strategy": "none", "ignore_labels": []}):
            assert_same(client.post("/", json={"inputs": texts, "parameters": params}).json(), pipe(texts, **params))
        assert_same(client.post("/pipeline/ner", json={"inputs": text}).json(), pipe(text))
        r = client.post("/", json={"inputs": text, "parameters": {"aggregation_strategy": "sideways"}})
        assert r.status_code == 422
        assert client.post("/embed", json={"inputs": text}).status_code == 424
    entities = InferenceClient(model=served.url).token_classification(text)
    assert len(entities) == len(pipe(text))


@pytest.mark.skipif("question-answering" not in LATER_TASKS, reason="no question-answering pipeline yet")
def test_hf_question_answering(servers, models):
    from huggingface_hub import InferenceClient

    served = ready(servers["question-answering"])
    pipe = distilbert.pipeline("question-answering", model=models["question-answering"])
    example = {"question": "Where do I live?", "context": "My name is Clara and I live in Berkeley. " * 3}
    with served.client() as client:
        assert_same(client.post("/", json={"inputs": example}).json(), pipe(example))
        assert_same(client.post("/", json={"inputs": example, "parameters": {"top_k": 2}}).json(), pipe(example, top_k=2))
        assert_same(client.post("/", json={"inputs": [example, example]}).json(), pipe([example, example]))
        r = client.post("/", json={"inputs": "just a text"})
        assert r.status_code == 422 and "question" in r.json()["error"]
    answer = InferenceClient(model=served.url).question_answering(**example)
    assert answer.answer == pipe(example)["answer"]


# --- load, back-pressure, limits, keys ------------------------------------------------------------------


async def _load(url: str, requests: list[tuple[str, dict]], clients: int, headers=None, budget: float = 60):
    """`clients` concurrent clients share the requests; each answer is (status, json or None, headers)."""
    queue = list(enumerate(requests))
    answers: list = [None] * len(requests)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits, headers=headers) as client:
        async def worker():
            while queue:
                i, (route, body) = queue.pop()
                try:
                    r = await client.post(route, json=body)
                    answers[i] = (r.status_code, r.json() if r.content else None, r.headers)
                except httpx.TransportError as e:
                    answers[i] = (None, repr(e), None)
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(clients))), budget)
    return answers


def test_load_64_clients(embedder):
    served, pipe = embedder
    rng = random.Random(0)
    texts = [text_of(n, seed) for seed, n in enumerate((1, 3, 8, 15, 30, 45, 60, 80))]
    pooled = {t: pipe(t, pooling="mean", normalize=True) for t in texts}
    tokens = {t: pipe(t) for t in texts}
    requests, expected = [], []
    for _ in range(256):
        kind = rng.randrange(5)
        some = rng.sample(texts, rng.randint(1, 4))
        if kind == 0:
            requests.append(("/embed", {"inputs": some}))
            expected.append([pooled[t] for t in some])
        elif kind == 1:
            requests.append(("/embed_all", {"inputs": some}))
            expected.append([tokens[t] for t in some])
        elif kind == 2:
            requests.append(("/v1/embeddings", {"input": some[0]}))
            expected.append(pooled[some[0]])
        elif kind == 3:
            requests.append(("/", {"inputs": some[0], "parameters": {"normalize": True}}))
            expected.append(pooled[some[0]])
        else:
            requests.append(("/tokenize", {"inputs": some}))
            expected.append([pipe.tokenizer(t)["input_ids"] for t in some])
    rss_before = rss(served.process.pid)
    answers = asyncio.run(_load(served.url, requests, clients=64))
    for (route, _), (status, body, _), want in zip(requests, answers, expected):
        assert status == 200, (route, status, body)
        if route == "/v1/embeddings":
            assert_same(body["data"][0]["embedding"], want)
        elif route == "/tokenize":
            assert [[t["id"] for t in row] for row in body] == want
        else:
            assert_same(body, want, route)
    text = served.metrics()
    batches, rows = metric(text, "te_batch_next_size_count"), metric(text, "te_batch_next_size_sum")
    assert rows > batches, "no batch held more than one row"
    # the batches' model time, taken on the inference thread, lies within the requests' time from batch to answer
    assert 0 < metric(text, "te_batch_inference_duration_sum") <= metric(text, "te_request_inference_duration_sum")
    assert rss(served.process.pid) - rss_before < 300 * 2**20  # memory bounded under load


def test_back_pressure_gives_429_and_stays_healthy(guarded):
    key = {"Authorization": f"Bearer {KEY}"}
    body = {"inputs": [text_of(60, i) for i in range(4)]}
    answers = asyncio.run(_load(guarded.url, [("/embed", body)] * 48, clients=48, headers=key))
    statuses = [a[0] for a in answers]
    assert set(statuses) <= {200, 429}, statuses
    assert 429 in statuses and 200 in statuses
    refused = next(a for a in answers if a[0] == 429)[1]
    assert refused["error_type"] == "Overloaded" and "--max-concurrent-requests" in refused["error"]
    with guarded.client(headers=key) as client:
        assert client.get("/health").status_code == 200
        assert client.post("/embed", json={"inputs": "still here"}).status_code == 200
    assert metric(guarded.metrics(key), "te_request_failure_total") >= statuses.count(429)


def test_limits_and_bad_requests(guarded):
    key = {"Authorization": f"Bearer {KEY}"}
    with guarded.client(headers=key) as client:
        r = client.post("/embed", json={"inputs": ["x" * 500] * 4 + ["y" * 2000]})
        assert r.status_code == 413 and "--payload-limit" in r.json()["error"]

        def chunks():  # no content-length: the limit is counted as the body arrives
            yield b'{"inputs": ["'
            for _ in range(40):
                yield b"z" * 100
            yield b'"]}'
        r = client.post("/embed", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        r = client.post("/embed", json={"inputs": ["a"] * 5})
        assert r.status_code == 413 and "4" in r.json()["error"] and "--max-client-batch-size" in r.json()["error"]
        r = client.post("/embed", content=b'{"inputs": "a"', headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["error_type"] == "Validation"
        r = client.post("/embed", json={"inputs": "a", "normalize": "yes"})
        assert r.status_code == 422 and "normalize" in r.json()["error"]
        r = client.post("/embed", json={"inputs": []})
        assert r.status_code == 400 and r.json()["error_type"] == "Empty"
        r = client.post("/embed", json={"text": "a"})
        assert r.status_code == 422 and "inputs" in r.json()["error"]
    with guarded.client() as client:
        assert client.get("/health").status_code == 200  # the one route without the key
        for route in ("/info", "/metrics", "/openapi.json"):
            assert client.get(route).status_code == 401, route
        r = client.post("/embed", json={"inputs": "a"})
        assert r.status_code == 401 and r.json()["error_type"] == "Unauthorized"
        assert client.post("/embed", json={"inputs": "a"}, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.post("/embed", json={"inputs": "a"}, headers=key).status_code == 200
    text = guarded.metrics(key)
    for reason in ("payload_limit", "batch_size", "validation", "unauthorized"):
        assert f'te_request_failure_total{{err="{reason}"}}' in text, reason


# --- shutdown, torch-free -------------------------------------------------------------------------------


def test_sigterm_during_a_burst_answers_every_accepted_request(servers, models):
    pipe = distilbert.pipeline("feature-extraction", model=models["big"])
    texts = [text_of(250, i) for i in range(4)]
    expected = pipe(texts, pooling="mean", normalize=True)
    served = ready(servers["big"])

    async def burst():
        load = asyncio.create_task(_load(served.url, [("/embed", {"inputs": texts})] * 16, clients=16, budget=120))
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
            for _ in range(400):  # until the server holds work in flight (bounded: 20 s)
                await asyncio.sleep(0.05)
                if metric((await client.get("/metrics")).text, "te_inputs_in_flight") > 0:
                    break
        served.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.1)
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
            try:
                late = (await client.post("/embed", json={"inputs": "late"})).status_code
            except httpx.TransportError:
                late = None  # already gone: refused, which is not an accepted request
        return await load, late

    answers, late = asyncio.run(burst())
    served.process.wait(90)
    statuses = [a[0] for a in answers]
    assert None not in statuses, [a[1] for a in answers if a[0] is None][:2]
    assert set(statuses) <= {200, 503} and 200 in statuses, statuses
    for status, body, _ in answers:
        if status == 200:
            assert_same(body, expected)
    assert late in (503, None)
    draining = re.search(r"finishing (\d+) request", served.log.read_text())
    assert draining and int(draining.group(1)) >= 1  # the signal came with requests in flight, and they were answered


def test_serves_an_onnx_export_where_torch_cannot_be_imported(servers, models):
    text = "Hello I'm a [MASK] model."
    with ready(servers["torch-free"]).client() as client:
        answer = client.post("/", json={"inputs": text, "parameters": {"top_k": 3}}).json()
        info = client.get("/info").json()
    assert info["backend"] == "onnx"
    assert_same(answer, distilbert.pipeline("fill-mask", model=models["onnx"])(text, top_k=3))


@pytest.mark.slow
def test_workers_share_the_cores_and_the_metrics(models, tmp_path):
    folder = models["embed"]
    pipe = distilbert.pipeline("feature-extraction", model=folder)
    with serve(tmp_path, folder, "--workers", "2") as served:
        answers = asyncio.run(_load(served.url, [("/embed", {"inputs": "two workers"})] * 32, clients=8))
        assert all(a[0] == 200 for a in answers)
        assert_same(answers[0][1], [pipe("two workers", pooling="mean", normalize=True)])
        assert metric(served.metrics(), "te_request_success_total") >= 32


@pytest.mark.slow
def test_a_compiled_server_answers_as_the_pipeline(models, tmp_path):
    """`--compile`: the network compiled at start-up (TorchInductor), the answers eager's; on a backend that
    cannot compile, a one-line error and exit 2."""
    folder = models["fill"]
    pipe = distilbert.pipeline("fill-mask", model=folder, backend="torch")
    texts = ["Hello I'm a [MASK] model.", "The [MASK] sat on the [MASK] by the " + text_of(30)]
    with serve(tmp_path, folder, "--backend", "torch", "--compile") as served, served.client() as client:
        answers = asyncio.run(_load(served.url, [("/", {"inputs": t}) for t in texts * 4], clients=8))
        assert all(a[0] == 200 for a in answers)
        for (_, got, _), text in zip(answers, texts * 4):
            assert_same(got, pipe(text))
        assert_same(client.post("/", json={"inputs": texts, "parameters": {"top_k": 3}}).json(), pipe(texts, top_k=3))
    p = subprocess.run([sys.executable, "-m", "distilbert.cli", "serve", str(models["onnx"]), "--compile"],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    error = p.stderr.strip().splitlines()
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert error[-1].startswith("error: compile is for the torch backend, not the onnx backend"), p.stderr
