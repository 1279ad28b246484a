"""Apply an N:M magnitude mask to one stored weight, with its post-condition.

Pruned entries become the value that means zero: +0.0 bits for floats, the zero point
for int8/uint8 behind DequantizeLinear (so the dequantized value is exactly 0).  Kept
entries are never touched, so they stay bit-identical.  A weight that already is N:M
along its axis is returned unchanged (``None``), which makes the pass idempotent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from onnx import TensorProto

from sparsify.analysis.lookthrough import WeightSource
from sparsify.io.dtypes import FLOAT_TYPES, abs_mask, magnitude_key, to_float32
from sparsify.masks.nm import nm_keep_mask, nm_violations, prune_bits_inplace
from sparsify.pattern import NMPattern

__all__ = ["PruneResult", "nonzero_mask", "prune_weight", "quant_zero"]

ReadBits = Callable[[TensorProto], np.ndarray]


@dataclass
class PruneResult:
    new_bits: np.ndarray | None  # None: already N:M, left untouched
    density_before: float
    density_after: float
    zeroed: int


def _per_axis(values: np.ndarray, rank: int, axis: int) -> np.ndarray:
    values = values.reshape(-1)
    if values.size == 1:
        return values.reshape(())
    shape = [1] * rank
    shape[axis] = values.size
    return values.reshape(shape)


def quant_zero(src: WeightSource, read_bits: ReadBits, rank: int) -> np.ndarray:
    """The stored value that dequantizes to 0, broadcastable to the weight (0 without a zero point)."""
    quant = src.quant
    if quant is None or quant.zero_point is None:
        return np.zeros((), dtype=np.int8 if src.tensor.data_type == TensorProto.INT8 else np.uint8)
    return _per_axis(read_bits(quant.zero_point), rank, quant.axis)


def nonzero_mask(bits: np.ndarray, src: WeightSource, read_bits: ReadBits) -> np.ndarray:
    if src.tensor.data_type in FLOAT_TYPES:
        return magnitude_key(bits) != 0
    return bits != quant_zero(src, read_bits, bits.ndim)


def _scores_and_nonzero(bits: np.ndarray, src: WeightSource, read_bits: ReadBits,
                        feature_scale: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    if feature_scale is not None:
        # Wanda: |W| * ||X_k|| with the activation norm of input feature k along the axis.
        magnitude, nonzero = _scores_and_nonzero(bits, src, read_bits)
        if src.tensor.data_type in FLOAT_TYPES:  # the bit key orders like |w| but is not its value
            magnitude = np.abs(to_float32(bits, src.tensor.data_type))
        scale = feature_scale.astype(np.float32)  # per input feature, or already shaped like the weight
        if scale.ndim != bits.ndim or scale.ndim == 1:
            scale = _per_axis(scale, bits.ndim, src.axis)
        return np.nan_to_num(magnitude * scale, nan=np.inf), nonzero
    if src.tensor.data_type in FLOAT_TYPES:
        key = magnitude_key(bits)  # one pass serves both
        return key, key != 0
    zero = quant_zero(src, read_bits, bits.ndim)
    centered = np.abs(bits.astype(np.int16) - zero.astype(np.int16)).astype(np.float32)
    if src.quant is not None and src.quant.scale is not None:
        scale = to_float32(read_bits(src.quant.scale), src.quant.scale.data_type)
        centered *= np.abs(_per_axis(scale, bits.ndim, src.quant.axis))
    return centered, bits != zero


def prune_weight(bits: np.ndarray, src: WeightSource, pattern: NMPattern, read_bits: ReadBits,
                 in_place: bool = False, feature_scale: np.ndarray | None = None) -> PruneResult:
    """Prune ``bits`` to ``pattern`` along ``src.axis``; ``feature_scale`` (one value per
    entry of the reduction axis) turns magnitude into Wanda's |W| * ||X||.

    With ``in_place`` (floats only; the caller owns the buffer) the pruned values are
    written into ``bits`` itself and ``new_bits`` is ``bits``: no weight-sized copies.
    """
    axis, n, m = src.axis, pattern.n, pattern.m
    if (in_place and feature_scale is None and src.tensor.data_type in FLOAT_TYPES
            and bits.flags.c_contiguous and bits.flags.writeable):
        before, after, bad, groups = prune_bits_inplace(bits, abs_mask(bits.dtype), axis, n, m)
        total = max(1, bits.size)
        return PruneResult(bits if bad else None, before / total, after / total, before - after)
    scores, nonzero = _scores_and_nonzero(bits, src, read_bits, feature_scale)
    total = max(1, bits.size)
    before = int(np.count_nonzero(nonzero))
    bad, groups = nm_violations(nonzero, axis, n, m)
    if bad == 0:
        return PruneResult(None, before / total, before / total, 0)
    keep = nm_keep_mask(scores, axis, n, m)
    del scores
    if src.tensor.data_type in FLOAT_TYPES:
        new_bits = np.where(keep, bits, bits.dtype.type(0))
    else:
        new_bits = np.where(keep, bits, quant_zero(src, read_bits, bits.ndim)).astype(bits.dtype)
    after_nonzero = np.logical_and(keep, nonzero, out=nonzero)
    # Post-condition: a wrong-axis or partial prune must never reach the writer.
    still_bad, _ = nm_violations(after_nonzero, axis, n, m)
    if still_bad:
        raise AssertionError(f"internal error: {src.name!r} is not {pattern} along axis {axis} after pruning")
    after = int(np.count_nonzero(after_nonzero))
    return PruneResult(new_bits, before / total, after / total, before - after)
