"""Target is frozen, Status values are the report's strings, Skip carries reasons, and the one
profitability rule counts a k×k kernel k² times."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from onnx import helper

from sparsify.analysis.index import GraphIndex
from sparsify.analysis.lookthrough import resolve_weight
from sparsify.analysis.profit import predict_profit, too_small
from sparsify.analysis.skip import Skip
from sparsify.analysis.targets import Status, Target, find_targets
from sparsify.pattern import parse_pattern
from tests.builders import init, make_model, rand, vi

SCHEMA = Path(__file__).resolve().parents[3] / "sparsify" / "schema" / "report.schema.json"


def test_target_is_frozen():
    target = Target("mm", "MatMul", 1, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        target.layer = "other"  # type: ignore[misc]


def test_status_values_are_exactly_the_schema_enum():
    schema = json.loads(SCHEMA.read_text())
    assert set(schema["$defs"]["target"]["properties"]["status"]["enum"]) == {s.value for s in Status}
    assert Status.PRUNED == "pruned" and str(Status.SKIPPED) == "skipped"


def test_a_graph_input_weight_is_a_skip_with_its_reason():
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
    model = make_model(nodes, [vi("x", [2, 8]), vi("W", [8, 4])], [vi("y", None)])
    index = GraphIndex(model)
    found = resolve_weight(index, "W", -2)
    assert isinstance(found, Skip) and "graph input" in found.reason


def test_discovery_fills_facts_and_prediction():
    nodes = [helper.make_node("Conv", ["x", "W"], ["y"], name="conv", kernel_shape=[3, 3])]
    model = make_model(nodes, [vi("x", [1, 32, 8, 8])], [vi("y", None)], [init(rand([256, 32, 3, 3]), "W")])
    (row,) = find_targets(GraphIndex(model), parse_pattern("2:4"))
    t = row.target
    assert (t.reduction_length, t.kernel_positions, t.output_features, t.axis) == (32, 9, 256, 1)
    assert row.outcome.status is Status.PENDING
    assert t.profitable is False and "TF32" in t.profitability  # big enough (32·9 >= 256), but float32


@pytest.mark.parametrize("k, kernel, n, small", [(256, 1, 256, False), (255, 1, 256, True), (32, 9, 256, False),
                                                 (28, 9, 256, True), (512, 1, 255, True)])
def test_too_small_counts_kernel_positions(k, kernel, n, small):
    assert bool(too_small(k, kernel, n)) is small
    assert predict_profit("float16", k, kernel, n)[0] is (not small)
