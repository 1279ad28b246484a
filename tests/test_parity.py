"""Parity metrics and gates against numbers computed independently with numpy."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import sparsify
from sparsify.errors import UsageError
from tests.builders import init, make_model, rand, reference_prune, save, vi


def _linear(tmp_path, w, batch="batch"):
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
    model = make_model([node], [vi("x", [batch, w.shape[0]])], [vi("y", [batch, w.shape[1]])], [init(w, "W")])
    return save(model, tmp_path / "m.onnx")


def test_metrics_match_numpy_on_real_inputs(tmp_path):
    w = rand([8, 5], 1)
    path = _linear(tmp_path, w)
    x = rand([40, 8], 2)
    np.savez(tmp_path / "x.npz", x=x)
    report = sparsify.prune(path, inputs=str(tmp_path / "x.npz"))
    dense, sparse = x @ w, x @ reference_prune(w, 0)
    out = report.parity.outputs[0]
    expected_rel = np.linalg.norm(dense - sparse) / np.linalg.norm(dense)
    assert out.rel_l2_error == pytest.approx(expected_rel, rel=1e-4)
    assert out.max_abs_diff == pytest.approx(np.abs(dense - sparse).max(), rel=1e-4)
    cos = (dense * sparse).sum() / np.linalg.norm(dense) / np.linalg.norm(sparse)
    assert out.cosine_similarity == pytest.approx(cos, rel=1e-5)
    agreement = np.mean(dense.argmax(1) == sparse.argmax(1))
    assert out.top1_agreement == pytest.approx(agreement)
    assert 0 < agreement < 1  # a real disagreement to gate on below
    assert report.parity.runs == 1

    passed = sparsify.prune(path, inputs=str(tmp_path / "x.npz"), max_rel_error=expected_rel * 1.01,
                            min_top1_agreement=agreement - 0.01)
    assert passed.gates_passed
    failed = sparsify.prune(path, inputs=str(tmp_path / "x.npz"), max_rel_error=expected_rel * 0.99)
    assert not failed.gates_passed and failed.parity.gates[0].value == pytest.approx(expected_rel, rel=1e-4)
    failed = sparsify.prune(path, inputs=str(tmp_path / "x.npz"), min_top1_agreement=agreement + 0.01)
    assert not failed.gates_passed


def test_stacked_samples_run_one_by_one(tmp_path):
    w = rand([8, 4], 1)
    path = _linear(tmp_path, w, batch=2)
    np.savez(tmp_path / "x.npz", x=rand([5, 2, 8], 3))
    report = sparsify.prune(path, inputs=str(tmp_path / "x.npz"))
    assert report.parity.runs == 5


def test_exact_model_has_zero_error(tmp_path):
    w = np.zeros((8, 4), np.float32)
    w[::2] = rand([4, 4])  # already 2:4 along K
    report = sparsify.prune(_linear(tmp_path, w), input_shapes=["x:3x8"], max_rel_error=0.0)
    assert report.rows[0].outcome.status == "already_nm"
    assert report.parity.outputs[0].rel_l2_error == 0.0 and report.gates_passed


def test_top1_gate_without_class_scores_cannot_pass(tmp_path):
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
    model = make_model([node], [vi("x", [2, 3, 8])], [vi("y", None)], [init(rand([8, 4]), "W")])
    report = sparsify.prune(save(model, tmp_path / "m.onnx"), min_top1_agreement=0.5)
    gate = report.parity.gates[0]
    assert not gate.passed and "class scores" in gate.reason


def test_model_ort_cannot_run_is_not_verified(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "W"], ["a"], name="mm"),
             helper.make_node("Mystery", ["a"], ["y"], domain="com.example")]
    model = make_model(nodes, [vi("x", [2, 8])], [vi("y", None)], [init(rand([8, 4]), "W")],
                       opset=[helper.make_opsetid("", 21), helper.make_opsetid("com.example", 1)])
    path = save(model, tmp_path / "m.onnx")
    report = sparsify.prune(path)
    assert report.rows[0].outcome.status == "pruned"
    assert not report.parity.verified and "cannot run" in report.parity.reason
    assert report.gates_passed  # no gate asked for
    gated = sparsify.prune(path, max_rel_error=0.5)
    assert not gated.gates_passed and gated.parity.gates[0].value is None


def test_dynamic_dims_default_to_one_and_are_noted(tmp_path):
    """Parity still runs on a model with a dynamic batch (batch 1, said in a note), and a given
    shape replaces the default (no note; the metrics then cover 3 rows)."""
    w = rand([8, 4])
    report = sparsify.prune(_linear(tmp_path, w))
    assert report.parity.verified and report.parity.runs == 1
    assert [n for n in report.parity.notes if "dynamic dimension" in n] == \
        ["input 'x': dynamic dimension 'batch' set to 1 (use --input-shape)"]
    assert 0 < report.parity.outputs[0].rel_l2_error < 1  # pruning changed the output, measurably
    shaped = sparsify.prune(_linear(tmp_path, w), input_shapes=["x:3x8"], output=tmp_path / "s.onnx")
    assert shaped.parity.verified and not any("dynamic dimension" in n for n in shaped.parity.notes)
    assert shaped.parity.outputs[0].rel_l2_error != report.parity.outputs[0].rel_l2_error  # other inputs


@pytest.mark.parametrize("kwargs", [
    {"input_shapes": ["nope:1x8"]}, {"input_shapes": ["x:abc"]}, {"input_shapes": ["x:1x2x8"]},
    {"max_rel_error": -1}, {"min_top1_agreement": 1.5}, {"verify": False, "max_rel_error": 0.1},
])
def test_bad_parity_arguments(tmp_path, kwargs):
    with pytest.raises(UsageError):
        sparsify.prune(_linear(tmp_path, rand([8, 4])), **kwargs)


def test_npz_missing_input(tmp_path):
    np.savez(tmp_path / "x.npz", other=np.zeros((1, 8), np.float32))
    with pytest.raises(UsageError, match="no array for model input"):
        sparsify.prune(_linear(tmp_path, rand([8, 4])), inputs=str(tmp_path / "x.npz"))


def test_integer_inputs_are_valid_indices(tmp_path):
    nodes = [helper.make_node("Gather", ["E", "ids"], ["e"]), helper.make_node("MatMul", ["e", "W"], ["y"], name="mm")]
    model = make_model(nodes, [vi("ids", [2, 3], TensorProto.INT64)], [vi("y", None)],
                       [init(rand([2, 8]), "E"), init(rand([8, 4]), "W")])
    report = sparsify.prune(save(model, tmp_path / "m.onnx"))
    assert report.parity.verified


def test_input_shape_errors_name_the_api_parameter(tmp_path):
    with pytest.raises(UsageError, match=r"^input_shapes= names 'nope', which is not a model input"):
        sparsify.prune(_linear(tmp_path, rand([8, 4])), input_shapes=["nope:1x8"])
    with pytest.raises(UsageError, match=r"^invalid input_shapes= 'x:abc'"):
        sparsify.prune(_linear(tmp_path, rand([8, 4])), input_shapes=["x:abc"])
