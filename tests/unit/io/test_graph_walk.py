"""One walk each: Constant values (default domain only), stored tensors, attribute subgraphs."""

from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper

from sparsify.io.graph_walk import constant_value, stored_tensors, subgraphs
from tests.builders import init, make_model, rand, vi


def test_constants_and_initializers_by_the_name_they_are_read_under():
    value = numpy_helper.from_array(np.ones((2, 2), np.float32), "")
    nodes = [helper.make_node("Constant", [], ["c"], value=value),
             helper.make_node("Constant", [], ["foreign"], value=value, domain="com.example"),
             helper.make_node("MatMul", ["c", "W"], ["y"])]
    model = make_model(nodes, [], [vi("y", None)], [init(rand([2, 2]), "W")],
                       opset=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    found = stored_tensors(model.graph)
    assert set(found) == {"W", "c"}  # a custom-domain "Constant" is not ONNX's
    assert constant_value(model.graph.node[1]) is None and constant_value(model.graph.node[2]) is None


def test_subgraphs_of_if_and_loop_attributes():
    body = helper.make_graph([helper.make_node("Identity", ["a"], ["b"])], "body", [], [])
    node = helper.make_node("If", ["cond"], ["out"], then_branch=body, else_branch=body)
    assert [g.name for g in subgraphs(node)] == ["body", "body"]
    assert list(subgraphs(helper.make_node("Relu", ["x"], ["y"]))) == []
