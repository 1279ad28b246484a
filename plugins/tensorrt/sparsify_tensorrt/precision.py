"""Put the precision in the ONNX graph before a strongly-typed build (TensorRT 11 has no
FP16/INT8 builder flags): fp16 weights and compute, fp32 inputs/outputs, numerically
sensitive ops kept fp32.  NVIDIA's migration guide recommends ModelOpt AutoCast; it is used
when installed, otherwise onnxconverter-common's float16 converter."""

from __future__ import annotations

import importlib.util

import onnx

from sparsify.plugin_api import MissingComponent, UsageError

__all__ = ["KEEP_FP32_OPS", "convert_precision"]

# Normalisations and reductions lose accuracy in fp16 (variance, exp sums).
KEEP_FP32_OPS = ["LayerNormalization", "BatchNormalization", "InstanceNormalization", "GroupNormalization",
                 "Softmax", "LogSoftmax", "ReduceMean", "ReduceSum", "ReduceL2", "Pow", "Sqrt", "Exp", "Log"]


def convert_precision(model: onnx.ModelProto, precision: str) -> onnx.ModelProto:
    """Return a copy of ``model`` in ``precision`` ("fp32" returns it unchanged)."""
    if precision == "fp32":
        return model
    if precision not in ("fp16", "bf16"):
        raise UsageError(f"unknown --precision {precision!r}: fp16, bf16 or fp32")
    model = _with_node_names(model)
    if importlib.util.find_spec("modelopt") is not None:
        from modelopt.onnx.autocast import convert_to_mixed_precision

        return convert_to_mixed_precision(model, low_precision_type=precision, keep_io_types=True)
    if precision == "bf16":
        raise MissingComponent("bf16 conversion needs NVIDIA ModelOpt: pip install 'nvidia-modelopt[onnx]'")
    try:
        from onnxconverter_common import float16
    except ImportError:
        raise MissingComponent("fp16 conversion needs onnxconverter-common: pip install onnxconverter-common") from None
    converted = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=KEEP_FP32_OPS)
    return _restore_output_types(model, converted)


def _with_node_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy in which every node has a unique name: onnxconverter-common names the Casts around
    a kept-fp32 op after the op, so two unnamed Softmax nodes gave two `_output_cast_0` tensors
    (an invalid model).  Named nodes keep their names (the report matches layers by them)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    taken = {node.name for node in copy.graph.node if node.name}
    for index, node in enumerate(copy.graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
    return copy


def _restore_output_types(original: onnx.ModelProto, converted: onnx.ModelProto) -> onnx.ModelProto:
    """onnxconverter-common ignores keep_io_types for outputs produced by a blocked op (it
    casts them back to fp16 and declares them fp16): cast such outputs to their original type."""
    wanted = {o.name: o.type.tensor_type.elem_type for o in original.graph.output}
    producers = {o: node for node in converted.graph.node for o in node.output}
    for output in converted.graph.output:
        original_type = wanted.get(output.name)
        if original_type is None or output.type.tensor_type.elem_type == original_type:
            continue
        producer = producers.get(output.name)
        if producer is not None and producer.op_type == "Cast":
            # The converter's own Cast back to fp16 after an op it kept in fp32: make it cast to the
            # original type instead, so the output never passes through fp16.
            for attribute in producer.attribute:
                if attribute.name == "to":
                    attribute.i = original_type
            output.type.tensor_type.elem_type = original_type
            continue
        inner = f"{output.name}_sparsify_lowp"
        for node in converted.graph.node:
            node.output[:] = [inner if o == output.name else o for o in node.output]
            node.input[:] = [inner if i == output.name else i for i in node.input]
        converted.graph.node.append(onnx.helper.make_node("Cast", [inner], [output.name], to=original_type,
                                                          name=f"{output.name}_sparsify_cast"))
        output.type.tensor_type.elem_type = original_type
    return converted
