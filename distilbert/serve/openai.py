"""OpenAI's embeddings API (POST /v1/embeddings): what the `openai` client and its many look-alikes send.

Embeddings are pooled as the server pools (the model's sentence-transformers pooling, else mean) and
L2-normalised, as OpenAI's are; base64 is the float32 little-endian bytes, as the `openai` client decodes.
It needs a feature-extraction model: on another it answers 424, which is all the document gives for it there.
"""

# no `from __future__ import annotations`: FastAPI reads each handler's body model from its annotation, a
# class made for this server (schemas.py), which a string annotation could not name

import base64

import numpy as np
from fastapi import APIRouter

from .core import Server, count_characters, respond
from .schemas import EMBEDDINGS, answers, tei_requests, unserved


def routes(server: Server) -> APIRouter:
    router = APIRouter(tags=["OpenAI"])
    OpenAIEmbeddingsRequest = tei_requests(server.limits)["openai"]
    serving = (dict(responses=answers(server.limits, EMBEDDINGS, 400, 413, 422, 429, 500))
               if server.task == "feature-extraction" else dict(responses=unserved(server.limits), status_code=424))

    @router.post("/v1/embeddings", **serving,
                 summary="OpenAI embeddings: {object, data: [{object, embedding, index}], model, usage}")
    @router.post("/embeddings", include_in_schema=False)
    async def embeddings(body: OpenAIEmbeddingsRequest):
        texts = server.texts_of(body.input)  # the body's own limits first (400, 413), then the task's (424)
        server.require("feature-extraction", "/v1/embeddings")
        server.check_dimensions(body.dimensions)
        result, meta = await server.run(len(texts), count_characters(texts), lambda: server.pipe.preprocess(
            texts, pooling=server.pooling, normalize=True))
        vectors = np.asarray(result, dtype=np.float32)
        if body.encoding_format == "base64":
            encoded = [base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") for v in vectors]
        else:
            encoded = vectors.tolist()
        return respond({
            "object": "list",
            "data": [{"object": "embedding", "embedding": e, "index": i} for i, e in enumerate(encoded)],
            "model": body.model or server.name,
            "usage": {"prompt_tokens": meta.tokens, "total_tokens": meta.tokens},
        }, meta)

    return router
