"""Which ONNX weight holds which PyTorch parameter: matched by value, never by name.

Exporters rename and transpose weights (``onnx::MatMul_123`` holding ``fc.weight.T``), so
every parameter is located by its exact values, directly or transposed (2-D).  A parameter
whose values appear in several weights is ambiguous and refused rather than guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from sparsify.errors import UsageError
from sparsify.io.graph_walk import stored_tensors

__all__ = ["WeightMapping", "map_parameters"]


@dataclass(frozen=True)
class WeightMapping:
    onnx_name: str
    transposed: bool  # the ONNX tensor is the parameter's transpose


def _onnx_weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {name: numpy_helper.to_array(tensor) for name, tensor in stored_tensors(model.graph).items()}


def map_parameters(parameters: dict[str, np.ndarray], model: onnx.ModelProto) -> dict[str, WeightMapping]:
    """Map every named parameter (arrays) to the ONNX weight holding it."""
    weights = _onnx_weights(model)
    by_shape: dict[tuple, list[str]] = {}
    for name, value in weights.items():
        by_shape.setdefault(tuple(value.shape), []).append(name)
    mapping: dict[str, WeightMapping] = {}
    for param, value in parameters.items():
        hits = [WeightMapping(n, False) for n in by_shape.get(tuple(value.shape), [])
                if weights[n].dtype == value.dtype and np.array_equal(weights[n], value)]
        if value.ndim == 2:
            hits += [WeightMapping(n, True) for n in by_shape.get(tuple(value.shape[::-1]), [])
                     if weights[n].dtype == value.dtype and np.array_equal(weights[n], value.T)]
        if not hits:
            raise UsageError(f"parameter {param!r} was not found in the exported model (folded or cast away?)")
        if len(hits) > 1:
            raise UsageError(f"parameter {param!r} matches {len(hits)} ONNX weights (or orientations) by value; "
                             "cannot place its mask")
        mapping[param] = hits[0]
    return mapping
