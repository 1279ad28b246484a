"""Where an input-channel permutation of a weight has an exact graph equivalent.

For ``y = f(x W_p + b) W_c`` with ``f`` channel-wise, permuting W_c's input rows by ``p`` is
exact when W_p's output columns, ``b`` and every per-channel constant in ``f`` are permuted
by the same ``p``.  This module finds such chains (MatMul/Gemm producer -> channel-wise ops
-> MatMul/Gemm consumer, nothing else reading the intermediate tensors) and refuses the rest
with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx
from onnx import TensorProto

from sparsify.analysis.index import GraphIndex, int_attr, is_default_domain
from sparsify.analysis.skip import Skip
from sparsify.analysis.targets import Target

__all__ = ["ChannelChain", "find_chain"]

_UNARY = {"Relu", "Gelu", "Cast", "Sigmoid", "Tanh", "Erf", "LeakyRelu", "Elu", "Selu", "Softplus", "HardSigmoid",
          "HardSwish", "Identity", "Neg", "Abs", "Exp", "Sqrt", "Reciprocal", "Softsign", "Mish", "Celu",
          "ThresholdedRelu", "Sin", "Cos", "Floor", "Ceil", "Round", "Sign"}
_BINARY = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "PRelu"}


@dataclass
class ChannelChain:
    producer: onnx.NodeProto
    producer_weight: str
    producer_tensor: TensorProto
    producer_axis: int  # output-channel axis of the stored producer weight
    channel_constants: list[tuple[str, TensorProto]] = field(default_factory=list)  # permute along -1


def _constant_role(index: GraphIndex, name: str, channels: int):
    """'scalar', ('vector', tensor) for a scalar or per-channel constant, or None."""
    found = index.constant_tensor(name)
    if found is None:
        return None
    dims = [int(d) for d in found[0].dims]
    if all(d == 1 for d in dims):
        return "scalar"
    if dims and dims[-1] == channels and all(d == 1 for d in dims[:-1]):
        return ("vector", found[0])
    return None


def _producer_weight(index: GraphIndex, node: onnx.NodeProto):
    """(weight name, tensor, stored output-channel axis, bias name or "") for a MatMul/Gemm with
    a direct, unshared 2-D constant weight, else the reason there is none."""
    bias = ""
    if node.op_type == "MatMul":
        slot, out_axis = 1, 1
    elif node.op_type == "Gemm" and not int_attr(node, "transA", 0, 0, 1):
        slot, out_axis = 1, 0 if int_attr(node, "transB", 0, 0, 1) else 1
        bias = node.input[2] if len(node.input) > 2 else ""
    else:
        return Skip("permutation: the producing layer is a Gemm with transA")
    name = node.input[slot] if len(node.input) > slot else ""
    found = index.constant_tensor(name) if name else None
    if found is None:
        return Skip("permutation: the producing layer's weight is not a stored constant")
    if len(found[0].dims) != 2:
        return Skip("permutation: the producing layer's weight is not 2-D")
    if len(index.consumers.get(name, [])) != 1:
        return Skip("permutation: the producing layer's weight is shared with other layers")
    return name, found[0], out_axis, bias


def _consumer_skip(consumer: Target) -> Skip | None:
    node, src = consumer.node, consumer.source
    if node is None or node.op_type not in ("MatMul", "Gemm") or consumer.input_index != 1:
        return Skip("permutation: only MatMul/Gemm layers whose weight is the right operand")
    if node.op_type == "Gemm" and int_attr(node, "transA", 0, 0, 1):
        return Skip("permutation: Gemm with transA")
    if src is None or src.quant is not None or len(src.tensor.dims) != 2:
        return Skip("permutation: only 2-D float weights")
    return None


@dataclass
class _Region:
    """The channel-wise nodes between the producing layer(s) and the consumer."""

    nodes: dict[int, onnx.NodeProto] = field(default_factory=dict)  # by graph ordinal
    producers: dict[int, onnx.NodeProto] = field(default_factory=dict)
    constants: dict[str, TensorProto] = field(default_factory=dict)
    tensors: set[str] = field(default_factory=set)


def _walk_region(index: GraphIndex, start: str, channels: int) -> _Region | Skip:
    """Walk back from the consumer's activation through channel-wise ops to MatMul/Gemm producers."""
    region, frontier = _Region(), [start]
    while frontier:
        tensor = frontier.pop()
        if tensor in region.tensors:
            continue
        region.tensors.add(tensor)
        if len(region.tensors) > 256:
            return Skip("permutation: region too large")
        producer = index.producers.get(tensor)
        if producer is None or not is_default_domain(producer):
            return Skip("permutation: the activation does not come from a MatMul/Gemm")
        if producer.op_type in ("MatMul", "Gemm"):
            region.producers[index.ordinal(producer)] = producer
            continue
        if producer.op_type not in _UNARY and producer.op_type not in _BINARY:
            return Skip(f"permutation: {producer.op_type} between the layers is not channel-wise")
        region.nodes[index.ordinal(producer)] = producer
        inputs = [i for i in producer.input if i]
        for name in inputs[1:] if producer.op_type in _UNARY else inputs:
            if not index.is_constant(name):
                frontier.append(name)
                continue
            role = _constant_role(index, name, channels)
            if role is None:
                return Skip(f"permutation: {producer.op_type} has a constant that is not per-channel")
            if role != "scalar":
                region.constants[name] = role[1]
        if producer.op_type in _UNARY:
            frontier.append(inputs[0])
    return region


def _closed(index: GraphIndex, region: _Region, consumer: onnx.NodeProto) -> Skip | None:
    """Nothing outside the region (and the consumer) may read what it computes or its constants."""
    allowed = set(region.nodes) | {index.ordinal(consumer)}

    def read_outside(name: str) -> bool:
        return name in index.graph_outputs or any(index.ordinal(user) not in allowed
                                                  for user, _ in index.consumers.get(name, []))

    if any(read_outside(tensor) for tensor in region.tensors):
        return Skip("permutation: an intermediate tensor has other users")
    if any(read_outside(name) for name in region.constants):
        return Skip("permutation: a per-channel constant is shared with other layers")
    return None


def _producer_bias(index: GraphIndex, bias: str, channels: int, constants: dict[str, TensorProto]) -> Skip | None:
    """Gemm's own bias C (nn.Linear's bias) is permuted with the output channels."""
    role = _constant_role(index, bias, channels) if index.is_constant(bias) else None
    if role is None:
        return Skip("permutation: the producing Gemm's bias is not a per-channel constant")
    if bias in index.graph_outputs or len(index.consumers.get(bias, [])) != 1:
        return Skip("permutation: the producing Gemm's bias is shared with other layers")
    if role != "scalar":
        constants[bias] = role[1]
    return None


def find_chain(index: GraphIndex, consumer: Target) -> ChannelChain | Skip:
    """The permutable region feeding ``consumer``'s activation, or why there is none.

    The region is every node between one producing MatMul/Gemm and the consumer; all must be
    channel-wise (unary, or binary over region tensors and scalar / per-channel constants),
    and nothing outside the region may read a tensor it computes.
    """
    refused = _consumer_skip(consumer)
    if refused is not None:
        return refused
    node, channels = consumer.op_node(), consumer.reduction_length
    region = _walk_region(index, node.input[0], channels)
    if isinstance(region, Skip):
        return region
    if len(region.producers) != 1:
        return Skip("permutation: the activation mixes several producing layers")
    producer = next(iter(region.producers.values()))
    refused = _closed(index, region, node)
    if refused is not None:
        return refused
    weight = _producer_weight(index, producer)
    if isinstance(weight, Skip):
        return weight
    name, stored, axis, bias = weight
    constants = dict(region.constants)
    if bias and (refused := _producer_bias(index, bias, channels, constants)) is not None:
        return refused
    if int(stored.dims[axis]) != channels:
        return Skip("permutation: producer width does not match")
    return ChannelChain(producer, name, stored, axis, sorted(constants.items()))
