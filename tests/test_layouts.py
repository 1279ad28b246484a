"""Every weight layout of issue 2: the right axis, the right values, a model that still runs."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import sparsify
from tests.builders import init, is_nm, make_model, rand, reference_prune, run, save, vi, weights


def prune(tmp_path, model, **kw):
    src = save(model, tmp_path / "in.onnx")
    report = sparsify.prune(src, kw.pop("pattern", "2:4"), tmp_path / "out.onnx", **kw)
    return report, tmp_path / "out.onnx"


def row(report, layer):
    return next(t for t in report.rows if t.target.layer == layer)


def assert_pruned_like_reference(tmp_path, name, axis, n=2, m=4):
    before, after = weights(tmp_path / "in.onnx")[name], weights(tmp_path / "out.onnx")[name]
    assert is_nm(after, axis, n, m)
    np.testing.assert_array_equal(after, reference_prune(before, axis, n, m))


# --- Conv ---------------------------------------------------------------------------------

@pytest.mark.parametrize("spatial", [[5], [5, 5], [3, 3, 3]], ids=["conv1d", "conv2d", "conv3d"])
@pytest.mark.parametrize("kernel", [1, 3])
def test_conv_any_rank_axis1(tmp_path, spatial, kernel):
    k = [kernel] * len(spatial)
    w = rand([8, 16, *k])
    node = helper.make_node("Conv", ["x", "W"], ["y"], name="conv", pads=[kernel // 2] * 2 * len(spatial))
    model = make_model([node], [vi("x", [1, 16, *spatial])], [vi("y", None)], [init(w, "W")])
    report, _ = prune(tmp_path, model)
    assert row(report, "conv").outcome.status == "pruned" and row(report, "conv").target.axis == 1
    assert_pruned_like_reference(tmp_path, "W", 1)
    assert report.parity.verified


def test_conv_3x3_is_not_flattened(tmp_path):
    # Flattening C*kH*kW into one axis (a peer's bug) would keep different entries.
    w = rand([4, 8, 3, 3], seed=3)
    node = helper.make_node("Conv", ["x", "W"], ["y"], name="conv")
    model = make_model([node], [vi("x", [1, 8, 6, 6])], [vi("y", None)], [init(w, "W")])
    prune(tmp_path, model)
    after = weights(tmp_path / "out.onnx")["W"]
    flattened = reference_prune(w.reshape(4, -1), 1).reshape(w.shape)
    assert not np.array_equal(after, flattened)
    assert_pruned_like_reference(tmp_path, "W", 1)


def test_grouped_and_depthwise_and_indivisible(tmp_path):
    nodes = [
        helper.make_node("Conv", ["x", "Wg"], ["a"], name="grouped", group=2, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["a", "Wd"], ["b"], name="depthwise", group=16, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["b", "W6"], ["y"], name="c6"),
    ]
    inits = [init(rand([16, 8, 3, 3]), "Wg"), init(rand([16, 1, 3, 3]), "Wd"), init(rand([6, 16, 1, 1]), "W6")]
    model = make_model(nodes, [vi("x", [1, 16, 8, 8])], [vi("y", None)], inits)
    report, _ = prune(tmp_path, model)
    assert row(report, "grouped").outcome.status == "pruned"
    assert_pruned_like_reference(tmp_path, "Wg", 1)
    assert "depthwise" in row(report, "depthwise").outcome.reason
    assert row(report, "c6").outcome.status == "pruned"  # C=16 divisible; C_out=6 does not matter

    nodes = [helper.make_node("Conv", ["x", "W"], ["y"], name="c")]
    model = make_model(nodes, [vi("x", [1, 6, 4, 4])], [vi("y", None)], [init(rand([8, 6, 1, 1]), "W")])
    report, _ = prune(tmp_path, model)
    assert row(report, "c").outcome.status == "skipped" and "not divisible by 4" in row(report, "c").outcome.reason
    np.testing.assert_array_equal(weights(tmp_path / "out.onnx")["W"], weights(tmp_path / "in.onnx")["W"])


# --- MatMul / Gemm ---------------------------------------------------------------------------

def test_matmul_right_left_batched_and_vector(tmp_path):
    nodes = [
        helper.make_node("MatMul", ["x", "Wr"], ["a"], name="right"),  # [2,8] x [8,12]: K axis -2
        helper.make_node("MatMul", ["Wl", "a"], ["b"], name="left"),  # [4,2] x [2,12]? no: see shapes
        helper.make_node("MatMul", ["t", "Wb"], ["c"], name="batched"),  # [3,5,8] x [3,8,4]
        helper.make_node("MatMul", ["x", "Wv"], ["d"], name="vector"),  # [2,8] x [8]
    ]
    inits = [init(rand([8, 12]), "Wr"), init(rand([6, 4]), "Wl"), init(rand([3, 8, 4]), "Wb"), init(rand([8]), "Wv")]
    # left: Wl [6,4] x a' where a' must be [4, 12]: feed x of shape [4, 8]
    model = make_model(nodes, [vi("x", [4, 8]), vi("t", [3, 5, 8])],
                       [vi("b", None), vi("c", None), vi("d", None)], inits)
    report, _ = prune(tmp_path, model)
    assert [row(report, n).target.axis for n in ("right", "left", "batched", "vector")] == [0, 1, 1, 0]
    assert all(t.outcome.status == "pruned" for t in report.rows)
    assert_pruned_like_reference(tmp_path, "Wr", 0)
    assert_pruned_like_reference(tmp_path, "Wl", 1)
    assert_pruned_like_reference(tmp_path, "Wb", 1)
    assert_pruned_like_reference(tmp_path, "Wv", 0)
    assert report.parity.verified


@pytest.mark.parametrize("trans_a", [0, 1])
@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_every_trans_combination(tmp_path, trans_a, trans_b):
    b = rand([16, 8] if trans_b else [8, 16])
    node = helper.make_node("Gemm", ["x", "B"], ["y"], name="gemm", transA=trans_a, transB=trans_b)
    model = make_model([node], [vi("x", [8, 2] if trans_a else [2, 8])], [vi("y", None)], [init(b, "B")])
    report, _ = prune(tmp_path, model)
    assert row(report, "gemm").target.axis == (1 if trans_b else 0)
    assert_pruned_like_reference(tmp_path, "B", 1 if trans_b else 0)

    a = rand([8, 4] if trans_a else [4, 8])
    node = helper.make_node("Gemm", ["A", "x"], ["y"], name="gemm", transA=trans_a, transB=trans_b)
    model = make_model([node], [vi("x", [3, 8] if trans_b else [8, 3])], [vi("y", None)], [init(a, "A")])
    report, _ = prune(tmp_path, model)
    assert row(report, "gemm").target.axis == (0 if trans_a else 1)
    assert_pruned_like_reference(tmp_path, "A", 0 if trans_a else 1)
    assert report.parity.verified


def test_both_operands_constant_is_skipped(tmp_path):
    node = helper.make_node("MatMul", ["A", "B"], ["y"], name="mm")
    model = make_model([node], [], [vi("y", None)], [init(rand([4, 8]), "A"), init(rand([8, 4]), "B")])
    report, _ = prune(tmp_path, model)
    assert row(report, "mm").outcome.status == "skipped" and "both operands" in row(report, "mm").outcome.reason


# --- look-through --------------------------------------------------------------------------

def test_transpose_maps_axis_through_perm(tmp_path):
    # PyTorch's nn.Linear as MatMul: W stored [out, in] = [12, 8], Transpose -> [8, 12].
    nodes = [helper.make_node("Transpose", ["W"], ["Wt"], perm=[1, 0]),
             helper.make_node("MatMul", ["x", "Wt"], ["y"], name="linear")]
    model = make_model(nodes, [vi("x", [2, 8])], [vi("y", None)], [init(rand([12, 8]), "W")])
    report, _ = prune(tmp_path, model)
    r = row(report, "linear")
    assert r.target.axis == 1 and r.target.op_axis == 0 and list(r.target.path) == ["Transpose(perm=[1, 0])"]
    assert_pruned_like_reference(tmp_path, "W", 1)


def test_transpose_3d_perm(tmp_path):
    nodes = [helper.make_node("Transpose", ["W"], ["Wt"], perm=[2, 0, 1]),
             helper.make_node("MatMul", ["x", "Wt"], ["y"], name="mm")]
    # W [8, 4, 3] -> Wt [3, 8, 4]; op axis -2 (=1 of Wt) is W axis perm[1] = 0.
    model = make_model(nodes, [vi("x", [3, 5, 8])], [vi("y", None)], [init(rand([8, 4, 3]), "W")])
    report, _ = prune(tmp_path, model)
    assert row(report, "mm").target.axis == 0
    assert_pruned_like_reference(tmp_path, "W", 0)
    assert report.parity.verified


def test_cast_and_identity_chain(tmp_path):
    nodes = [helper.make_node("Identity", ["W"], ["Wi"]),
             helper.make_node("Cast", ["Wi"], ["Wh"], to=TensorProto.FLOAT16),
             helper.make_node("Cast", ["x"], ["xh"], to=TensorProto.FLOAT16),
             helper.make_node("MatMul", ["xh", "Wh"], ["y"], name="mm")]
    model = make_model(nodes, [vi("x", [2, 8])], [vi("y", None, TensorProto.FLOAT16)], [init(rand([8, 4]), "W")])
    report, _ = prune(tmp_path, model)
    assert list(row(report, "mm").target.path) == ["Cast(to=float16)", "Identity"]
    assert_pruned_like_reference(tmp_path, "W", 0)


def _qdq_model(q, scale, zp, axis):
    nodes = [helper.make_node("DequantizeLinear", ["Wq", "s", "zp"], ["W"], axis=axis),
             helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
    inits = [init(q, "Wq"), init(scale, "s"), init(zp, "zp")]
    return make_model(nodes, [vi("x", [2, q.shape[0]])], [vi("y", None)], inits)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("per_channel_axis", [None, 0, 1])
def test_dequantize_linear_prunes_to_zero_point(tmp_path, dtype, per_channel_axis):
    rng = np.random.default_rng(1)
    q = rng.integers(0 if dtype == np.uint8 else -128, 128, size=(8, 6)).astype(dtype)
    if per_channel_axis is None:
        scale, zp = np.array(0.05, np.float32), np.array(7, dtype)
    else:
        count = q.shape[per_channel_axis]
        scale = rng.uniform(0.01, 0.2, count).astype(np.float32)
        zp = rng.integers(1, 20, count).astype(dtype)
    model = _qdq_model(q, scale, zp, per_channel_axis or 0)
    report, _ = prune(tmp_path, model)
    assert row(report, "mm").outcome.status == "pruned"
    after = weights(tmp_path / "out.onnx")["Wq"]
    zp_b = zp if per_channel_axis is None else np.expand_dims(zp, 1 - per_channel_axis)
    sc_b = scale if per_channel_axis is None else np.expand_dims(scale, 1 - per_channel_axis)
    dequant_before = (q.astype(np.float64) - zp_b) * sc_b
    dequant_after = (after.astype(np.float64) - zp_b) * sc_b
    assert is_nm(dequant_after, 0)  # pruned entries dequantize to exactly 0
    np.testing.assert_array_equal(dequant_after, reference_prune(dequant_before, 0))
    assert report.parity.verified


def test_quantize_dequantize_of_float_weight(tmp_path):
    nodes = [helper.make_node("QuantizeLinear", ["W", "s", "zp"], ["Wq"]),
             helper.make_node("DequantizeLinear", ["Wq", "s", "zp"], ["Wd"]),
             helper.make_node("MatMul", ["x", "Wd"], ["y"], name="mm")]
    inits = [init(rand([8, 4]), "W"), init(np.array(0.02, np.float32), "s"), init(np.array(3, np.int8), "zp")]
    model = make_model(nodes, [vi("x", [2, 8])], [vi("y", None)], inits)
    report, out = prune(tmp_path, model)
    assert_pruned_like_reference(tmp_path, "W", 0)
    assert report.parity.verified


def test_constant_node_weight(tmp_path):
    nodes = [helper.make_node("Constant", [], ["W"], value=init(rand([8, 4]), "w")),
             helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
    model = make_model(nodes, [vi("x", [2, 8])], [vi("y", None)])
    report, _ = prune(tmp_path, model)
    assert row(report, "mm").outcome.status == "pruned"
    assert_pruned_like_reference(tmp_path, "W", 0)


def test_typed_field_weight_is_rewritten(tmp_path):
    w = rand([8, 4])
    tensor = helper.make_tensor("W", TensorProto.FLOAT, [8, 4], w.ravel().tolist())  # float_data, not raw
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
    model = make_model([node], [vi("x", [2, 8])], [vi("y", None)], [tensor])
    report, _ = prune(tmp_path, model)
    assert_pruned_like_reference(tmp_path, "W", 0)
    assert any("raw_data" in n for n in row(report, "mm").outcome.notes)


# --- shared weights ---------------------------------------------------------------------------

def test_shared_weight_same_axis_pruned_once(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "W"], ["a"], name="mm1"),
             helper.make_node("MatMul", ["x2", "W"], ["b"], name="mm2")]
    model = make_model(nodes, [vi("x", [2, 8]), vi("x2", [3, 8])], [vi("a", None), vi("b", None)], [init(rand([8, 8]), "W")])
    report, _ = prune(tmp_path, model)
    assert {t.outcome.status for t in report.rows} == {"pruned"}
    assert report.totals()["sparse_weights"] == 1
    assert_pruned_like_reference(tmp_path, "W", 0)


def test_shared_weight_conflicting_axes_never_pruned(tmp_path):
    # Tied weight: used as W (axis 0) and, transposed, as W^T (axis 1 of the stored tensor).
    nodes = [helper.make_node("MatMul", ["x", "W"], ["a"], name="enc"),
             helper.make_node("Transpose", ["W"], ["Wt"], perm=[1, 0]),
             helper.make_node("MatMul", ["a", "Wt"], ["b"], name="dec")]
    model = make_model(nodes, [vi("x", [2, 8])], [vi("b", None)], [init(rand([8, 8]), "W")])
    report, _ = prune(tmp_path, model)
    assert {t.outcome.status for t in report.rows} == {"skipped"}
    assert "axes disagree" in row(report, "enc").outcome.reason
    np.testing.assert_array_equal(weights(tmp_path / "out.onnx")["W"], weights(tmp_path / "in.onnx")["W"])


def test_weight_with_non_target_use_is_skipped(tmp_path):
    nodes = [helper.make_node("Gather", ["W", "ids"], ["emb"]),
             helper.make_node("MatMul", ["emb", "W"], ["y"], name="mm")]
    model = make_model(nodes, [vi("ids", [2], TensorProto.INT64)], [vi("y", None)], [init(rand([8, 8]), "W")])
    report, _ = prune(tmp_path, model)
    assert "also feeds Gather" in row(report, "mm").outcome.reason


# --- dtypes -----------------------------------------------------------------------------------

def test_float16_weight(tmp_path):
    w = rand([8, 4]).astype(np.float16)
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
    model = make_model([node], [vi("x", [2, 8], TensorProto.FLOAT16)], [vi("y", None, TensorProto.FLOAT16)], [init(w, "W")])
    report, _ = prune(tmp_path, model)
    assert row(report, "mm").target.dtype == "float16" and report.parity.verified
    assert_pruned_like_reference(tmp_path, "W", 0)
    assert not any("float32" in w for w in report.warnings)


def test_bfloat16_weight_not_verified_but_pruned(tmp_path):
    w = rand([8, 4]).astype(ml_dtypes.bfloat16)
    tensor = helper.make_tensor("W", TensorProto.BFLOAT16, [8, 4], w.view(np.uint16).tobytes(), raw=True)
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
    model = make_model([node], [vi("x", [2, 8], TensorProto.BFLOAT16)], [vi("y", None, TensorProto.BFLOAT16)], [tensor])
    report, out = prune(tmp_path, model)
    assert row(report, "mm").outcome.status == "pruned"
    after = onnx.numpy_helper.to_array(onnx.load(str(out)).graph.initializer[0]).astype(np.float32)
    np.testing.assert_array_equal(after, reference_prune(w.astype(np.float32), 0))
    # ONNX Runtime's CPU provider has no bf16 MatMul: the pass succeeds, "not verified".
    assert not report.parity.verified and report.parity.reason


def test_nan_and_negative_zero_keep_order(tmp_path):
    w = np.array([[np.nan, 1.0, -0.0, 2.0], [0.5, -3.0, 0.25, 0.0]], np.float32).T.copy()  # [4, 2]
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
    model = make_model([node], [vi("x", [1, 4])], [vi("y", None)], [init(w, "W")])
    prune(tmp_path, model, verify=False)
    after = weights(tmp_path / "out.onnx")["W"]
    assert np.isnan(after[0, 0]) and after[3, 0] == 2.0 and after[1, 0] == 0 and after[2, 0] == 0
    np.testing.assert_array_equal(after[:, 1], [0.5, -3.0, 0, 0])


@pytest.mark.parametrize("dtype", [TensorProto.DOUBLE, TensorProto.INT32])
def test_unsupported_dtype_skipped(tmp_path, dtype):
    np_type = {TensorProto.DOUBLE: np.float64, TensorProto.INT32: np.int32}[dtype]
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
    model = make_model([node], [vi("x", [2, 8], dtype)], [vi("y", None, dtype)], [init(rand([8, 4]).astype(np_type), "W")])
    report, _ = prune(tmp_path, model)
    assert row(report, "mm").outcome.status == "skipped" and "not supported" in row(report, "mm").outcome.reason


def test_int8_without_dequantize_skipped(tmp_path):
    node = helper.make_node("MatMulInteger", ["x", "W"], ["y"], name="mmi")
    cast = helper.make_node("Cast", ["W"], ["Wf"], to=TensorProto.FLOAT)
    mm = helper.make_node("MatMul", ["xf", "Wf"], ["z"], name="mm")
    w = np.random.default_rng(0).integers(-5, 5, (8, 4)).astype(np.int8)
    model = make_model([node, cast, mm], [vi("x", [2, 8], TensorProto.INT8), vi("xf", [2, 8])],
                       [vi("y", None, TensorProto.INT32), vi("z", None)], [init(w, "W")])
    report, _ = prune(tmp_path, model)
    assert row(report, "mm").outcome.status == "skipped"


# --- idempotency and preservation ----------------------------------------------------------------

def test_pruning_a_pruned_model_changes_nothing(tmp_path):
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
    model = make_model([node], [vi("x", [2, 16])], [vi("y", None)], [init(rand([16, 8]), "W")])
    save(model, tmp_path / "a.onnx")
    sparsify.prune(tmp_path / "a.onnx", output=tmp_path / "b.onnx")
    report = sparsify.prune(tmp_path / "b.onnx", output=tmp_path / "c.onnx")
    assert row(report, "mm").outcome.status == "already_nm"
    assert (tmp_path / "b.onnx").read_bytes() == (tmp_path / "c.onnx").read_bytes()


def test_everything_but_weight_values_is_preserved(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "W"], ["a"], name="mm", doc_string="node doc"),
             helper.make_node("Relu", ["a"], ["y"], name="relu")]
    model = make_model(nodes, [vi("x", [2, 8])], [vi("y", [2, 4])], [init(rand([8, 4]), "W")],
                       opset=[helper.make_opsetid("", 21), helper.make_opsetid("com.example", 3),
                              helper.make_opsetid("ai.onnx.ml", 4)], doc_string="graph doc")
    model.doc_string = "model doc"
    model.producer_name, model.producer_version, model.model_version = "tests", "9.9", 42
    helper.set_model_props(model, {"author": "me", "license": "x"})
    report, out = prune(tmp_path, model)
    dense, sparse = onnx.load(str(tmp_path / "in.onnx")), onnx.load(str(out))
    onnx.checker.check_model(sparse, full_check=True)
    assert [(o.domain, o.version) for o in sparse.opset_import] == [("", 21), ("com.example", 3), ("ai.onnx.ml", 4)]
    dense.graph.initializer[0].raw_data = sparse.graph.initializer[0].raw_data
    assert dense.SerializeToString() == sparse.SerializeToString()
    assert report.parity.verified


def test_outputs_run_and_match_pruned_weights(tmp_path):
    w = rand([16, 4])
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
    model = make_model([node], [vi("x", [3, 16])], [vi("y", None)], [init(w, "W")])
    _, out = prune(tmp_path, model)
    x = rand([3, 16], seed=5)
    np.testing.assert_allclose(run(out, {"x": x})[0], x @ reference_prune(w, 0), rtol=1e-5, atol=1e-5)
