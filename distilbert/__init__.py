"""DistilBERT end to end. `distilbert.pipeline("fill-mask", model="distilbert-base-uncased")`."""

from .config import Config
from .errors import UserError
from .pipelines import pipeline
from .tokenizer import Tokenizer

__all__ = ["Config", "Tokenizer", "UserError", "pipeline"]
__version__ = "0.1.0"
