"""Triton Inference Server model-repository exporter (a sparsify plugin).

    sparsify triton MODEL.onnx --repository REPO [--plan MODEL.plan] [--name NAME] [--max-batch-size N]

Writes ``REPO/NAME/config.pbtxt`` and ``REPO/NAME/1/model.plan`` (TensorRT backend) or
``REPO/NAME/1/model.onnx`` (ONNX Runtime backend, when no plan is given).  Inputs, outputs,
dtypes, dims and the batch dimension come from the ONNX model's graph signature.
"""

from __future__ import annotations

from sparsify_triton.config import TritonConfig, config_from_model, render_config
from sparsify_triton.plugin import plugin

__all__ = ["TritonConfig", "config_from_model", "plugin", "render_config"]
