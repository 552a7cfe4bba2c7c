"""The server a user would otherwise write: FastAPI around a `transformers` pipeline, or for embeddings
around sentence-transformers, one call per request.

usage: reference_server.py MODEL --task fill-mask|feature-extraction --port PORT [--sentence-transformers]

POST /       {"inputs": text}  fill-mask: the pipeline's answer
POST /embed  {"inputs": text}  embeddings: transformers' feature extraction, mean pooling, L2 norm, [[...]];
                               with --sentence-transformers, SentenceTransformer(MODEL).encode(text,
                               normalize_embeddings=True) (a plain checkpoint gets its default mean pooling)
"""

import argparse

import numpy as np
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline


class Request(BaseModel):
    inputs: str


def make_app(model: str, task: str, sentence_transformers: bool = False) -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    def health():
        return {}

    if sentence_transformers:
        from sentence_transformers import SentenceTransformer

        if task != "feature-extraction":
            raise SystemExit("--sentence-transformers serves embeddings: --task feature-extraction")
        encoder = SentenceTransformer(model, device="cpu")

        @app.post("/embed")
        def encode(request: Request):
            return [encoder.encode(request.inputs, normalize_embeddings=True).tolist()]

        return app
    pipe = pipeline(task, model=model, device="cpu")

    @app.post("/")
    def fill(request: Request):  # a plain `def`: FastAPI runs it in its thread pool, as most such servers do
        return pipe(request.inputs)

    @app.post("/embed")
    def embed(request: Request):
        tokens = np.asarray(pipe(request.inputs, return_tensors=False))[0]  # (tokens, dim)
        vector = tokens.mean(axis=0)
        return [(vector / np.linalg.norm(vector)).tolist()]

    return app


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--task", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--sentence-transformers", action="store_true", help="embeddings through sentence-transformers")
    args = p.parse_args()
    uvicorn.run(make_app(args.model, args.task, args.sentence_transformers), host="127.0.0.1", port=args.port,
                log_level="warning")
