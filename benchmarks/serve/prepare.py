"""The full-size random-weight distilbert-base-uncased (as benchmarks/run.py makes it) and our ONNX exports of it
(fp32, optimised, and dynamic int8).

usage: .venv/bin/python benchmarks/serve/prepare.py   (once; writes benchmarks/.cache/serve/)
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "benchmarks" / ".cache" / "serve"
DATA = Path(os.environ.get("DISTILBERT_DATA", ROOT.parent / "shared" / "data"))


def ready(folder: Path) -> bool:
    """An export that finished: its int8 file and its report, written last, after validation."""
    return all((folder / f).exists() for f in ("onnx/model_quantized.onnx", "export_report.json"))


def main() -> None:
    import torch
    import transformers

    hf = CACHE / "hf"
    if not (hf / "model.safetensors").exists():
        torch.manual_seed(0)
        model = transformers.DistilBertForMaskedLM(transformers.DistilBertConfig())  # distilbert-base-uncased's sizes
        model.save_pretrained(hf)
        transformers.BertTokenizerFast(str(DATA / "vocab" / "bert-base-uncased-vocab.txt")).save_pretrained(hf)
    for task, name in (("fill-mask", "onnx-fill-mask"), ("feature-extraction", "onnx-features")):
        if not ready(CACHE / name):
            subprocess.run([sys.executable, "-m", "distilbert.cli", "export", str(hf), str(CACHE / name), "--task", task,
                            "--optimize", "--quantize", "int8"], check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    print(CACHE)


if __name__ == "__main__":
    main()
