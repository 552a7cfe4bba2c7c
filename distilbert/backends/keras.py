"""The Keras backend: our Keras 3 model (distilbert/keras.py) on TensorFlow, run on numpy arrays.

Each call runs one tf.function: traced once for any shape, or with `jit_compile` compiled by XLA, which
compiles again for every new (batch, length) it meets.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..config import Config
from ..errors import UserError

log = logging.getLogger("distilbert")


class KerasBackend:
    def __init__(self, net, config: Config, task: str, folder: Path, jit_compile: bool = False):
        import tensorflow as tf

        self.net, self.config, self.task, self.folder, self.jit_compile = net, config, task, folder, jit_compile
        self._forward = tf.function(self._call, jit_compile=jit_compile, reduce_retracing=True)

    @classmethod
    def load(cls, model, task: str | None = None, threads: int | None = None, precision: str = "fp32",
             jit_compile: bool = False) -> KerasBackend:
        """A checkpoint folder or hub id (safetensors) as a Keras model; `jit_compile` compiles it with XLA."""
        if precision != "fp32":
            raise UserError(f"precision {precision!r} is not available with the keras backend (fp32 only); "
                            "int8 runs on the onnx backend, bf16 on the torch backend")
        try:
            from .. import keras as ours  # sets KERAS_BACKEND before keras is imported
        except ImportError as e:
            raise UserError(f"the keras backend needs the tf extra: {e}") from None
        import tensorflow as tf

        if ours.keras.backend.backend() != "tensorflow":
            raise UserError("the keras backend runs on TensorFlow: unset KERAS_BACKEND or set it to tensorflow")
        if threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
            except RuntimeError:  # TensorFlow fixes its thread pools when it first runs anything
                log.warning("TensorFlow is already running in this process; its thread count stays as it is")
        net, config, folder = ours.load(model, task)
        return cls(net, config, ours.task_of(net), folder, jit_compile)

    def _call(self, input_ids, attention_mask, token_type_ids, logits_at):
        kwargs = {"logits_at": logits_at, "logits_only": True} if logits_at is not None else {}
        out = self.net(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, training=False, **kwargs)
        return {k: v for k, v in out.items() if not isinstance(v, tuple)}

    def run(self, input_ids, attention_mask, token_type_ids=None, logits_at=None) -> dict[str, np.ndarray]:
        types = None if token_type_ids is None else np.asarray(token_type_ids, dtype=np.int64)
        at = None if logits_at is None else np.asarray(logits_at, dtype=bool)
        out = self._forward(np.asarray(input_ids, dtype=np.int64), np.asarray(attention_mask, dtype=np.int64), types, at)
        return {k: v.numpy() for k, v in out.items()}
