"""Mask methods behind ``--method``: magnitude, wanda, sparsegpt, with per-layer fallback.

Every eligible layer still ends up N:M: a method that cannot handle a layer falls back to
magnitude for it, and the returned note says why (it lands in the report row).
"""

from __future__ import annotations

import numpy as np
import onnx

from sparsify.analysis.conv import ConvGeometry
from sparsify.analysis.index import int_attr
from sparsify.analysis.lookthrough import WeightSource
from sparsify.io.dtypes import FLOAT_TYPES, from_float, to_float32
from sparsify.masks.apply import PruneResult, ReadBits, nonzero_mask, prune_weight
from sparsify.masks.blas import large_ops
from sparsify.masks.columns import columns_to_weight, weight_columns
from sparsify.masks.nm import nm_violations
from sparsify.masks.registry import METHODS, NEEDS_CALIBRATION
from sparsify.masks.sparsegpt import Prepared, SparseGPTError, prepare
from sparsify.masks.stats import ActivationStats
from sparsify.pattern import NMPattern

__all__ = ["METHODS", "NEEDS_CALIBRATION", "drift_shape", "drift_weight", "needs_hessian", "prune_with_method", "weight_rows"]



def needs_hessian(method: str, node: onnx.NodeProto) -> bool:
    return method == "sparsegpt" and _sparsegpt_refusal(node, None) is None


def _sparsegpt_refusal(node: onnx.NodeProto, src: WeightSource | None) -> str | None:
    if src is not None and src.tensor.data_type not in FLOAT_TYPES:
        return "sparsegpt updates weight values; quantized weights would need requantizing"
    if node.op_type == "Conv" and src is not None:
        if src.steps or src.axis != 1:
            return "sparsegpt handles convolution weights stored as the op reads them"
        refusal = ConvGeometry.of(node, src.op_shape).refusal()
        if refusal:
            return f"sparsegpt cannot unfold this convolution ({refusal})"
    return None


def _sparsegpt_matrix(values: np.ndarray, src: WeightSource, node: onnx.NodeProto, pattern: NMPattern,
                      stats: ActivationStats, fit_iterations: int | None) -> np.ndarray:
    """The OBS update on the weight as the Hessian sees it: [rows, K] for a GEMM or pointwise
    conv, [group, M/g, prod(k)·C/g] for a conv with a kernel, stride, padding or groups."""
    if stats.hessian is None:
        raise SparseGPTError("no calibration Hessian reached this weight")
    if node.op_type == "Conv" and stats.hessian.ndim == 3:
        group = ConvGeometry.of(node, src.op_shape).group
        columns = weight_columns(values, group)
        if stats.hessian.shape != (group, columns.shape[2], columns.shape[2]):
            raise SparseGPTError("no calibration Hessian matches this weight")
        groups = [_prepared(stats, g, stats.hessian[g], pattern.m).prune(columns[g], pattern.n, pattern.m,
                                                                         fit_iterations)
                  for g in range(group)]
        return columns_to_weight(np.stack(groups), values.shape)
    moved = np.moveaxis(values, src.axis, -1)
    k = moved.shape[-1]
    if stats.hessian.shape != (k, k):
        raise SparseGPTError("no calibration Hessian matches this weight")
    pruned = _prepared(stats, 0, stats.hessian, pattern.m).prune(
        weight_rows(values, src), pattern.n, pattern.m, fit_iterations, stats.projected.get(src.name))
    return np.moveaxis(pruned.reshape(moved.shape), -1, src.axis)


def weight_rows(values: np.ndarray, src: WeightSource) -> np.ndarray:
    """The weight as SparseGPT sees a GEMM's or pointwise conv's: [rows, K], K along the
    reduction axis (a view where the layout allows)."""
    moved = np.moveaxis(values, src.axis, -1)
    return moved.reshape(-1, moved.shape[-1])


def drift_shape(src: WeightSource, node: onnx.NodeProto) -> tuple[int, int] | None:
    """(rows, K) of the weight as sparsegpt takes it ([rows, K], :func:`weight_rows`), when its
    product with the drift term can be summed during calibration (calibrate/capture.py,
    ``projects``); None for a non-float type or a conv that sparsegpt unfolds or refuses."""
    if _sparsegpt_refusal(node, src) is not None or src.tensor.data_type not in FLOAT_TYPES:
        return None
    if node.op_type == "Conv" and not ConvGeometry.of(node, src.op_shape).pointwise:
        return None
    shape = [int(d) for d in src.tensor.dims]
    if not shape or not -len(shape) <= src.axis < len(shape) or shape[src.axis] == 0:
        return None
    return int(np.prod(shape)) // shape[src.axis], shape[src.axis]


def drift_weight(bits: np.ndarray, src: WeightSource) -> np.ndarray:
    """The stored weight as the float32 [rows, K] that :func:`drift_shape` describes."""
    return weight_rows(to_float32(bits, src.tensor.data_type), src)


def _prepared(stats: ActivationStats, group: int, hessian: np.ndarray, m: int) -> Prepared:
    """The factors for ``hessian``, this activation's (of conv group ``group``), computed once
    for every weight that reads it (the pattern's M is the same for all of them)."""
    if group not in stats.factors:
        drift = stats.drift if stats.drift is None or stats.drift.ndim == 2 else stats.drift[group]
        samples = stats.few_rows if isinstance(stats.few_rows, np.ndarray) else None  # prepare checks its shape
        stats.factors[group] = prepare(hessian, drift, m, samples, stats.rows, overwrite=True)  # H is not read again
    return stats.factors[group]


def _sparsegpt(bits, src, node, pattern, read_bits, stats, fit_iterations: int | None) -> PruneResult:
    dtype = src.tensor.data_type
    values = to_float32(bits, dtype)  # the refit and OBS work in float32 (the factor's precision)
    with large_ops():  # no more BLAS threads than free cores (masks/blas.py)
        new_bits = from_float(_sparsegpt_matrix(values, src, node, pattern, stats, fit_iterations), dtype)
    before = nonzero_mask(bits, src, read_bits)
    after = nonzero_mask(new_bits, src, read_bits)
    bad_after, _ = nm_violations(after, src.axis, pattern.n, pattern.m)
    if bad_after:
        raise AssertionError(f"internal error: sparsegpt left {src.name!r} not {pattern}")
    total = max(1, bits.size)
    b, a = int(before.sum()), int(after.sum())
    return PruneResult(new_bits, b / total, a / total, max(0, b - a))


def _wanda_scale(stats: ActivationStats, src: WeightSource, node: onnx.NodeProto, bits: np.ndarray) -> np.ndarray | None:
    """|X_k| per weight entry's input feature: along the axis, or per group for a grouped conv."""
    norms = stats.feature_norm
    width = bits.shape[src.axis]
    if norms.shape[0] == width:
        return norms
    group = int_attr(node, "group", 1, 1) if node.op_type == "Conv" else 1
    if group > 1 and src.axis == 1 and not src.steps and norms.shape[0] == group * width:
        out = bits.shape[0]
        per_output = norms.reshape(group, width)[np.arange(out) // (out // group)]  # [M, C/g]
        return per_output.reshape(out, width, *([1] * (bits.ndim - 2)))
    return None


def prune_with_method(method: str, bits: np.ndarray, src: WeightSource, node: onnx.NodeProto,
                      pattern: NMPattern, read_bits: ReadBits, stats: ActivationStats | None,
                      fit_iterations: int | None = None) -> tuple[PruneResult, str]:
    """Prune one weight; (result, note) where the note explains a fallback ("" if none).
    ``fit_iterations``: sparsegpt's fit of the kept weights (None: its default; 0: none)."""
    if method == "magnitude":
        return prune_weight(bits, src, pattern, read_bits), ""
    if stats is None:
        return prune_weight(bits, src, pattern, read_bits), f"{method}: no calibration activations reached this layer; magnitude used"
    if method == "wanda":  # prune_weight leaves an already-N:M weight untouched by itself
        scale = _wanda_scale(stats, src, node, bits)
        if scale is None:
            return prune_weight(bits, src, pattern, read_bits), "wanda: activation width differs from the weight; magnitude used"
        return prune_weight(bits, src, pattern, read_bits, feature_scale=scale), ""
    violations, _ = nm_violations(nonzero_mask(bits, src, read_bits), src.axis, pattern.n, pattern.m)
    if violations == 0:  # already N:M: the OBS update must not rewrite its values
        return prune_weight(bits, src, pattern, read_bits), ""
    refusal = _sparsegpt_refusal(node, src)
    if refusal is None:
        try:
            return _sparsegpt(bits, src, node, pattern, read_bits, stats, fit_iterations), ""
        except SparseGPTError as exc:
            refusal = str(exc)
    return prune_weight(bits, src, pattern, read_bits), f"sparsegpt: {refusal}; magnitude used"
