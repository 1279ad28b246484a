"""Mask methods behind ``--method``: magnitude, wanda, sparsegpt, with per-layer fallback.

Every eligible layer still ends up N:M: a method that cannot handle a layer falls back to
magnitude for it, and the returned note says why (it lands in the report row).
"""

from __future__ import annotations

import numpy as np
import onnx

from sparsify.analysis.index import int_attr, ints_attr
from sparsify.analysis.lookthrough import WeightSource
from sparsify.io.dtypes import FLOAT_TYPES, from_float, to_float32
from sparsify.masks.apply import PruneResult, ReadBits, nonzero_mask, prune_weight
from sparsify.masks.nm import nm_violations
from sparsify.masks.registry import METHODS, NEEDS_CALIBRATION
from sparsify.masks.sparsegpt import SparseGPTError, sparsegpt_prune
from sparsify.masks.stats import ActivationStats
from sparsify.pattern import NMPattern

__all__ = ["METHODS", "NEEDS_CALIBRATION", "needs_hessian", "prune_with_method"]



def needs_hessian(method: str, node: onnx.NodeProto) -> bool:
    return method == "sparsegpt" and _sparsegpt_refusal(node, None) is None


def _sparsegpt_refusal(node: onnx.NodeProto, src: WeightSource | None) -> str | None:
    if node.op_type == "Conv":
        kernel = ints_attr(node, "kernel_shape")
        if int_attr(node, "group", 1, 1) != 1:
            return "sparsegpt handles ungrouped convolutions only"
        if src is not None and any(d != 1 for d in src.op_shape[2:]):
            return "sparsegpt handles 1x1 convolutions only"
        if kernel is not None and any(k != 1 for k in kernel):
            return "sparsegpt handles 1x1 convolutions only"
    if src is not None and src.tensor.data_type not in FLOAT_TYPES:
        return "sparsegpt updates weight values; quantized weights would need requantizing"
    return None


def _sparsegpt(bits, src, pattern, read_bits, stats) -> PruneResult:
    dtype = src.tensor.data_type
    values = to_float32(bits, dtype).astype(np.float64)
    moved = np.moveaxis(values, src.axis, -1)
    k = moved.shape[-1]
    if stats.hessian is None or stats.hessian.shape != (k, k):
        raise SparseGPTError("no calibration Hessian matches this weight")
    weight = moved.reshape(-1, k)
    if stats.cross is not None:
        # Refit toward the dense output first: argmin_A ||X A - X_dense W||, i.e.
        # A = H^-1 X^T X_dense W (rows here are output features, so A^T = W C^T H^-1).
        h = stats.hessian + np.eye(k) * 0.01 * float(np.mean(np.diag(stats.hessian)) or 1.0)
        weight = np.linalg.solve(h, stats.cross @ weight.T).T
    pruned = sparsegpt_prune(weight, stats.hessian, pattern.n, pattern.m)
    new_bits = from_float(np.moveaxis(pruned.reshape(moved.shape), -1, src.axis), dtype)
    before = nonzero_mask(bits, src, read_bits)
    after = nonzero_mask(new_bits, src, read_bits)
    bad_after, groups = nm_violations(after, src.axis, pattern.n, pattern.m)
    if bad_after:
        raise AssertionError(f"internal error: sparsegpt left {src.name!r} not {pattern}")
    bad_before, _ = nm_violations(before, src.axis, pattern.n, pattern.m)
    total = max(1, bits.size)
    b, a = int(before.sum()), int(after.sum())
    return PruneResult(new_bits, b / total, a / total, max(0, b - a))


def prune_with_method(method: str, bits: np.ndarray, src: WeightSource, node: onnx.NodeProto,
                      pattern: NMPattern, read_bits: ReadBits, stats: ActivationStats | None) -> tuple[PruneResult, str]:
    """Prune one weight; (result, note) where the note explains a fallback ("" if none)."""
    if method == "magnitude":
        return prune_weight(bits, src, pattern, read_bits), ""
    if stats is None:
        return prune_weight(bits, src, pattern, read_bits), f"{method}: no calibration activations reached this layer; magnitude used"
    if method == "wanda":  # prune_weight leaves an already-N:M weight untouched by itself
        if stats.sq_norm.shape[0] != bits.shape[src.axis]:
            return prune_weight(bits, src, pattern, read_bits), "wanda: activation width differs from the weight; magnitude used"
        return prune_weight(bits, src, pattern, read_bits, feature_scale=stats.feature_norm), ""
    violations, _ = nm_violations(nonzero_mask(bits, src, read_bits), src.axis, pattern.n, pattern.m)
    if violations == 0:  # already N:M: the OBS update must not rewrite its values
        return prune_weight(bits, src, pattern, read_bits), ""
    refusal = _sparsegpt_refusal(node, src)
    if refusal is None:
        try:
            return _sparsegpt(bits, src, pattern, read_bits, stats), ""
        except SparseGPTError as exc:
            refusal = str(exc)
    return prune_weight(bits, src, pattern, read_bits), f"sparsegpt: {refusal}; magnitude used"
