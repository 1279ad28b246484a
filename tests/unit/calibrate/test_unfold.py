"""unfold (im2col) against ONNX Runtime's own Conv: for every geometry, the weight's columns
times the patches give exactly the conv's output, so the Hessian sparsegpt sees is X^T X of
what the weight really meets; and the column order makes M consecutive columns M channels at
one kernel position (N:M along C/g)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from sparsify.analysis.conv import ConvGeometry
from sparsify.calibrate.unfold import unfold
from sparsify.masks.columns import columns_to_weight, weight_columns
from tests.builders import init, make_model, rand, run, save, vi


@pytest.mark.parametrize("spatial, kernel, attrs, group", [
    ([6, 7], [3, 3], {"pads": [1, 1, 1, 1]}, 1),
    ([9, 8], [3, 2], {"strides": [2, 1], "pads": [1, 0, 2, 1]}, 1),
    ([9, 9], [3, 3], {"dilations": [2, 2]}, 1),
    ([8, 8], [3, 3], {"pads": [1, 1, 1, 1]}, 4),
    ([7, 5], [3, 3], {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, 2),
    ([7, 5], [2, 2], {"auto_pad": "SAME_LOWER"}, 1),
    ([11], [5], {"strides": [3], "pads": [2, 1]}, 1),
    ([5, 5], [1, 1], {"strides": [2, 2]}, 1),
])
def test_columns_times_patches_is_onnx_runtimes_conv(tmp_path, spatial, kernel, attrs, group):
    c_in, c_out = 8, 4
    w = rand([c_out, c_in // group, *kernel], 1)
    node = helper.make_node("Conv", ["x", "W"], ["y"], name="conv", group=group, **attrs)
    model = make_model([node], [vi("x", [2, c_in, *spatial])], [vi("y", None)], [init(w, "W")])
    path = save(model, tmp_path / "c.onnx")
    x = rand([2, c_in, *spatial], 2)
    expected = run(path, {"x": x})[0]  # [N, M, *O]
    geometry = ConvGeometry.of(model.graph.node[0], tuple(w.shape))
    assert geometry.refusal() == ""
    patches = unfold(x, geometry)  # [g, N*O, K]
    columns = weight_columns(w.astype(np.float64), group)  # [g, M/g, K]
    out = np.concatenate([patches[g] @ columns[g].T for g in range(group)], axis=1)  # [N*O, M]
    got = np.moveaxis(out.reshape(expected.shape[0], *expected.shape[2:], c_out), -1, 1)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(columns_to_weight(columns, w.shape), w)


def test_column_groups_are_channels_at_one_kernel_position():
    w = np.arange(2 * 8 * 3 * 3, dtype=np.float64).reshape(2, 8, 3, 3)  # M=2, C=8, 3x3
    columns = weight_columns(w, 1)[0]  # [2, 72]
    # the first four columns: channels 0..3 at kernel position (0, 0)
    np.testing.assert_array_equal(columns[0, :4], w[0, 0:4, 0, 0])
    np.testing.assert_array_equal(columns[1, 4:8], w[1, 4:8, 0, 0])
    np.testing.assert_array_equal(columns[0, 8:12], w[0, 0:4, 0, 1])
