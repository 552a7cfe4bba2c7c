"""Run in Optimum's own virtual environment (.venv-optimum): load our export with ORTModel classes.

usage: optimum_outputs.py EXPORT_DIR CLASS INPUTS.npz OUTPUTS.npz
"""

import sys

import numpy as np
import optimum.onnxruntime as ort_models

folder, class_name, inputs_path, outputs_path = sys.argv[1:]
model = getattr(ort_models, class_name).from_pretrained(folder)
inputs = dict(np.load(inputs_path))
out = model(**inputs)
names = ("logits", "last_hidden_state")
np.savez(outputs_path, **{n: np.asarray(getattr(out, n)) for n in names if getattr(out, n, None) is not None})
