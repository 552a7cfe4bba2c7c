"""text-embeddings-inference's routes, with its request and response JSON (router/src/http/types.rs).

/embed, /embed_all need a feature-extraction model; /predict a text-classification one (on another model
they answer 424, which is all the document gives for them there). /tokenize, /decode, /info, /health and
/metrics answer for every model.
"""

# no `from __future__ import annotations`: FastAPI reads each handler's body model from its annotation, a
# class made for this server (schemas.py), which a string annotation could not name

import numpy as np
from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response

from ..pipelines.features import NO_POOLING
from .core import ApiError, Server, count_characters, respond
from .metrics import CONTENT_TYPE_LATEST
from .schemas import INFO, SCORE, TOKEN, VECTOR, answers, array, tei_requests, unserved


def routes(server: Server) -> APIRouter:
    router = APIRouter(tags=["text-embeddings-inference"])
    limits, requests = server.limits, tei_requests(server.limits)
    EmbedRequest, EmbedAllRequest, PredictRequest = requests["embed"], requests["embed_all"], requests["predict"]
    TokenizeRequest, DecodeRequest = requests["tokenize"], requests["decode"]
    inference = (400, 413, 422, 429, 500)

    def serving(task: str, ok: dict) -> dict:
        """A route of `task`: its answers, or where the server runs another task, 424 and no 200."""
        if server.task == task:
            return dict(responses=answers(limits, ok, *inference))
        return dict(responses=unserved(limits), status_code=424)

    @router.post("/embed", summary="Sentence embeddings: [[float]], one per input",
                 **serving("feature-extraction", array(VECTOR)))
    async def embed(body: EmbedRequest):
        texts = server.texts_of(body.inputs)  # the body's own limits first (400, 413), then the task's (424)
        server.require("feature-extraction", "/embed")
        server.check_dimensions(body.dimensions)
        result, meta = await server.run(len(texts), count_characters(texts), lambda: server.pipe.preprocess(
            texts, pooling=server.pooling, normalize=body.normalize), body.truncate)
        return respond(np.asarray(result), meta)

    @router.post("/embed_all", summary="Token embeddings: [[[float]]], one matrix per input, [CLS] and [SEP] included",
                 **serving("feature-extraction", array(array(VECTOR))))
    async def embed_all(body: EmbedAllRequest):
        texts = server.texts_of(body.inputs)
        server.require("feature-extraction", "/embed_all")
        result, meta = await server.run(len(texts), count_characters(texts), lambda: server.pipe.preprocess(
            texts, pooling=NO_POOLING), body.truncate)  # also where the folder pools, as TEI's /embed_all
        return respond(result, meta)

    @router.post("/predict", summary="Classify a text, a pair [text, pair], or a batch of them: [{score, label}]",
                 **serving("text-classification", {"anyOf": [array(SCORE), array(array(SCORE))]}))
    async def predict(body: PredictRequest):
        single, sequences = sequences_of(body.inputs)
        server.check_batch(sequences)
        server.require("text-classification", "/predict")
        items = [s[0] if len(s) == 1 else {"text": s[0], "text_pair": s[1]} for s in sequences]
        # TEI's scores: softmax over several labels, a sigmoid for one, the logits with raw_scores
        function = "none" if body.raw_scores else ("softmax" if server.pipe.config.num_labels > 1 else "sigmoid")
        result, meta = await server.run(len(items), count_characters(items), lambda: server.pipe.preprocess(
            items, top_k=None, function_to_apply=function), body.truncate)
        return respond([{"score": p["score"], "label": p["label"]} for p in result[0]] if single else
                       [[{"score": p["score"], "label": p["label"]} for p in r] for r in result], meta)

    @router.post("/tokenize", summary="Tokens of each input: [[{id, text, special, start, stop}]] (character offsets)",
                 responses=answers(limits, array(array(TOKEN)), 400, 413, 422))
    async def tokenize(body: TokenizeRequest):
        texts = server.texts_of(body.inputs)
        return respond(await server.off_loop(lambda: tokens_of(server, texts, body.add_special_tokens)))

    @router.post("/decode", summary="Texts of token ids: [string], one per list of ids",
                 responses=answers(limits, array({"type": "string"}), 400, 413, 422))
    async def decode(body: DecodeRequest):
        nested = bool(body.ids) and isinstance(body.ids[0], list)
        batch = body.ids if nested else [body.ids]
        if nested:
            server.check_batch(batch, "ids")
        decode = server.pipe.tokenizer.decode
        return respond(await server.off_loop(
            lambda: [decode(ids, skip_special_tokens=body.skip_special_tokens) for ids in batch]))

    @router.get("/info", summary="The model and the server's limits", responses=answers(limits, INFO))
    async def info():
        return respond(server.info())

    @router.get("/health", summary="200 (no body) while the model answers; 503 while shutting down (no API key needed)",
                response_class=Response, responses=answers(limits, None, description="healthy"))
    async def health():
        if server.draining or not server.batcher.alive:
            raise ApiError(503, "Unhealthy", "unhealthy: " + ("shutting down" if server.draining else
                                                              "the batching worker stopped"), "unhealthy")
        return Response(status_code=200)

    @router.get("/metrics", summary="Prometheus metrics (text format)", response_class=PlainTextResponse,
                responses=answers(limits, {"type": "string"}, media="text/plain",
                                  description="Prometheus' text format, TEI's metric names"))
    async def metrics():
        return Response(server.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router


def sequences_of(inputs: str | list[str] | list[list[str]]) -> tuple[bool, list[list[str]]]:
    """TEI's PredictInput: "text" and ["text", "pair"] are one input; [["text"], ["text", "pair"]] a batch."""
    if isinstance(inputs, str):
        return True, [[inputs]]
    if inputs and all(isinstance(x, str) for x in inputs):
        return True, [list(inputs)]
    return False, [list(s) for s in inputs]


def tokens_of(server: Server, texts: list[str], add_special_tokens: bool) -> list[list[dict]]:
    tokenizer = server.pipe.tokenizer
    enc = tokenizer(texts, add_special_tokens=add_special_tokens, return_offsets=True)
    special = set(tokenizer.all_special_ids)
    answer = []
    for text, ids, offsets in zip(texts, enc["input_ids"], enc["offset_mapping"]):
        tokens = tokenizer.convert_ids_to_tokens(ids)
        answer.append([
            {"id": i, "text": token, "special": True, "start": None, "stop": None} if i in special else
            {"id": i, "text": text[start:stop], "special": False, "start": start, "stop": stop}
            for i, token, (start, stop) in zip(ids, tokens, offsets)
        ])
    return answer
