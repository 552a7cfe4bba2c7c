"""Make a tiny random DistilBERT masked LM with the real vocabulary and export it to ONNX: tiny_export.py OUT_DIR"""

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers.models import make_reference, save_reference  # noqa: E402
from distilbert.onnx import export  # noqa: E402

with tempfile.TemporaryDirectory() as source:
    save_reference(make_reference("distilbert", "ForMaskedLM", vocab_size=30522), Path(source))
    export(source, sys.argv[1], log=lambda line: None)
print(sys.argv[1])
