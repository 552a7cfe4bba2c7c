"""DistilBERT end to end. `distilbert.pipeline("fill-mask", model="distilbert-base-uncased")`."""

from .config import Config
from .errors import UserError
from .pipelines import pipeline
from .tokenizer import Tokenizer

__all__ = ["Config", "Tokenizer", "UserError", "pipeline"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """`distilbert.keras` after `import distilbert`, without importing TensorFlow until it is used."""
    if name == "keras":
        import importlib

        return importlib.import_module(".keras", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
