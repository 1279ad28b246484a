"""What a build asks TensorRT for, decided without TensorRT (so it is tested on any machine).

- TensorRT 11 has no weak typing: the graph is converted to the requested precision first
  (``precision.convert_precision``) and the network is strongly typed.
- TensorRT 10: the fp32 graph is built weakly typed with the precision flag (``fp16``/``bf16``),
  TensorRT's classic path; no conversion.
- Optimisation profiles: ``--shapes NAME:MIN:OPT:MAX`` (each ``1x3x224x224``), checked against
  the model's inputs (name, rank, fixed dimensions, min <= opt <= max).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from sparsify.plugin_api import UsageError

__all__ = ["BuildOptions", "TypingPlan", "config_arguments", "has_qdq", "parse_shapes", "polygraphy_profiles", "typing_plan"]


@dataclass
class BuildOptions:
    precision: str = "fp16"
    dense: bool = False
    workspace_mib: int | None = None
    timing_cache: Path | None = None
    shapes: dict[str, tuple[list[int], list[int], list[int]]] = field(default_factory=dict)  # name -> (min, opt, max)
    has_qdq: bool = False  # the graph carries Q/DQ (int8): TensorRT 10 then needs its int8 flag


@dataclass
class TypingPlan:
    convert_graph: bool  # put the precision in the ONNX graph before the build
    strongly_typed: bool
    flags: dict[str, bool]  # Polygraphy CreateConfig precision flags (weak typing only)


def typing_plan(tensorrt_major: int, precision: str, has_qdq: bool = False) -> TypingPlan:
    """TensorRT 11: strongly typed, precision converted into the graph.  TensorRT 10: weakly
    typed with the precision flag, plus ``int8`` when the graph has Q/DQ (explicit quantization
    needs the flag under weak typing)."""
    if precision not in ("fp16", "bf16", "fp32"):
        raise UsageError(f"unknown --precision {precision!r}: fp16, bf16 or fp32")
    if tensorrt_major >= 11:
        return TypingPlan(convert_graph=precision != "fp32", strongly_typed=True, flags={})
    flags: dict[str, bool] = {name: True for name in ("fp16", "bf16") if name == precision}
    if has_qdq:
        flags["int8"] = True
    return TypingPlan(convert_graph=False, strongly_typed=False, flags=flags)


def has_qdq(model: onnx.ModelProto) -> bool:
    return any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in model.graph.node)


def config_arguments(options: BuildOptions, plan: TypingPlan) -> dict:
    """Keyword arguments for Polygraphy's ``CreateConfig`` that need no TensorRT enum; the
    builder adds ``memory_pool_limits`` (workspace) and ``profiling_verbosity`` (DETAILED)."""
    return {"sparse_weights": not options.dense, "profiles": polygraphy_profiles(options.shapes),
            "load_timing_cache": str(options.timing_cache) if options.timing_cache and options.timing_cache.exists() else None,
            **plan.flags}


def _dims(text: str, spec: str) -> list[int]:
    if not re.fullmatch(r"\d+(x\d+)*", text):
        raise UsageError(f"invalid --shapes {spec!r}: expected NAME:MIN:OPT:MAX with each like 1x3x224x224")
    return [int(d) for d in text.split("x")]


def parse_shapes(specs: list[str] | None, model: onnx.ModelProto) -> dict[str, tuple[list[int], list[int], list[int]]]:
    """``["x:1x3x224x224:8x3x224x224:32x3x224x224"]`` -> {"x": (min, opt, max)}, validated."""
    initializers = {i.name for i in model.graph.initializer}
    inputs = {i.name: i for i in model.graph.input if i.name not in initializers}
    shapes: dict[str, tuple[list[int], list[int], list[int]]] = {}
    for spec in specs or []:
        parts = spec.split(":")  # names may contain ':'; the last three fields are the shapes
        if len(parts) < 4:
            raise UsageError(f"invalid --shapes {spec!r}: expected NAME:MIN:OPT:MAX with each like 1x3x224x224")
        name = ":".join(parts[:-3])
        low, opt, high = (_dims(p, spec) for p in parts[-3:])
        if name not in inputs:
            raise UsageError(f"--shapes names {name!r}, which is not a model input ({', '.join(sorted(inputs))})")
        declared = [d.dim_value if d.HasField("dim_value") else None for d in inputs[name].type.tensor_type.shape.dim]
        if not len(low) == len(opt) == len(high) == len(declared):
            raise UsageError(f"--shapes {name}: ranks {len(low)}/{len(opt)}/{len(high)}, the model says {len(declared)}")
        for axis, (fixed, a, b, c) in enumerate(zip(declared, low, opt, high, strict=True)):
            if not a <= b <= c:
                raise UsageError(f"--shapes {name}: axis {axis} needs min <= opt <= max, got {a}, {b}, {c}")
            if fixed is not None and not a == b == c == fixed:
                raise UsageError(f"--shapes {name}: axis {axis} is fixed at {fixed} in the model")
        shapes[name] = (low, opt, high)
    return shapes


def polygraphy_profiles(shapes: dict[str, tuple[list[int], list[int], list[int]]]) -> list | None:
    """One Polygraphy ``Profile`` holding every ``--shapes`` entry (None: no profile asked for)."""
    if not shapes:
        return None
    from polygraphy.backend.trt import Profile

    profile = Profile()
    for name, (low, opt, high) in shapes.items():
        profile.add(name, min=low, opt=opt, max=high)
    return [profile]
