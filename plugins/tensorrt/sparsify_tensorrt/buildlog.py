"""Which layers TensorRT considered and picked for sparse math, from its verbose build log:

    (Sparsity) Layers eligible for sparse math: Conv_22, MatMul_51, Conv_619 + Relu_620
    (Sparsity) TRT inference plan picked sparse implementation for layers: Conv_22

TensorRT names fused layers ``A + B``; each part is an ONNX node name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["SparsityLog", "match_layers", "parse_sparsity_log"]

_ELIGIBLE = re.compile(r"\(Sparsity\) Layers eligible for sparse math:(.*)$")
_PICKED = re.compile(r"\(Sparsity\) TRT inference plan picked sparse implementation for layers:(.*)$")


@dataclass
class SparsityLog:
    eligible: list[str] = field(default_factory=list)  # TensorRT layer names (possibly fused)
    picked: list[str] = field(default_factory=list)
    seen: bool = False  # whether the build log had the sparsity lines at all


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def parse_sparsity_log(log: str) -> SparsityLog:
    result = SparsityLog()
    for line in log.splitlines():
        if m := _ELIGIBLE.search(line):
            result.eligible += _names(m.group(1))
            result.seen = True
        elif m := _PICKED.search(line):
            result.picked += _names(m.group(1))
            result.seen = True
    return result


def match_layers(onnx_layers: list[str], trt_layers: list[str]) -> dict[str, str]:
    """ONNX node name -> the TensorRT layer that contains it (fused names split on ' + ')."""
    parts: dict[str, str] = {}
    for trt_name in trt_layers:
        for part in re.split(r"\s\+\s", trt_name):
            parts.setdefault(part.strip(), trt_name)
    return {name: parts[name] for name in onnx_layers if name in parts}
