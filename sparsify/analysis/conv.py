"""A convolution's geometry as the graph states it: kernel, strides, dilations, pads (or
auto_pad), group."""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx

from sparsify.analysis.index import int_attr, ints_attr

__all__ = ["ConvGeometry"]


@dataclass(frozen=True)
class ConvGeometry:
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[int, ...] | None  # begins then ends; None: auto_pad SAME_* (computed per input)
    auto_pad: str
    group: int

    @classmethod
    def of(cls, node: onnx.NodeProto, weight_shape: tuple[int, ...]) -> ConvGeometry:
        kernel = tuple(weight_shape[2:])
        rank = len(kernel)
        strides = tuple(ints_attr(node, "strides") or [1] * rank)
        dilations = tuple(ints_attr(node, "dilations") or [1] * rank)
        auto_pad = next((a.s.decode() for a in node.attribute if a.name == "auto_pad"), "NOTSET") or "NOTSET"
        pads: tuple[int, ...] | None = tuple(ints_attr(node, "pads") or [0] * (2 * rank))
        if auto_pad == "VALID":
            pads = (0,) * (2 * rank)
        elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            pads = None
        return cls(kernel, strides, dilations, pads, auto_pad, int_attr(node, "group", 1, 1))

    @property
    def pointwise(self) -> bool:
        """A 1x1, stride-1, unpadded, ungrouped conv: its patches are the input's positions."""
        return (all(k == 1 for k in self.kernel) and all(s == 1 for s in self.strides) and self.group == 1
                and (self.pads is not None and not any(self.pads)))

    def refusal(self) -> str:
        """Why this geometry cannot be unfolded, or ""."""
        if len(self.strides) != len(self.kernel) or len(self.dilations) != len(self.kernel):
            return "strides/dilations do not match the kernel's rank"
        if self.pads is not None and len(self.pads) != 2 * len(self.kernel):
            return "pads do not match the kernel's rank"
        if min(self.strides + self.dilations + self.kernel, default=1) < 1 or (self.pads and min(self.pads) < 0):
            return "non-positive strides/dilations or negative pads"
        if self.auto_pad not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
            return f"auto_pad {self.auto_pad!r}"
        return ""

    def pads_for(self, spatial: tuple[int, ...]) -> tuple[list[int], list[int]]:
        rank = len(self.kernel)
        if self.pads is not None:
            return list(self.pads[:rank]), list(self.pads[rank:])
        begins, ends = [], []
        for size, k, s, d in zip(spatial, self.kernel, self.strides, self.dilations, strict=True):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, large = total // 2, total - total // 2
            begins.append(small if self.auto_pad == "SAME_UPPER" else large)
            ends.append(large if self.auto_pad == "SAME_UPPER" else small)
        return begins, ends
