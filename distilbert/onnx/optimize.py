"""ONNX Runtime's transformer fusions (attention, bias-GELU, skip and embedding layer-norms)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..config import Config
from ..errors import UserError

REPORTED = ("EmbedLayerNormalization", "Attention", "MultiHeadAttention", "BiasGelu", "FastGelu", "Gelu",
            "SkipLayerNormalization", "LayerNormalization")


def optimize_graph(path: Path, config: Config, log: Callable[[str], None] = print) -> dict[str, int]:
    """Fuse `path` in place; return the count of each fused operator."""
    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    from .files import save_model

    options = FusionOptions("bert")
    # Add + LayerNormalization, not SkipLayerNormalization: ONNX Runtime 1.32's CPU kernel for the fused op
    # took 0.25 ms at 128 x 768 where the two ops take 0.04 (DistilBERT-base: 2.5 ms of a 63 ms fill-mask).
    # The backend keeps ONNX Runtime from fusing them again at load (DISABLED_OPTIMIZERS in backends/onnx.py).
    options.enable_skip_layer_norm = False
    options.enable_bias_skip_layer_norm = False
    try:
        # DistilBERT and BERT share one fusion recipe in ONNX Runtime ("bert"); opt_level 0 keeps the
        # saved graph portable (no hardware-specific layout), ONNX Runtime re-optimises at load.
        optimized = optimize_model(str(path), model_type="bert", num_heads=config.n_heads, hidden_size=config.dim,
                                   opt_level=0, optimization_options=options)
    except Exception as e:
        raise UserError(f"graph optimisation failed: {str(e).splitlines()[0][:300]}") from None
    stats = optimized.get_fused_operator_statistics()
    fused = {name: int(stats.get(name, 0)) for name in REPORTED if stats.get(name)}
    proto = optimized.model
    if not any(o.domain == "com.microsoft" for o in proto.opset_import):  # the fused ops' domain, for later tools
        proto.opset_import.extend([onnx.helper.make_opsetid("com.microsoft", 1)])
    save_model(proto, path)
    log("  fused operators: " + ", ".join(f"{n} x{c}" for n, c in fused.items()))
    return fused
