"""Run in Optimum's own virtual environment (.venv-optimum): load our export with ORTModel classes.

usage: optimum_outputs.py EXPORT_DIR CLASS INPUTS.npz OUTPUTS.npz [GRAPH]

GRAPH: a graph of onnx/ other than model.onnx (model_quantized.onnx, model_q4.onnx, ...), loaded as the README
says: from_pretrained(folder, subfolder="onnx", file_name=GRAPH).
"""

import sys

import numpy as np
import optimum.onnxruntime as ort_models

folder, class_name, inputs_path, outputs_path, *graph = sys.argv[1:]
options = {"subfolder": "onnx", "file_name": graph[0]} if graph else {}
model = getattr(ort_models, class_name).from_pretrained(folder, **options)
inputs = dict(np.load(inputs_path))
out = model(**inputs)
names = ("logits", "last_hidden_state")
np.savez(outputs_path, **{n: np.asarray(getattr(out, n)) for n in names if getattr(out, n, None) is not None})
