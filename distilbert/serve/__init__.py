"""`distilbert serve`: every pipeline over HTTP, with text-embeddings-inference's routes, OpenAI embeddings
and the Hugging Face Inference API, one batching worker per model, back-pressure and Prometheus metrics.

Needs the serve extra (FastAPI, uvicorn, prometheus_client); imports no torch.
"""

from .app import create_app, run
from .core import Settings

__all__ = ["Settings", "create_app", "run"]
