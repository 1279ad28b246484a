"""prune_weight on one stored weight: N:M along the given axis, pruned entries become the
stored value of zero (+0.0 bits, or the zero point behind DequantizeLinear), kept entries stay
bit-identical, and an N:M weight comes back untouched."""

from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper

from sparsify.analysis.lookthrough import QuantParams, WeightSource
from sparsify.masks.apply import nonzero_mask, prune_weight
from sparsify.pattern import parse_pattern
from tests.builders import is_nm

P24 = parse_pattern("2:4")


def _float_source(array: np.ndarray, axis: int) -> WeightSource:
    return WeightSource("W", numpy_helper.from_array(array, "W"), "initializer", axis=axis, op_shape=array.shape)


def _no_reads(_tensor):
    raise AssertionError("a float weight needs no other tensor")


def test_float_weight_pruned_along_its_axis_and_kept_values_bit_identical():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 12)).astype(np.float32)
    for axis in (0, 1):
        bits = w.view(np.uint32).copy()
        result = prune_weight(bits, _float_source(w, axis), P24, _no_reads)
        new = result.new_bits.view(np.float32)
        assert is_nm(new, axis) and result.zeroed == w.size // 2
        kept = new != 0
        assert np.array_equal(new[kept].view(np.uint32), w[kept].view(np.uint32))
        assert (result.density_before, result.density_after) == (1.0, 0.5)
        again = prune_weight(result.new_bits.copy(), _float_source(new, axis), P24, _no_reads)
        assert again.new_bits is None and again.zeroed == 0  # idempotent


def test_int8_behind_dequantize_pruned_to_its_zero_point():
    rng = np.random.default_rng(1)
    w = rng.integers(-100, 100, (4, 8)).astype(np.int8)
    zero = numpy_helper.from_array(np.array(3, np.int8), "z")
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    dq = helper.make_node("DequantizeLinear", ["W", "s", "z"], ["Wd"])
    src = WeightSource("W", numpy_helper.from_array(w, "W"), "initializer", [dq], QuantParams(dq, scale, zero, 0, 0),
                       axis=1, op_shape=w.shape)
    reads = {"z": np.array(3, np.int8), "s": np.array(0.1, np.float32).view(np.uint32)}
    result = prune_weight(w.copy(), src, P24, lambda t: reads[t.name])
    new = result.new_bits
    assert new is not None
    dequantized = (new.astype(np.float32) - 3) * 0.1
    assert is_nm(dequantized, 1)
    pruned = new != w
    assert np.all(new[pruned] == 3)  # the stored zero, so the dequantized value is exactly 0
    assert np.array_equal(nonzero_mask(new, src, lambda t: reads[t.name]), new != 3)
