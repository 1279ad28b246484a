"""Follow a weight from the op that consumes it back to the tensor that stores it.

Weights reach Conv/MatMul/Gemm directly or through Identity, Cast, Transpose,
QuantizeLinear and DequantizeLinear (docs/sources.md#axis-rules).  A Transpose moves the
reduction axis: output axis ``i`` is input axis ``perm[i]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx
from onnx import TensorProto

from sparsify.analysis.index import GraphIndex, int_attr, ints_attr
from sparsify.analysis.skip import Skip
from sparsify.errors import InputError
from sparsify.io.dtypes import dtype_name

__all__ = ["LOOK_THROUGH_OPS", "QuantParams", "WeightSource", "resolve_weight"]

LOOK_THROUGH_OPS = frozenset({"Identity", "Cast", "Transpose", "QuantizeLinear", "DequantizeLinear"})


@dataclass
class QuantParams:
    """The DequantizeLinear that turns a stored int8/uint8 weight into values."""

    node: onnx.NodeProto
    scale: TensorProto | None
    zero_point: TensorProto | None
    axis: int  # in the stored weight's coordinates once ``WeightSource.finish`` ran
    block_size: int

    def signature(self) -> tuple:
        return (tuple(self.node.input[1:3]), self.axis, self.block_size)


@dataclass
class WeightSource:
    name: str
    tensor: TensorProto
    kind: str  # "initializer" or "constant"
    steps: list[onnx.NodeProto] = field(default_factory=list)  # op side first
    quant: QuantParams | None = None
    axis: int = 0  # reduction axis on the stored tensor
    op_shape: tuple[int, ...] = ()  # the weight's shape as the op sees it

    @property
    def path(self) -> list[str]:
        return [_describe(step) for step in self.steps]


def _describe(node: onnx.NodeProto) -> str:
    if node.op_type == "Transpose":
        return f"Transpose(perm={ints_attr(node, 'perm') or []})"
    if node.op_type == "Cast":
        return f"Cast(to={dtype_name(int_attr(node, 'to', 0)) if int_attr(node, 'to', 0) else '?'})"
    return node.op_type


def _perm(node: onnx.NodeProto, rank: int) -> list[int]:
    perm = ints_attr(node, "perm")
    return perm if perm else list(reversed(range(rank)))


def resolve_weight(index: GraphIndex, name: str, op_axis: int) -> WeightSource | Skip:
    """Walk back from ``name``; a WeightSource, or the reason it is not a usable weight."""
    steps: list[onnx.NodeProto] = []
    seen: set[str] = set()
    while True:
        if name in seen:
            return Skip("weight path forms a cycle")
        seen.add(name)
        if name in index.sparse_initializers:
            return Skip("weight is stored as a sparse_initializer")
        found = index.constant_tensor(name)
        if found is not None:
            return _finish(index, name, found, steps, op_axis)
        node = index.producers.get(name)
        if node is None:
            return Skip("weight is a graph input, not a constant")
        if node.op_type not in LOOK_THROUGH_OPS or node.domain not in ("", "ai.onnx"):
            return Skip(f"weight reaches the op through {node.op_type} (only {', '.join(sorted(LOOK_THROUGH_OPS))} are followed)")
        steps.append(node)
        name = node.input[0]


def _finish(index, name, found, steps, op_axis) -> WeightSource | Skip:
    tensor, kind = found
    rank = len(tensor.dims)
    if rank == 0:
        return Skip("weight is a scalar")
    if rank == 1:
        op_axis = 0  # a 1-D MatMul operand is reduced along its only axis
    if not -rank <= op_axis < rank:
        return Skip(f"reduction axis {op_axis} does not exist on a rank-{rank} weight")
    walked = _to_storage(index, steps, op_axis % rank, rank)
    if isinstance(walked, Skip):
        return walked
    axis, quant = walked
    shape = [int(d) for d in tensor.dims]
    if quant is not None:
        _check_quant_shapes(quant, shape)
    op_shape = shape
    for step in reversed(steps):
        if step.op_type == "Transpose":
            op_shape = [op_shape[p] for p in _perm(step, rank)]
    return WeightSource(name, tensor, kind, steps, quant, axis, tuple(op_shape))


def _to_storage(index: GraphIndex, steps: list[onnx.NodeProto], axis: int,
                rank: int) -> tuple[int, QuantParams | None] | Skip:
    """Follow the steps from the op side to the stored tensor: the reduction axis on the stored
    tensor, and the DequantizeLinear that applies to it (its axis also moved to storage)."""
    quant: QuantParams | None = None
    dq_axis: int | None = None
    for step in steps:
        if step.op_type == "Transpose":
            perm = _perm(step, rank)
            if sorted(perm) != list(range(rank)):
                return Skip(f"Transpose perm {perm} does not match the weight's rank {rank}")
            axis = perm[axis]
            if dq_axis is not None:
                dq_axis = perm[dq_axis]
        elif step.op_type == "DequantizeLinear":
            found = _quant_params(index, step, rank)
            if isinstance(found, Skip):
                return found
            quant, dq_axis = found, found.axis
        elif step.op_type in ("Cast", "QuantizeLinear"):
            quant, dq_axis = None, None  # the stored tensor is not what that DQ dequantizes
    if quant is not None and dq_axis is not None:
        quant.axis = dq_axis
    return axis, quant


def _quant_params(index: GraphIndex, node: onnx.NodeProto, rank: int) -> QuantParams | Skip:
    def const(slot: int) -> TensorProto | None | Skip:
        if len(node.input) <= slot or not node.input[slot]:
            return None
        found = index.constant_tensor(node.input[slot])
        if found is None:
            return Skip(f"DequantizeLinear {node.input[slot]!r} is not a constant")
        return found[0]

    scale, zero_point = const(1), const(2)
    if isinstance(scale, Skip):
        return scale
    if isinstance(zero_point, Skip):
        return zero_point
    axis = int_attr(node, "axis", 1)
    per_tensor = scale is None or len(scale.dims) == 0 or all(d == 1 for d in scale.dims)
    if per_tensor:
        axis = 0  # a scalar scale has no axis; DequantizeLinear ignores it
    elif not -rank <= axis < rank:
        return Skip(f"DequantizeLinear axis {axis} does not exist on a rank-{rank} weight")
    return QuantParams(node, scale, zero_point, axis % rank, int_attr(node, "block_size", 0, 0))


def _check_quant_shapes(quant: QuantParams, shape: list[int]) -> None:
    """Scale and zero point must fit the weight (per-tensor, per-axis or blocked, as in the
    DequantizeLinear spec); anything else is a malformed model (exit 2), not a numpy crash."""
    where = f"DequantizeLinear {quant.node.name or quant.node.output[0]!r}"
    scale, zero = quant.scale, quant.zero_point
    if scale is None:
        raise InputError(f"{where}: no scale input")
    scale_dims = [int(d) for d in scale.dims]
    if zero is not None and [int(d) for d in zero.dims] != scale_dims:
        raise InputError(f"{where}: zero point shape {[int(d) for d in zero.dims]} differs from scale shape {scale_dims}")
    if all(d == 1 for d in scale_dims) and not quant.block_size:
        return  # per-tensor
    length = shape[quant.axis]
    if quant.block_size:
        want = [-(-d // quant.block_size) if i == quant.axis else d for i, d in enumerate(shape)]
        if scale_dims != want:
            raise InputError(f"{where}: blocked scale shape {scale_dims} does not fit weight {shape} with block_size "
                             f"{quant.block_size} along axis {quant.axis} (expected {want})")
    elif scale_dims != [length]:
        raise InputError(f"{where}: per-axis scale shape {scale_dims} does not fit the weight's {length} entries "
                         f"along axis {quant.axis}")
