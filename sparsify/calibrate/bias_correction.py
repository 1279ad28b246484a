"""Bias correction: after pruning ``y = x W + b``, move the output mean back.

The expected output shift over the calibration data is ``E[x_dense] W - E[x] W_sparse`` (the
dense model's output mean minus the pruned layer's, on its possibly drifted input); adding it to
the bias removes the systematic part of the error (cheap, and it matters for mean-
pooled embeddings).  Applied only where the bias is a float initializer used by this layer
alone: MatMul followed by Add(constant), or Gemm's C.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from sparsify.analysis.index import GraphIndex, is_default_domain
from sparsify.analysis.targets import Target
from sparsify.io.dtypes import FLOAT_TYPES, from_float, to_float32
from sparsify.masks.stats import ActivationStats

__all__ = ["find_bias", "corrected_bias"]


def find_bias(index: GraphIndex, target: Target) -> tuple[str, TensorProto] | None:
    """(name, stored tensor) of the bias that only this layer adds, or None."""
    node = target.node
    if node is None or target.input_index != 1 or len(target.weight_shape) != 2:
        return None
    if node.op_type == "Gemm":
        name = node.input[2] if len(node.input) > 2 else ""
    elif node.op_type == "MatMul":
        users = index.consumers.get(node.output[0], [])
        if len(users) != 1 or users[0][0].op_type != "Add" or not is_default_domain(users[0][0]):
            return None
        add = users[0][0]
        name = add.input[1 - users[0][1]]
    else:
        return None
    found = index.constant_tensor(name) if name else None
    if found is None or name in index.graph_outputs or len(index.consumers.get(name, [])) != 1:
        return None
    tensor = found[0]
    if tensor.data_type not in FLOAT_TYPES or [d for d in tensor.dims if d != 1] != [target.output_features]:
        return None
    if name in index.graph_inputs and index.model.ir_version >= 4:
        return None
    return name, tensor


def corrected_bias(bias_bits: np.ndarray, bias_type: int, dense_bits: np.ndarray, sparse_bits: np.ndarray,
                   weight_type: int, axis: int, stats: ActivationStats) -> np.ndarray:
    """New bias bits = bias + E[x_dense] W_dense - E[x] W_sparse, W oriented [K, N] (K = axis).

    Without a dense reference both means are the same input's: E[x] (W_dense - W_sparse).
    """
    dense = np.moveaxis(to_float32(dense_bits, weight_type).astype(np.float64), axis, 0)
    sparse = np.moveaxis(to_float32(sparse_bits, weight_type).astype(np.float64), axis, 0)
    shift = stats.dense_mean @ dense - stats.mean @ sparse
    bias = to_float32(bias_bits, bias_type).astype(np.float64)
    return from_float((bias.reshape(-1) + shift).reshape(bias_bits.shape), bias_type)
