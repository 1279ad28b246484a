"""Which engine layers really run sparse, from TensorRT's engine inspector
(``IEngineInspector.get_engine_information(LayerInformationFormat.JSON)``, built with
``ProfilingVerbosity.DETAILED``).

Both schemas are read:

- TensorRT 10: ``{"Layers": [...], "Bindings": ["x", "y"]}``; each tensor of a layer has one
  ``"Format/Datatype"`` string ("Channel major FP16 format where channel % 16 == 0").
- TensorRT 11: ``"Bindings"`` became ``"I/O Tensors"`` (objects with Name, IOMode, DataType,
  Dimensions, ...), and the tensor field was split into ``"Format"`` and ``"DataType"``.

Per layer: ``"HasSparseWeights": 1`` (convolutions and GEMMs whose chosen kernel uses the 2:4
weights) or a tactic name with ``sparse`` in it (``sm80_xmma_fprop_avdt_sparse_int8int8_...``)
means the layer runs a sparse kernel.  ``"Metadata"`` lists the ONNX nodes a (fused) layer came
from as ``[ONNX Layer: NAME]`` entries separated by U+001E; older engines only have the fused
``"A + B"`` name.  With a lower profiling verbosity ``"Layers"`` is a list of names only, and
nothing can be said about kernels.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

__all__ = ["EngineInfo", "LayerInfo", "parse_engine_info", "sparse_layers_by_onnx_node"]

_ONNX_LAYER = re.compile(r"\[ONNX Layer: (.*?)\]")
_DTYPE_WORDS = (("int8", "Int8"), ("fp8", "FP8"), ("bf16", "BFloat16"), ("fp16", "Half"), ("half", "Half"),
                ("fp32", "Float"), ("float", "Float"), ("int32", "Int32"), ("bool", "Bool"))


@dataclass
class LayerInfo:
    name: str
    layer_type: str = ""
    tactic: str = ""
    has_sparse_weights: bool | None = None  # None: the field is absent for this layer type
    sparse_kernel: bool = False
    onnx_nodes: list[str] = field(default_factory=list)
    dtype: str = ""  # of the first input, normalised: Float, Half, BFloat16, Int8, FP8 ...


@dataclass
class EngineInfo:
    schema: str  # "tensorrt10", "tensorrt11" or "names-only"
    layers: list[LayerInfo]
    io_tensors: list[dict]
    detailed: bool


def _dtype(tensor: dict) -> str:
    if isinstance(tensor.get("DataType"), str):  # TensorRT 11
        return tensor["DataType"]
    text = str(tensor.get("Format/Datatype", "")).lower()
    for word, name in _DTYPE_WORDS:
        if word in text:
            return name
    return ""


def _onnx_nodes(layer: dict) -> list[str]:
    metadata = layer.get("Metadata") or ""
    nodes = _ONNX_LAYER.findall(metadata)
    if not nodes:  # engines without metadata: the fused layer name joins the node names
        nodes = [part.strip() for part in re.split(r"\s\+\s", str(layer.get("Name", ""))) if part.strip()]
    return nodes


def parse_engine_info(text: str) -> EngineInfo:
    """Parse the inspector's JSON for a whole engine (either TensorRT major version)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"engine inspector output is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("Layers"), list):
        raise ValueError("engine inspector output has no 'Layers' list")
    if "I/O Tensors" in data:
        schema, io = "tensorrt11", [dict(t) for t in data["I/O Tensors"]]
    else:
        schema, io = "tensorrt10", [{"Name": name} for name in data.get("Bindings", [])]
    raw = data["Layers"]
    if all(isinstance(layer, str) for layer in raw):
        layers = [LayerInfo(name, onnx_nodes=_onnx_nodes({"Name": name})) for name in raw]
        return EngineInfo("names-only", layers, io, detailed=False)
    layers = []
    for layer in raw:
        tactic = str(layer.get("TacticName", ""))
        flag = layer.get("HasSparseWeights")
        has_sparse = None if flag is None else bool(int(flag))
        inputs = layer.get("Inputs") or [{}]
        layers.append(LayerInfo(
            name=str(layer.get("Name", "")), layer_type=str(layer.get("LayerType", "")), tactic=tactic,
            has_sparse_weights=has_sparse, sparse_kernel=bool(has_sparse) or "sparse" in tactic.lower(),
            onnx_nodes=_onnx_nodes(layer), dtype=_dtype(inputs[0] if isinstance(inputs[0], dict) else {})))
    return EngineInfo(schema, layers, io, detailed=True)


def sparse_layers_by_onnx_node(info: EngineInfo) -> dict[str, LayerInfo]:
    """ONNX node name -> the engine layer that computes it (the first, for nodes split over layers)."""
    found: dict[str, LayerInfo] = {}
    for layer in info.layers:
        if layer.layer_type == "Reformat":
            continue
        for node in layer.onnx_nodes:
            found.setdefault(node, layer)
    return found
