"""Build and render a Triton ``config.pbtxt`` from an ONNX model's graph signature."""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx
from onnx import TensorProto

from sparsify.plugin_api import UsageError

__all__ = ["TRITON_TYPES", "TensorSpec", "TritonConfig", "config_from_model", "render_config"]

TRITON_TYPES = {
    TensorProto.FLOAT: "TYPE_FP32", TensorProto.FLOAT16: "TYPE_FP16", TensorProto.BFLOAT16: "TYPE_BF16",
    TensorProto.DOUBLE: "TYPE_FP64", TensorProto.INT8: "TYPE_INT8", TensorProto.INT16: "TYPE_INT16",
    TensorProto.INT32: "TYPE_INT32", TensorProto.INT64: "TYPE_INT64", TensorProto.UINT8: "TYPE_UINT8",
    TensorProto.UINT16: "TYPE_UINT16", TensorProto.UINT32: "TYPE_UINT32", TensorProto.UINT64: "TYPE_UINT64",
    TensorProto.BOOL: "TYPE_BOOL", TensorProto.STRING: "TYPE_STRING",
}


@dataclass
class TensorSpec:
    name: str
    data_type: str
    dims: list[int]  # -1 for a dynamic dimension; without the batch dimension when batching


@dataclass
class TritonConfig:
    name: str
    platform: str  # "tensorrt_plan" or "onnxruntime_onnx"
    max_batch_size: int
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)


def _signature(values: list[onnx.ValueInfoProto], kind: str) -> list[tuple[str, int, list[int | None]]]:
    found = []
    for value in values:
        tensor = value.type.tensor_type
        if not value.type.HasField("tensor_type"):
            raise UsageError(f"{kind} {value.name!r} is not a tensor; Triton needs tensors")
        if tensor.elem_type not in TRITON_TYPES:
            raise UsageError(f"{kind} {value.name!r} has a type Triton does not support")
        if not tensor.HasField("shape"):
            raise UsageError(f"{kind} {value.name!r} has no shape in the model; re-export with shapes")
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim]
        found.append((value.name, tensor.elem_type, dims))
    return found


def config_from_model(model: onnx.ModelProto, name: str, platform: str, max_batch_size: int | None) -> TritonConfig:
    """``max_batch_size`` None: batch when every input and output has a dynamic first
    dimension (then 8), otherwise 0 (no batching dimension)."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = _signature([i for i in model.graph.input if i.name not in initializers], "input")
    outputs = _signature(list(model.graph.output), "output")
    batchable = all(dims and dims[0] is None for _, _, dims in inputs + outputs)
    if max_batch_size is None:
        max_batch_size = 8 if batchable else 0
    if max_batch_size < 0:
        raise UsageError("--max-batch-size must be >= 0")
    if max_batch_size > 0 and not batchable:
        static = next(n for n, _, dims in inputs + outputs if not dims or dims[0] is not None)
        raise UsageError(f"--max-batch-size {max_batch_size}: {static!r} has no dynamic first (batch) dimension")

    def spec(entry) -> TensorSpec:
        tensor_name, elem, dims = entry
        dims = dims[1:] if max_batch_size > 0 else dims
        return TensorSpec(tensor_name, TRITON_TYPES[elem], [-1 if d is None else d for d in dims])

    return TritonConfig(name, platform, max_batch_size, [spec(e) for e in inputs], [spec(e) for e in outputs])


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _tensors(kind: str, specs: list[TensorSpec]) -> list[str]:
    lines = [f"{kind} ["]
    for index, spec in enumerate(specs):
        lines += ["  {", f"    name: {_quote(spec.name)}", f"    data_type: {spec.data_type}",
                  f"    dims: [ {', '.join(str(d) for d in spec.dims)} ]", "  }" + ("," if index < len(specs) - 1 else "")]
    lines.append("]")
    return lines


def render_config(config: TritonConfig) -> str:
    """The protobuf text format Triton reads (model_config.proto)."""
    lines = [f"name: {_quote(config.name)}", f"platform: {_quote(config.platform)}",
             f"max_batch_size: {config.max_batch_size}"]
    lines += _tensors("input", config.inputs) + _tensors("output", config.outputs)
    return "\n".join(lines) + "\n"
