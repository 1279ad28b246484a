"""Report.totals on real runs: each stored weight counted once, skipped weights not at all, and
the compressed size equal to NVIDIA's layout worked out by hand (docs/sources.md#storage:
2:4 fp16 keeps half the values plus a 2-bit index per kept value)."""

from __future__ import annotations

from onnx import helper

import sparsify
from tests.builders import init, make_model, rand, save, vi


def _model(tmp_path):
    # W (64x32) feeds two MatMuls (one shared weight), U (32x16) is pruned, V (30x8) is skipped: its
    # reduction length 30 is not divisible by 4.
    nodes = [helper.make_node("MatMul", ["x", "W"], ["a"], name="mm_a"),
             helper.make_node("MatMul", ["x", "W"], ["b"], name="mm_b"),
             helper.make_node("MatMul", ["a", "U"], ["c"], name="mm_u"),
             helper.make_node("MatMul", ["y", "V"], ["d"], name="mm_v")]
    model = make_model(nodes, [vi("x", [2, 64]), vi("y", [2, 30])], [vi("b", None), vi("c", None), vi("d", None)],
                       [init(rand([64, 32], 1), "W"), init(rand([32, 16], 2), "U"), init(rand([30, 8], 3), "V")])
    return save(model, tmp_path / "m.onnx")


def test_totals_count_each_sparse_weight_once_and_match_the_hand_computed_bytes(tmp_path):
    report = sparsify.prune(_model(tmp_path), verify=False)
    totals = report.totals()
    status = {r.target.layer: r.outcome.status.value for r in report.rows}
    assert status == {"mm_a": "pruned", "mm_b": "pruned", "mm_u": "pruned", "mm_v": "skipped"}
    assert totals["targets"] == 4 and totals["pruned"] == 3 and totals["skipped"] == 1
    assert totals["sparse_weights"] == 2  # W once (two layers), U; V is skipped
    params = 64 * 32 + 32 * 16
    assert totals["parameters_in_sparse_weights"] == params
    assert totals["parameters_zeroed"] == params // 2
    assert totals["weight_bytes_dense_fp16"] == 2 * params  # 5120
    # 1280 kept values x 2 bytes = 2560; 1280 indices x 2 bits = 320 bytes -> 2880
    assert totals["weight_bytes_sparse_fp16_estimate"] == 2880
    assert abs(totals["weight_bytes_saved_fraction"] - (1 - 2880 / 5120)) < 1e-12


def test_check_counts_compliant_weights_like_prune_counts_pruned_ones(tmp_path):
    pruned = sparsify.prune(_model(tmp_path), "2:4", tmp_path / "p.onnx", verify=False)
    audit = sparsify.check(tmp_path / "p.onnx")
    assert audit.totals()["compliant"] == 3 and audit.totals()["sparse_weights"] == pruned.totals()["sparse_weights"]
    assert audit.totals()["weight_bytes_sparse_fp16_estimate"] == 2880
