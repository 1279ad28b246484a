"""Walking an ONNX graph's stored data: Constant nodes' tensors, stored tensors by name, and
the subgraphs a node's attributes hold (If/Loop/Scan bodies).  One place for each walk."""

from __future__ import annotations

from collections.abc import Iterator

import onnx
from onnx import TensorProto

__all__ = ["constant_value", "stored_tensors", "subgraphs"]


def constant_value(node: onnx.NodeProto) -> TensorProto | None:
    """The tensor of an ONNX ``Constant`` node's ``value`` attribute, else None."""
    if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
        return None
    return next((a.t for a in node.attribute if a.name == "value" and a.HasField("t")), None)


def stored_tensors(graph: onnx.GraphProto) -> dict[str, TensorProto]:
    """Every tensor stored in the main graph by the name it is read under: initializers and
    Constant nodes' outputs."""
    found: dict[str, TensorProto] = {t.name: t for t in graph.initializer}
    for node in graph.node:
        value = constant_value(node)
        if value is not None and node.output:
            found[node.output[0]] = value
    return found


def subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    """The graphs held by a node's attributes (``g`` and ``graphs``), in attribute order."""
    for attribute in node.attribute:
        if attribute.HasField("g"):
            yield attribute.g
        yield from attribute.graphs
