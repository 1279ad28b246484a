"""Opt-in target selection: --include/--exclude regexes and --only-profitable.

Profitability rule (source: NVIDIA TensorRT maintainers, github.com/NVIDIA/TensorRT
issues #3849 and #4065): TensorRT tries sparse and dense tactics and keeps the faster; sparse
kernels win only when C_in and C_out are large enough (about 256 or more), and a kxk
convolution counts k*k times in C_in.  So a target is profitable when
``reduction_length * kernel_positions >= min_channels`` and ``output_features >= min_channels``.
"""

from __future__ import annotations

import re

from sparsify.analysis.targets import PruneTarget
from sparsify.errors import UsageError

__all__ = ["DEFAULT_MIN_CHANNELS", "compile_patterns", "predict_profit", "select_targets"]

DEFAULT_MIN_CHANNELS = 256

# 2:4 vs dense kernel-time ratios measured on an H200 (torch 2.11 + cuSPARSELt 0.8, CUDA-graphed,
# GEMMs with M >= 4096 rows; docs/sources.md#kernel-ratios): the range over the shapes tried.
MEASURED_KERNEL_SPEEDUP = {"float16": (1.08, 1.52), "bfloat16": (1.08, 1.54), "int8": (1.45, 2.21), "uint8": (1.45, 2.21)}


def predict_profit(target: PruneTarget, min_channels: int = DEFAULT_MIN_CHANNELS) -> tuple[bool, str]:
    """Will a sparse kernel likely win for this layer?  (prediction, why)."""
    c_in = target.reduction_length * target.kernel_positions
    if c_in < min_channels or target.output_features < min_channels:
        return False, (f"too small for a sparse kernel to win (C_in·k²={c_in}, C_out={target.output_features}; "
                       f"needs both >= {min_channels})")
    speedup = MEASURED_KERNEL_SPEEDUP.get(target.dtype)
    if speedup is None:
        if target.dtype == "float":
            return False, "float32 runs as TF32 with 1:2, not 2:4: convert to fp16/bf16 (or int8) to gain"
        return False, f"no 2:4 kernel measured for {target.dtype}"
    return True, f"expected {speedup[0]:.2f}-{speedup[1]:.2f}x kernel speedup ({target.dtype}, measured on H200 at M >= 4096)"


def compile_patterns(patterns: list[str] | None, flag: str) -> list[re.Pattern]:
    compiled = []
    for text in patterns or []:
        try:
            compiled.append(re.compile(text))
        except re.error as exc:
            raise UsageError(f"invalid {flag} regex {text!r}: {exc}") from None
    return compiled


def _matches(target: PruneTarget, patterns: list[re.Pattern]) -> re.Pattern | None:
    return next((p for p in patterns if p.search(target.layer) or p.search(target.weight)), None)


def select_targets(targets: list[PruneTarget], include: list[re.Pattern], exclude: list[re.Pattern],
                   only_profitable: bool, min_channels: int = DEFAULT_MIN_CHANNELS) -> None:
    """Mark targets the user did not ask for as skipped, with the reason.  An --include that
    matches no target at all is a usage error (the run would write a copy of the input)."""
    if include and targets and not any(_matches(t, include) for t in targets):
        raise UsageError(f"--include {' '.join(repr(p.pattern) for p in include)} matched none of the "
                         f"{len(targets)} layers/weights (see `sparsify check` for their names)")
    for target in targets:
        if not target.active:
            continue
        if include and _matches(target, include) is None:
            target.skip("not matched by --include")
        elif (pattern := _matches(target, exclude)) is not None:
            target.skip(f"excluded by --exclude {pattern.pattern!r}")
        elif only_profitable:
            c_in = target.reduction_length * target.kernel_positions
            if c_in < min_channels or target.output_features < min_channels:
                target.skip(predict_profit(target, min_channels)[1])
