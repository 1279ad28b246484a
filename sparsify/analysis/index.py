"""Lookup tables over a graph: producers, consumers, constants, subgraph references."""

from __future__ import annotations

from collections import defaultdict
from functools import cached_property

import onnx
from onnx import TensorProto

from sparsify.errors import InputError
from sparsify.io.graph_walk import constant_value, subgraphs

__all__ = ["GraphIndex", "attr", "int_attr", "ints_attr", "is_default_domain", "node_label"]


def is_default_domain(node: onnx.NodeProto) -> bool:
    return node.domain in ("", "ai.onnx")


def attr(node: onnx.NodeProto, name: str, default=None):
    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


_INT, _INTS = onnx.AttributeProto.INT, onnx.AttributeProto.INTS


def _find(node: onnx.NodeProto, name: str) -> onnx.AttributeProto | None:
    return next((a for a in node.attribute if a.name == name), None)


def _where(node: onnx.NodeProto, name: str) -> str:
    return f"node {node.name or node.op_type!r} ({node.op_type}): attribute {name!r}"


def int_attr(node: onnx.NodeProto, name: str, default: int, lo: int | None = None, hi: int | None = None) -> int:
    """An INT attribute checked for type and range (``lo``/``hi`` inclusive); a malformed one is
    bad input (exit 2), never an ``int()`` crash."""
    found = _find(node, name)
    if found is None:
        return default
    if found.type != _INT:
        raise InputError(f"{_where(node, name)} must be an integer, got {onnx.AttributeProto.AttributeType.Name(found.type)}")
    value = int(found.i)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"[{'' if lo is None else lo}, {'' if hi is None else hi}]"
        raise InputError(f"{_where(node, name)} is {value}, outside {bounds}")
    return value


def ints_attr(node: onnx.NodeProto, name: str) -> list[int] | None:
    """An INTS attribute (None when absent), checked for type."""
    found = _find(node, name)
    if found is None:
        return None
    if found.type != _INTS:
        raise InputError(f"{_where(node, name)} must be a list of integers, got "
                         f"{onnx.AttributeProto.AttributeType.Name(found.type)}")
    return [int(v) for v in found.ints]


def node_label(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"{node.op_type}_{index}"


def _names_read_in(graphs: list[onnx.GraphProto]) -> set[str]:
    """Every name a node of these graphs (and of the graphs nested in them) reads."""
    names: set[str] = set()
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            names.update(node.input)
            graphs.extend(subgraphs(node))
    return names


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
        self.nodes = list(self.graph.node)  # held, so each wrapper's id() stays its own
        self._ordinals = {id(node): i for i, node in enumerate(self.nodes)}
        self._constant_memo: dict[str, bool] = {}
        for node in self.nodes:
            for out in node.output:
                if out:
                    self.producers[out] = node
            for slot, name in enumerate(node.input):
                if name:
                    self.consumers[name].append((node, slot))

    def ordinal(self, node: onnx.NodeProto) -> int:
        """The node's position in the graph (nodes are compared by position, not by value)."""
        found = self._ordinals.get(id(node))
        if found is None or self.nodes[found] is not node:
            raise AssertionError(f"internal error: node {node.name or node.op_type!r} is not in this graph")
        return found

    def label(self, node: onnx.NodeProto) -> str:
        return node_label(node, self.ordinal(node))

    @cached_property
    def names_used_in_subgraphs(self) -> set[str]:
        return _names_read_in([sub for node in self.graph.node for sub in subgraphs(node)])

    def overridable(self, name: str) -> bool:
        """An initializer listed as a graph input can be fed at run time (IR >= 4 only:
        before IR 4 every initializer had to be listed as an input)."""
        return name in self.graph_inputs and self.model.ir_version >= 4

    def constant_tensor(self, name: str) -> tuple[TensorProto, str] | None:
        """(tensor, "initializer"|"constant") when ``name`` is stored data, else None."""
        if name in self.initializers:
            return self.initializers[name], "initializer"
        node = self.producers.get(name)
        value = constant_value(node) if node is not None else None
        return (value, "constant") if value is not None else None

    def is_constant(self, name: str) -> bool:
        """True when ``name`` is computed from stored data alone (no graph input).

        Iterative with a memo: a chain of 100,000 nodes must not hit Python's recursion limit,
        and a shared sub-expression is examined once."""
        memo = self._constant_memo
        stack: list[tuple[str, bool]] = [(name, False)]
        visiting: set[str] = set()
        while stack:
            current, expanded = stack.pop()
            if current in memo:
                continue
            inputs = [i for i in self.producers[current].input if i] if current in self.producers else []
            if expanded:  # every input is decided now
                visiting.discard(current)
                memo[current] = bool(inputs) and all(memo.get(i, False) for i in inputs)
                continue
            leaf = self._constant_leaf(current)
            if leaf is not None or current in visiting:  # a name met again below itself: a cycle
                memo[current] = bool(leaf)
                continue
            visiting.add(current)
            stack.append((current, True))
            stack.extend((i, False) for i in inputs if i not in memo)
        return memo[name]

    def _constant_leaf(self, name: str) -> bool | None:
        """The answer for names that need no look at a producer's inputs; None otherwise."""
        if name in self.initializers:
            return not self.overridable(name)
        if name in self.graph_inputs or name in self.sparse_initializers:
            return name in self.sparse_initializers
        node = self.producers.get(name)
        if node is None:
            return False
        if node.op_type == "Constant":
            return True
        return None
