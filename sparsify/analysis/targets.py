"""Find every Conv/MatMul/Gemm weight, its reduction axis, and whether it can be pruned.

Axis rules (TensorRT's, docs/sources.md#axis-rules): Conv W[M, C/g, k...] -> axis 1; MatMul with a
constant right operand -> axis -2 (K), constant left operand -> axis -1; Gemm B ->
``1 if transB else 0``, constant A -> ``0 if transA else 1``.  Every target that cannot be
pruned carries the reason in its ``Outcome``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from enum import Enum

import onnx

from sparsify.analysis.index import GraphIndex, int_attr, is_default_domain
from sparsify.analysis.lookthrough import LOOK_THROUGH_OPS, WeightSource, resolve_weight
from sparsify.analysis.profit import predict_profit
from sparsify.analysis.skip import Skip
from sparsify.io.dtypes import FLOAT_TYPES, QUANT_TYPES, dtype_name
from sparsify.pattern import NMPattern

__all__ = ["SPARSE_STATUSES", "LayerRow", "Outcome", "Status", "Target", "find_targets", "group_by_weight"]

TARGET_OPS = ("Conv", "MatMul", "Gemm")


class Status(str, Enum):
    """What happened to a target; the values are the report's ``status`` strings."""

    PENDING = "pending"  # eligible, not handled yet
    SKIPPED = "skipped"  # left dense: ``Outcome.reason`` says why
    PRUNED = "pruned"
    ALREADY_NM = "already_nm"
    MASKED_NOT_NM = "masked_not_nm"  # a given mask that is not N:M was applied
    COMPLIANT = "compliant"  # check: already N:M
    NON_COMPLIANT = "non_compliant"  # check: not N:M

    def __str__(self) -> str:
        return self.value


SPARSE_STATUSES = (Status.PRUNED, Status.ALREADY_NM, Status.COMPLIANT)


@dataclass(frozen=True)
class Target:
    """What the graph says about one (layer, weight input) pair; never changes after discovery."""

    layer: str
    op_type: str
    input_index: int
    op_axis: int  # reduction axis as the op sees the weight (non-negative once resolved)
    weight: str = ""
    weight_shape: tuple[int, ...] = ()
    dtype: str = ""
    axis: int | None = None  # reduction axis on the stored tensor
    path: tuple[str, ...] = ()
    source: WeightSource | None = field(default=None, repr=False, compare=False)
    reduction_length: int = 0  # C/g (Conv) or K (GEMM) along the pruned axis
    kernel_positions: int = 1  # prod(kernel) for Conv
    output_features: int = 0  # M (Conv out channels) or N (GEMM)
    node: onnx.NodeProto | None = field(default=None, repr=False, compare=False)
    profitable: bool | None = None  # will a sparse kernel likely win (None: no resolved weight)
    profitability: str = ""  # why

    def weight_source(self) -> WeightSource:
        """The resolved weight (every target that reaches a mask method has one)."""
        if self.source is None:
            raise AssertionError(f"internal error: target {self.layer!r} has no resolved weight")
        return self.source

    def op_node(self) -> onnx.NodeProto:
        if self.node is None:
            raise AssertionError(f"internal error: target {self.layer!r} has no node")
        return self.node


@dataclass
class Outcome:
    """What happened to a target: filled by selection, the mask stage and calibration."""

    status: Status = Status.PENDING
    reason: str = ""  # why it was skipped or is not sparse
    notes: list[str] = field(default_factory=list)
    density_before: float | None = None
    density_after: float | None = None
    method: str = ""  # the mask method that pruned it (after any fallback)
    method_fallback: str = ""  # why the requested method was not used for this weight ("" = it was)
    sensitivity: float | None = None  # loss with only this weight pruned (accuracy budget)
    permutation_gain: float | None = None  # retained-magnitude gain of --permute (0.05 = +5%)

    def skip(self, reason: str) -> None:
        self.status, self.reason = Status.SKIPPED, reason

    @property
    def active(self) -> bool:
        return self.status is Status.PENDING


@dataclass
class LayerRow:
    """One row of the report: the target and its outcome."""

    target: Target
    outcome: Outcome = field(default_factory=Outcome)


def _weight_slots(index: GraphIndex, node: onnx.NodeProto) -> list[tuple[int, int]] | Skip:
    """(input index, op-level reduction axis) of the node's constant weight operands."""
    const = [bool(name) and index.is_constant(name) for name in node.input[:2]]
    const += [False] * (2 - len(const))
    if node.op_type == "Conv":
        return [(1, 1)] if const[1] else []
    if node.op_type == "MatMul":
        if const[0] and const[1]:
            return Skip("both operands are constant (fold the MatMul instead)")
        if const[1]:
            return [(1, -2)]
        return [(0, -1)] if const[0] else []
    trans_a, trans_b = int_attr(node, "transA", 0, 0, 1), int_attr(node, "transB", 0, 0, 1)
    if const[0] and const[1]:
        return Skip("both operands are constant (fold the Gemm instead)")
    if const[1]:
        return [(1, 1 if trans_b else 0)]
    return [(0, 0 if trans_a else 1)] if const[0] else []


def _shape_facts(node: onnx.NodeProto, input_index: int, op_axis: int, src: WeightSource) -> dict:
    """reduction_length, kernel_positions and output_features of a resolved weight."""
    shape = src.op_shape
    facts = {"reduction_length": shape[op_axis], "kernel_positions": 1, "output_features": 0}
    if node.op_type == "Conv":
        facts["kernel_positions"] = math.prod(shape[2:])
        facts["output_features"] = shape[0]
    elif node.op_type == "MatMul":
        rank1 = len(shape) == 1
        facts["output_features"] = 1 if rank1 else (shape[-1] if input_index == 1 else shape[-2])
    else:
        facts["output_features"] = shape[1 - op_axis] if len(shape) == 2 else 0
    return facts


def _dtype_refusal(index: GraphIndex, src: WeightSource) -> str:
    """The reason a resolved weight's storage or dtype rules it out, or ""."""
    tensor = src.tensor
    if src.kind == "initializer" and index.overridable(src.name):
        return "initializer is also a graph input, so it can be replaced at run time"
    if src.quant is not None and tensor.data_type in QUANT_TYPES:
        if src.quant.block_size:
            return "block-wise quantized weight (DequantizeLinear block_size) is not supported"
        if src.quant.zero_point is not None and src.quant.zero_point.data_type != tensor.data_type:
            return "zero point type differs from the weight type"
    elif tensor.data_type in QUANT_TYPES:
        return f"{dtype_name(tensor.data_type)} weight is not dequantized by a DequantizeLinear"
    elif tensor.data_type not in FLOAT_TYPES:
        return f"weight dtype {dtype_name(tensor.data_type)} is not supported (float32/float16/bfloat16, or int8/uint8 behind DequantizeLinear)"
    return ""


def _eligibility(index: GraphIndex, node, target: Target, src: WeightSource, pattern: NMPattern) -> str:
    """The reason a resolved weight cannot be pruned, or ""."""
    refused = _dtype_refusal(index, src)
    if refused:
        return refused
    if math.prod(src.op_shape) == 0:
        return "empty weight"
    if node.op_type == "Conv":
        if len(src.op_shape) < 3:
            return f"Conv weight of rank {len(src.op_shape)} (expected >= 3)"
        group = int_attr(node, "group", 1, 1)
        if group > 1 and src.op_shape[1] == 1:
            return "depthwise Conv (C/group = 1): no group to prune along"
    if node.op_type == "Gemm" and len(src.op_shape) != 2:
        return f"Gemm operand of rank {len(src.op_shape)} (expected 2)"
    if target.reduction_length % pattern.m:
        return f"reduction length {target.reduction_length} is not divisible by {pattern.m}"
    return ""


def _skipped(target: Target, reason: str) -> LayerRow:
    return LayerRow(target, Outcome(Status.SKIPPED, reason))


def _slot_row(index: GraphIndex, node: onnx.NodeProto, slot: int, op_axis: int, pattern: NMPattern) -> LayerRow:
    label = index.label(node)
    src = resolve_weight(index, node.input[slot], op_axis)
    if isinstance(src, Skip):
        return _skipped(Target(label, node.op_type, slot, op_axis, weight=node.input[slot], node=node), src.reason)
    dims = tuple(int(d) for d in src.tensor.dims)
    if any(d < 0 for d in dims):
        return _skipped(Target(label, node.op_type, slot, op_axis, weight=src.name, node=node),
                        f"weight has a negative dimension {list(dims)} (malformed tensor)")
    op_axis %= len(src.op_shape)
    facts = _shape_facts(node, slot, op_axis, src)
    dtype = dtype_name(src.tensor.data_type)
    profitable, why = predict_profit(dtype, **facts)
    target = Target(label, node.op_type, slot, op_axis, weight=src.name, weight_shape=dims, dtype=dtype,
                    axis=src.axis, path=tuple(src.path), source=src, node=node, profitable=profitable,
                    profitability=why, **facts)
    reason = _eligibility(index, node, target, src, pattern)
    return _skipped(target, reason) if reason else LayerRow(target)


def _discover(index: GraphIndex, pattern: NMPattern) -> list[LayerRow]:
    rows: list[LayerRow] = []
    for node in index.graph.node:
        if node.op_type not in TARGET_OPS or not is_default_domain(node):
            continue
        slots = _weight_slots(index, node)
        if isinstance(slots, Skip):
            rows.append(_skipped(Target(index.label(node), node.op_type, 1, -2, node=node), slots.reason))
            continue
        rows.extend(_slot_row(index, node, slot, op_axis, pattern) for slot, op_axis in slots)
    return rows


def _foreign_uses(index: GraphIndex, name: str, target_slots: set[tuple[int, int]]) -> list[str]:
    """Uses of a stored weight that are not pruning targets (they would see the zeros)."""
    found: list[str] = []
    stack, seen = [name], set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        if current in index.graph_outputs:
            found.append("a graph output")
        if current in index.names_used_in_subgraphs:
            found.append("a subgraph (If/Loop/Scan body)")
        for node, slot in index.consumers.get(current, []):
            if (index.ordinal(node), slot) in target_slots:
                continue
            if node.op_type in LOOK_THROUGH_OPS and slot == 0 and is_default_domain(node):
                stack.extend(o for o in node.output if o)
            else:
                found.append(f"{node.op_type} {index.label(node)!r}")
    return found


def _resolve_sharing(index: GraphIndex, rows: list[LayerRow]) -> None:
    by_weight: dict[str, list[LayerRow]] = defaultdict(list)
    for row in rows:
        if row.target.source is not None:
            by_weight[row.target.weight].append(row)
    for name, shared in by_weight.items():
        slots = {(index.ordinal(r.target.op_node()), r.target.input_index) for r in shared}
        foreign = _foreign_uses(index, name, slots)
        axes = {r.target.axis for r in shared}
        quant = {q.signature() if (q := r.target.weight_source().quant) is not None else None for r in shared}
        if foreign:
            reason = f"weight also feeds {foreign[0]}" + (f" and {len(foreign) - 1} more" if len(foreign) > 1 else "") + "; pruning would change it"
        elif len(axes) > 1:
            detail = ", ".join(f"axis {r.target.axis} for {r.target.layer}" for r in shared)
            reason = f"weight shared by {len(shared)} layers whose reduction axes disagree ({detail})"
        elif len(quant) > 1:
            reason = "weight shared by layers that dequantize it differently"
        else:
            blocked = next((r for r in shared if r.outcome.status is Status.SKIPPED), None)
            reason = (f"weight shared with {blocked.target.layer}, which cannot be pruned ({blocked.outcome.reason})"
                      if blocked else "")
        for row in shared:
            if reason and row.outcome.status is not Status.SKIPPED:
                row.outcome.skip(reason)
            if len(shared) > 1:
                row.outcome.notes.append(f"weight shared by {len(shared)} layers")


def find_targets(index: GraphIndex, pattern: NMPattern) -> list[LayerRow]:
    """Every weight operand of Conv/MatMul/Gemm in the main graph, eligible or skipped."""
    rows = _discover(index, pattern)
    _resolve_sharing(index, rows)
    return rows


def group_by_weight(rows: list[LayerRow]) -> list[list[LayerRow]]:
    """Active rows grouped by stored weight (a shared weight is pruned once), in order."""
    groups: dict[str, list[LayerRow]] = {}
    for row in rows:
        if row.outcome.active:
            groups.setdefault(row.target.weight, []).append(row)
    return list(groups.values())
