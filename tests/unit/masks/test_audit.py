"""The streamed N:M audit (``sparsify check``'s engine) against an independent reference."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import sparsify.masks.nm as nm_module
from sparsify import check
from sparsify.io.dtypes import abs_mask
from sparsify.masks.nm import NMAudit, group_view
from tests.builders import groups, make_model, save, vi
from tests.unit.masks.test_nm import weight_and_axis


def _reference(nonzero: np.ndarray, axis: int, n: int, m: int) -> tuple[int, int, int]:
    counts = groups(nonzero, axis, m).sum(-1)
    return int(nonzero.sum()), int((counts > n).sum()), int(counts.size)


# Mostly zeros of both signs, so groups on either side of n are common.
STORED = st.sampled_from([0.0, -0.0, 0.0, 1.5, -2.0, np.nan])


@settings(max_examples=300, deadline=None)
@given(weight_and_axis(STORED), st.sampled_from([np.float32, np.float16]), st.sampled_from([1 << 22, 8, 1]))
def test_float_audit_matches_reference(case, dtype, chunk):
    values, axis, n, m = case
    values = values.astype(dtype)
    bits = values.view(np.uint32 if dtype == np.float32 else np.uint16)
    old, nm_module._CHUNK_ELEMENTS = nm_module._CHUNK_ELEMENTS, chunk  # tiny chunks: many loop turns
    try:
        audit = NMAudit(abs_mask(bits.dtype), bits.dtype.type(0), n)
        audit.add(group_view(bits, axis, m))
    finally:
        nm_module._CHUNK_ELEMENTS = old
    # -0.0 is zero, NaN is not: the reference says so through float comparison.
    nonzero = (values != 0) | np.isnan(values)
    assert (audit.nonzeros, audit.bad, audit.groups) == _reference(nonzero, axis, n, m)


def test_int8_audit_counts_against_the_zero_point():
    rng = np.random.default_rng(3)
    bits = rng.choice(np.array([-3, 5, 7], np.int8), size=(16, 12))
    audit = NMAudit(np.int8(-1), np.int8(5), 2)
    audit.add(group_view(bits, 0, 4))
    assert (audit.nonzeros, audit.bad, audit.groups) == _reference(bits != 5, 0, 2, 4)


def test_audit_accumulates_over_pieces():
    rng = np.random.default_rng(4)
    values = np.where(rng.random((64, 8)) < 0.5, 0, rng.standard_normal((64, 8))).astype(np.float32)
    bits = values.view(np.uint32)
    whole = NMAudit(abs_mask(bits.dtype), np.uint32(0), 2)
    whole.add(group_view(bits, 0, 4))
    pieces = NMAudit(abs_mask(bits.dtype), np.uint32(0), 2)
    view = group_view(bits, 0, 4)
    for start in range(0, view.shape[0], 3):
        pieces.add(view[start : start + 3])
    assert (pieces.nonzeros, pieces.bad, pieces.groups) == (whole.nonzeros, whole.bad, whole.groups)
    assert whole.bad > 0


def _mixed_model(tmp_path, external: bool):
    """Weights in an order different from their storage order, one not N:M, an fp16 one, an int8
    one behind DequantizeLinear with per-channel zero points, and one held in the graph."""
    rng = np.random.default_rng(5)

    def nm_weight(shape, dtype=np.float32):
        w = rng.standard_normal(shape).astype(dtype)
        g = groups(w, 0, 4)
        drop = np.argsort(np.abs(g), axis=-1)[..., :2]
        np.put_along_axis(g, drop, 0, axis=-1)
        return np.moveaxis(g.reshape(*g.shape[:-2], -1), -1, 0).copy()

    w_ok = nm_weight((64, 32))
    w_bad = rng.standard_normal((32, 32)).astype(np.float32)
    w_half = nm_weight((32, 16), np.float16)
    q = rng.integers(-5, 6, size=(16, 8)).astype(np.int8)
    zero_points = np.array([0, 1, 2, 3, 0, 1, 2, 3], np.int8)
    q[0::4][:, :] = zero_points  # make a few groups comply exactly at their zero point
    nodes = [
        helper.make_node("MatMul", ["x", "w_bad"], ["h0"]),  # graph order: bad first ...
        helper.make_node("MatMul", ["h0", "w_ok_small"], ["h1"]),
        helper.make_node("Cast", ["h1"], ["h1h"], to=TensorProto.FLOAT16),
        helper.make_node("MatMul", ["h1h", "w_half"], ["h2h"]),
        helper.make_node("Cast", ["h2h"], ["h2"], to=TensorProto.FLOAT),
        helper.make_node("DequantizeLinear", ["q", "scale", "zp"], ["wq"], axis=1),
        helper.make_node("MatMul", ["h2", "wq"], ["y"]),
    ]
    inits = [numpy_helper.from_array(a, name) for a, name in (
        (w_ok[:32], "w_ok_small"), (w_bad, "w_bad"), (w_half, "w_half"), (q, "q"),
        (np.full(8, 0.1, np.float32), "scale"), (zero_points, "zp"))]
    model = make_model(nodes, [vi("x", [2, 32])], [vi("y", [2, 8])], inits)
    path = tmp_path / "m.onnx"
    if external:
        save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location="m.onnx.data",
             size_threshold=0)
    else:
        save(model, path)
    expected = {
        "w_ok_small": _reference(w_ok[:32] != 0, 0, 2, 4),
        "w_bad": _reference(w_bad != 0, 0, 2, 4),
        "w_half": _reference(w_half != 0, 0, 2, 4),
        "q": _reference(q != zero_points[None, :], 0, 2, 4),
    }
    return path, expected


@pytest.mark.parametrize("external", [False, True])
def test_check_reports_the_reference_counts_for_every_weight(tmp_path, external):
    path, expected = _mixed_model(tmp_path, external)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    report = check(path)
    rows = {row.target.weight: row for row in report.rows}
    assert set(rows) == set(expected)
    for name, (nonzeros, bad, total) in expected.items():
        row = rows[name]
        size = int(np.prod([int(d) for d in row.target.weight_source().tensor.dims]))
        assert row.outcome.density_before == pytest.approx(nonzeros / size)
        if bad:
            assert row.outcome.status.value == "non_compliant"
            assert row.outcome.reason.startswith(f"{bad} of {total} groups")
        else:
            assert row.outcome.status.value == "compliant"
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # read-only


def test_check_of_a_weight_held_in_the_graph(tmp_path):
    w = np.zeros((8, 4), np.float32)
    w[::4] = 1.0  # one non-zero per group
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [vi("x", [1, 8])], [vi("y", [1, 4])],
                       [helper.make_tensor("w", TensorProto.FLOAT, [8, 4], w.reshape(-1).tolist())])
    path = save(model, tmp_path / "typed.onnx")
    assert not onnx.load(str(path)).graph.initializer[0].HasField("raw_data")
    (row,) = check(path).rows
    assert row.outcome.status.value == "compliant" and row.outcome.density_before == pytest.approx(0.25)
