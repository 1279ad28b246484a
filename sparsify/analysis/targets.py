"""Find every Conv/MatMul/Gemm weight, its reduction axis, and whether it can be pruned.

Axis rules (TensorRT's, docs/sources.md#axis-rules): Conv W[M, C/g, k...] -> axis 1; MatMul with a
constant right operand -> axis -2 (K), constant left operand -> axis -1; Gemm B ->
``1 if transB else 0``, constant A -> ``0 if transA else 1``.  Every target that cannot be
pruned carries the reason in ``skip_reason``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import onnx

from sparsify.analysis.index import GraphIndex, int_attr, is_default_domain
from sparsify.analysis.lookthrough import LOOK_THROUGH_OPS, WeightSource, resolve_weight
from sparsify.analysis.skip import Skip
from sparsify.io.dtypes import FLOAT_TYPES, QUANT_TYPES, dtype_name
from sparsify.pattern import NMPattern

__all__ = ["PruneTarget", "find_targets", "group_by_weight"]

TARGET_OPS = ("Conv", "MatMul", "Gemm")


@dataclass
class PruneTarget:
    """One (layer, weight input) pair: a row of the report."""

    layer: str
    op_type: str
    input_index: int
    op_axis: int  # reduction axis as the op sees the weight (may be negative)
    weight: str = ""
    weight_shape: tuple[int, ...] = ()
    dtype: str = ""
    axis: int | None = None  # reduction axis on the stored tensor
    path: list[str] = field(default_factory=list)
    status: str = "pending"
    skip_reason: str = ""
    notes: list[str] = field(default_factory=list)
    source: WeightSource | None = None
    reduction_length: int = 0  # C/g (Conv) or K (GEMM) along the pruned axis
    kernel_positions: int = 1  # prod(kernel) for Conv
    output_features: int = 0  # M (Conv out channels) or N (GEMM)
    density_before: float | None = None
    density_after: float | None = None
    node: onnx.NodeProto | None = field(default=None, repr=False)
    method: str = ""  # the mask method that pruned it (after any fallback)
    method_fallback: str = ""  # why the requested method was not used for this weight ("" = it was)
    sensitivity: float | None = None  # loss with only this weight pruned (accuracy budget)
    permutation_gain: float | None = None  # retained-magnitude gain of --permute (0.05 = +5%)

    def weight_source(self) -> WeightSource:
        """The resolved weight of a target that was not skipped during discovery."""
        if self.source is None:
            raise AssertionError(f"internal error: target {self.layer!r} has no resolved weight")
        return self.source

    def op_node(self) -> onnx.NodeProto:
        if self.node is None:
            raise AssertionError(f"internal error: target {self.layer!r} has no node")
        return self.node

    def skip(self, reason: str) -> None:
        self.status, self.skip_reason = "skipped", reason

    @property
    def active(self) -> bool:
        return self.status == "pending"


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


def _fill_shape_facts(target: PruneTarget, node: onnx.NodeProto, src: WeightSource) -> None:
    shape = src.op_shape
    target.reduction_length = shape[target.op_axis]
    if node.op_type == "Conv":
        target.kernel_positions = math.prod(shape[2:])
        target.output_features = shape[0]
    elif node.op_type == "MatMul":
        rank1 = len(shape) == 1
        target.output_features = 1 if rank1 else (shape[-1] if target.input_index == 1 else shape[-2])
    else:
        target.output_features = shape[1 - target.op_axis] if len(shape) == 2 else 0


def _eligibility(index: GraphIndex, node, target: PruneTarget, src: WeightSource, pattern: NMPattern) -> str:
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


def _discover(index: GraphIndex, pattern: NMPattern) -> list[PruneTarget]:
    targets: list[PruneTarget] = []
    for node in index.graph.node:
        if node.op_type not in TARGET_OPS or not is_default_domain(node):
            continue
        slots = _weight_slots(index, node)
        if isinstance(slots, Skip):
            row = PruneTarget(index.label(node), node.op_type, 1, -2)
            row.skip(slots.reason)
            targets.append(row)
            continue
        for slot, op_axis in slots:
            row = PruneTarget(index.label(node), node.op_type, slot, op_axis, node=node)
            targets.append(row)
            src = resolve_weight(index, node.input[slot], op_axis)
            if isinstance(src, Skip):
                row.weight = node.input[slot]
                row.skip(src.reason)
                continue
            if any(int(d) < 0 for d in src.tensor.dims):
                row.weight = src.name
                row.skip(f"weight has a negative dimension {[int(d) for d in src.tensor.dims]} (malformed tensor)")
                continue
            row.source, row.weight, row.axis = src, src.name, src.axis
            row.weight_shape = tuple(int(d) for d in src.tensor.dims)
            row.dtype, row.path = dtype_name(src.tensor.data_type), src.path
            row.op_axis = op_axis % len(src.op_shape)
            _fill_shape_facts(row, node, src)
            reason = _eligibility(index, node, row, src, pattern)
            if reason:
                row.skip(reason)
    return targets


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
            if (id(node), slot) in target_slots:
                continue
            if node.op_type in LOOK_THROUGH_OPS and slot == 0 and is_default_domain(node):
                stack.extend(o for o in node.output if o)
            else:
                found.append(f"{node.op_type} {index.label(node)!r}")
    return found


def _resolve_sharing(index: GraphIndex, targets: list[PruneTarget]) -> None:
    by_weight: dict[str, list[PruneTarget]] = defaultdict(list)
    for row in targets:
        if row.source is not None:
            by_weight[row.weight].append(row)
    for name, rows in by_weight.items():
        slots = {(id(r.node), r.input_index) for r in rows}
        foreign = _foreign_uses(index, name, slots)
        axes = {r.axis for r in rows}
        quant = {r.source.quant.signature() if r.source is not None and r.source.quant else None for r in rows}
        if foreign:
            reason = f"weight also feeds {foreign[0]}" + (f" and {len(foreign) - 1} more" if len(foreign) > 1 else "") + "; pruning would change it"
        elif len(axes) > 1:
            detail = ", ".join(f"axis {r.axis} for {r.layer}" for r in rows)
            reason = f"weight shared by {len(rows)} layers whose reduction axes disagree ({detail})"
        elif len(quant) > 1:
            reason = "weight shared by layers that dequantize it differently"
        else:
            blocked = next((r for r in rows if r.status == "skipped"), None)
            reason = f"weight shared with {blocked.layer}, which cannot be pruned ({blocked.skip_reason})" if blocked else ""
        for row in rows:
            if reason and row.status != "skipped":
                row.skip(reason)
            if len(rows) > 1:
                row.notes.append(f"weight shared by {len(rows)} layers")


def find_targets(index: GraphIndex, pattern: NMPattern) -> list[PruneTarget]:
    """Every weight operand of Conv/MatMul/Gemm in the main graph, eligible or skipped."""
    targets = _discover(index, pattern)
    _resolve_sharing(index, targets)
    return targets


def group_by_weight(targets: list[PruneTarget]) -> list[list[PruneTarget]]:
    """Active targets grouped by stored weight (a shared weight is pruned once), in order."""
    groups: dict[str, list[PruneTarget]] = {}
    for target in targets:
        if target.active:
            groups.setdefault(target.weight, []).append(target)
    return list(groups.values())
