"""text-embeddings-inference's routes, with its request and response JSON (router/src/http/types.rs).

/embed, /embed_all need a feature-extraction model; /predict a text-classification one. /tokenize,
/decode, /info, /health and /metrics answer for every model.
"""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter
from fastapi.responses import Response

from ..pipelines.features import NO_POOLING
from .core import ApiError, Server, count_characters, respond
from .metrics import CONTENT_TYPE_LATEST
from .schemas import DecodeRequest, EmbedAllRequest, EmbedRequest, PredictRequest, TokenizeRequest


def routes(server: Server) -> APIRouter:
    router = APIRouter(tags=["text-embeddings-inference"])

    @router.post("/embed", summary="Sentence embeddings: [[float]], one per input")
    async def embed(body: EmbedRequest):
        server.require("feature-extraction", "/embed")
        server.check_dimensions(body.dimensions)
        texts = server.texts_of(body.inputs)
        result, meta = await server.run(len(texts), count_characters(texts), lambda: server.pipe.preprocess(
            texts, pooling=server.pooling, normalize=body.normalize), body.truncate)
        return respond(np.asarray(result), meta)

    @router.post("/embed_all", summary="Token embeddings: [[[float]]], one matrix per input, [CLS] and [SEP] included")
    async def embed_all(body: EmbedAllRequest):
        server.require("feature-extraction", "/embed_all")
        texts = server.texts_of(body.inputs)
        result, meta = await server.run(len(texts), count_characters(texts), lambda: server.pipe.preprocess(
            texts, pooling=NO_POOLING), body.truncate)  # also where the folder pools, as TEI's /embed_all
        return respond(result, meta)

    @router.post("/predict", summary="Classify a text, a pair [text, pair], or a batch of them: [{score, label}] sorted")
    async def predict(body: PredictRequest):
        server.require("text-classification", "/predict")
        single, sequences = sequences_of(body.inputs)
        server.check_batch(sequences)
        items = [s[0] if len(s) == 1 else {"text": s[0], "text_pair": s[1]} for s in sequences]
        # TEI's scores: softmax over several labels, a sigmoid for one, the logits with raw_scores
        function = "none" if body.raw_scores else ("softmax" if server.pipe.config.num_labels > 1 else "sigmoid")
        result, meta = await server.run(len(items), count_characters(items), lambda: server.pipe.preprocess(
            items, top_k=None, function_to_apply=function), body.truncate)
        return respond([{"score": p["score"], "label": p["label"]} for p in result[0]] if single else
                       [[{"score": p["score"], "label": p["label"]} for p in r] for r in result], meta)

    @router.post("/tokenize", summary="Tokens of each input: [[{id, text, special, start, stop}]] (character offsets)")
    async def tokenize(body: TokenizeRequest):
        texts = server.texts_of(body.inputs)
        return respond(await server.off_loop(lambda: tokens_of(server, texts, body.add_special_tokens)))

    @router.post("/decode", summary="Texts of token ids: [string], one per list of ids")
    async def decode(body: DecodeRequest):
        nested = bool(body.ids) and isinstance(body.ids[0], list)
        batch = body.ids if nested else [body.ids]
        if nested:
            server.check_batch(batch, "ids")
        vocab = server.pipe.tokenizer.vocab_size
        for ids in batch:
            bad = next((i for i in ids if not 0 <= i < vocab), None)
            if bad is not None:
                raise ApiError(422, "Validation", f"ids: {bad} is not a token id (the vocabulary has ids 0 to {vocab - 1})")
        decode = server.pipe.tokenizer.decode
        return respond(await server.off_loop(
            lambda: [decode(ids, skip_special_tokens=body.skip_special_tokens) for ids in batch]))

    @router.get("/info", summary="The model and the server's limits")
    async def info():
        return respond(server.info())

    @router.get("/health", summary="200 while the model answers; 503 while shutting down (no API key needed)")
    async def health():
        if server.draining or not server.batcher.alive:
            raise ApiError(503, "Unhealthy", "unhealthy: " + ("shutting down" if server.draining else
                                                              "the batching worker stopped"), "unhealthy")
        return Response(status_code=200)

    @router.get("/metrics", summary="Prometheus metrics (text format)")
    async def metrics():
        return Response(server.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router


def sequences_of(inputs: str | list[str] | list[list[str]]) -> tuple[bool, list[list[str]]]:
    """TEI's PredictInput: "text" and ["text", "pair"] are one input; [["text"], ["text", "pair"]] a batch."""
    if isinstance(inputs, str):
        return True, [[inputs]]
    if not inputs:
        return False, []
    if all(isinstance(x, str) for x in inputs):
        if len(inputs) > 2:
            raise ApiError(422, "Validation", f"inputs: invalid length {len(inputs)}, expected a string, a pair of "
                           'strings ["text", "pair"] or a batch of mixed strings and pairs [["text"], ["text", "pair"], ...]')
        return True, [list(inputs)]
    for i, sequence in enumerate(inputs):
        if len(sequence) not in (1, 2):
            raise ApiError(422, "Validation", f"inputs.{i}: invalid length {len(sequence)}, expected [\"text\"] or "
                           '["text", "pair"]')
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
