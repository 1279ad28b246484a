"""--masks: given masks land exactly on the named weights; any mismatch is exit 2 with
nothing written."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from onnx import helper

import sparsify
from sparsify.errors import UsageError
from tests.builders import init, is_nm, make_model, rand, reference_prune, save, vi, weights


def _model(tmp_path):
    q = np.random.default_rng(0).integers(-50, 50, (8, 4)).astype(np.int8) + 5
    nodes = [helper.make_node("Transpose", ["Wt"], ["W"], perm=[1, 0]),
             helper.make_node("MatMul", ["x", "W"], ["a"], name="mm"),
             helper.make_node("DequantizeLinear", ["Q", "s", "zp"], ["Wq"]),
             helper.make_node("MatMul", ["a", "Wq"], ["b"], name="qmm"),
             helper.make_node("Conv", ["img", "D"], ["c"], name="dw", group=4)]
    inits = [init(rand([8, 16]), "Wt"), init(q, "Q"), init(np.array(0.1, np.float32), "s"), init(np.array(5, np.int8), "zp"),
             init(rand([4, 1, 3, 3]), "D")]
    model = make_model(nodes, [vi("x", [2, 16]), vi("img", [1, 4, 5, 5])], [vi("b", None), vi("c", None)], inits)
    return save(model, tmp_path / "m.onnx")


def test_masks_land_on_the_named_weights(tmp_path):
    path = _model(tmp_path)
    w = weights(path)
    nm_mask = reference_prune(w["Wt"], 1) != 0  # a 2:4 mask along Wt's reduction axis (1)
    unstructured = np.random.default_rng(1).random(w["Q"].shape) < 0.3
    np.savez(tmp_path / "masks.npz", Wt=nm_mask, Q=unstructured.astype(np.uint8))
    report = sparsify.prune(path, output=tmp_path / "o.onnx", masks=str(tmp_path / "masks.npz"))
    out = weights(tmp_path / "o.onnx")
    np.testing.assert_array_equal(out["Wt"], np.where(nm_mask, w["Wt"], 0))
    np.testing.assert_array_equal(out["Q"], np.where(unstructured, w["Q"], 5))  # pruned to the zero point
    rows = {t.target.layer: t for t in report.rows}
    assert rows["mm"].outcome.status == "pruned" and rows["mm"].outcome.method == "given mask" and not rows["mm"].outcome.notes
    assert rows["qmm"].outcome.status == "masked_not_nm" and "not 2:4" in rows["qmm"].outcome.reason
    totals = report.totals()  # the non-N:M mask is neither a sparse weight nor part of the savings
    assert totals["sparse_weights"] == 1 and totals["parameters_in_sparse_weights"] == 8 * 16
    assert totals["masked_not_nm"] == 1 and any("not 2:4" in w and "Q" in w for w in report.warnings)
    assert "masked_not_nm" in report.format_table()
    assert rows["dw"].outcome.status == "skipped" and "depthwise" in rows["dw"].outcome.reason
    assert is_nm(out["Wt"], 1) and report.parity.verified
    audit = subprocess.run([sys.executable, "-m", "sparsify", "check", str(tmp_path / "o.onnx"), "--strict"],
                           capture_output=True, text=True)
    assert audit.returncode == 4  # the unstructured mask is reported, not hidden


def test_weights_without_a_mask_stay_dense(tmp_path):
    path = _model(tmp_path)
    np.savez(tmp_path / "masks.npz", Wt=np.ones((8, 16), bool))
    report = sparsify.prune(path, output=tmp_path / "o.onnx", masks=str(tmp_path / "masks.npz"))
    rows = {t.target.layer: t for t in report.rows}
    assert "no mask for it" in rows["qmm"].outcome.reason
    assert rows["mm"].outcome.status == "masked_not_nm"  # an all-ones mask leaves the dense weight: not 2:4, not sparse
    assert weights(tmp_path / "o.onnx")["Q"].tobytes() == weights(path)["Q"].tobytes()


@pytest.mark.parametrize("masks,match", [
    ({"nope": np.ones((8, 16), bool)}, "names no Conv/MatMul/Gemm weight"),
    ({"Wt": np.ones((16, 8), bool)}, "has shape"),
    ({"Wt": np.full((8, 16), 2)}, "values other than 0 and 1"),
    ({"D": np.ones((4, 1, 3, 3), bool)}, "cannot be pruned"),
])
def test_mismatched_masks_exit_2_and_write_nothing(tmp_path, masks, match):
    path = _model(tmp_path)
    np.savez(tmp_path / "masks.npz", **masks)
    with pytest.raises(UsageError, match=match):
        sparsify.prune(path, output=tmp_path / "o.onnx", masks=str(tmp_path / "masks.npz"))
    result = subprocess.run([sys.executable, "-m", "sparsify", str(path), "--masks", str(tmp_path / "masks.npz")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "masks.npz"]


def test_masks_cannot_combine_with_methods(tmp_path):
    np.savez(tmp_path / "masks.npz", Wt=np.ones((8, 16), bool))
    with pytest.raises(UsageError, match="cannot be combined"):
        sparsify.prune(_model(tmp_path), masks=str(tmp_path / "masks.npz"), permute=True)
