"""The server a user would otherwise write: FastAPI around a `transformers` pipeline, one call per request.

usage: reference_server.py MODEL --task fill-mask|feature-extraction --port PORT

POST /       {"inputs": text}  fill-mask: the pipeline's answer
POST /embed  {"inputs": text}  embeddings: transformers' feature extraction, mean pooling, L2 norm, [[...]]
(sentence-transformers would be the other natural choice for embeddings; it is not installed beside FastAPI here)
"""

import argparse

import numpy as np
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline


class Request(BaseModel):
    inputs: str


def make_app(model: str, task: str) -> FastAPI:
    pipe = pipeline(task, model=model, device="cpu")
    app = FastAPI()

    @app.get("/health")
    def health():
        return {}

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
    args = p.parse_args()
    uvicorn.run(make_app(args.model, args.task), host="127.0.0.1", port=args.port, log_level="warning")
