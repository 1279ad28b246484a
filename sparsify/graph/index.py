"""Lookup tables over a graph: producers, consumers, constants, subgraph references."""

from __future__ import annotations

from collections import defaultdict
from functools import cached_property

import onnx
from onnx import TensorProto

__all__ = ["GraphIndex", "attr", "is_default_domain", "node_label"]


def is_default_domain(node: onnx.NodeProto) -> bool:
    return node.domain in ("", "ai.onnx")


def attr(node: onnx.NodeProto, name: str, default=None):
    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def node_label(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"{node.op_type}_{index}"


def _subgraph_names(graph: onnx.GraphProto, names: set[str]) -> None:
    for node in graph.node:
        names.update(node.input)
        for attribute in node.attribute:
            if attribute.HasField("g"):
                _subgraph_names(attribute.g, names)
            for sub in attribute.graphs:
                _subgraph_names(sub, names)


class GraphIndex:
    """Read-only index of the main graph of a model skeleton."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.graph = model.graph
        self.initializers: dict[str, TensorProto] = {t.name: t for t in self.graph.initializer}
        self.sparse_initializers = {s.values.name for s in self.graph.sparse_initializer}
        self.graph_inputs = {i.name for i in self.graph.input}
        self.graph_outputs = {o.name for o in self.graph.output}
        self.producers: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
        self.labels: dict[int, str] = {}
        for index, node in enumerate(self.graph.node):
            self.labels[id(node)] = node_label(node, index)
            for out in node.output:
                if out:
                    self.producers[out] = node
            for slot, name in enumerate(node.input):
                if name:
                    self.consumers[name].append((node, slot))

    def label(self, node: onnx.NodeProto) -> str:
        return self.labels[id(node)]

    @cached_property
    def names_used_in_subgraphs(self) -> set[str]:
        names: set[str] = set()
        for node in self.graph.node:
            for attribute in node.attribute:
                if attribute.HasField("g"):
                    _subgraph_names(attribute.g, names)
                for sub in attribute.graphs:
                    _subgraph_names(sub, names)
        return names

    def overridable(self, name: str) -> bool:
        """An initializer listed as a graph input can be fed at run time (IR >= 4 only:
        before IR 4 every initializer had to be listed as an input)."""
        return name in self.graph_inputs and self.model.ir_version >= 4

    def constant_tensor(self, name: str) -> tuple[TensorProto, str] | None:
        """(tensor, "initializer"|"constant") when ``name`` is stored data, else None."""
        if name in self.initializers:
            return self.initializers[name], "initializer"
        node = self.producers.get(name)
        if node is not None and node.op_type == "Constant" and is_default_domain(node):
            for attribute in node.attribute:
                if attribute.name == "value" and attribute.HasField("t"):
                    return attribute.t, "constant"
        return None

    def is_constant(self, name: str, _seen: set[str] | None = None) -> bool:
        """True when ``name`` is computed from stored data alone (no graph input)."""
        if name in self.initializers:
            return not self.overridable(name)
        if name in self.graph_inputs or name in self.sparse_initializers:
            return name in self.sparse_initializers
        node = self.producers.get(name)
        if node is None:
            return False
        if node.op_type == "Constant":
            return True
        seen = _seen if _seen is not None else set()
        if name in seen:
            return False
        seen.add(name)
        inputs = [i for i in node.input if i]
        return bool(inputs) and all(self.is_constant(i, seen) for i in inputs)
