"""Build the built-in sample: a small image classifier ONNX model made in code (no download).

It holds every case the report distinguishes: prunable 3x3, grouped and 1x1 convolutions,
a first conv whose 3 input channels cannot form groups of 4, a depthwise conv, a Gemm with
transB=1 (how PyTorch exports nn.Linear) and a MatMul classifier head.

    python samples/make_sample.py samples/build/tiny_cnn.onnx   # also writes tiny_cnn.inputs.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _he(rng, shape, fan_in):
    # Heavy-tailed like trained weights (a few large, many small), He-scaled.
    values = rng.standard_t(3, size=shape) / np.sqrt(3.0)
    return (values * np.sqrt(2.0 / fan_in)).astype(np.float32)


def sample_inputs(count: int = 64, seed: int = 1) -> np.ndarray:
    """Images that differ per sample (per-channel brightness, a gradient, noise), so the
    classifier's decisions differ too: `[count, 3, 32, 32]`, stacked along axis 0."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(-1, 1, 32, dtype=np.float32)
    images = rng.standard_normal((count, 3, 32, 32)).astype(np.float32) * 0.5
    images += rng.standard_normal((count, 3, 1, 1)).astype(np.float32)
    images += rng.standard_normal((count, 3, 1, 1)).astype(np.float32) * ramp[None, None, None, :]
    return images


def build_tiny_cnn(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def conv(name, x, c_in, c_out, k, group=1):
        w = _he(rng, (c_out, c_in // group, k, k), c_in // group * k * k)
        inits.append(numpy_helper.from_array(w, f"{name}.weight"))
        inits.append(numpy_helper.from_array(np.zeros(c_out, np.float32), f"{name}.bias"))
        nodes.append(helper.make_node("Conv", [x, f"{name}.weight", f"{name}.bias"], [f"{name}.out"], name=name,
                                      kernel_shape=[k, k], pads=[k // 2] * 4, group=group))
        nodes.append(helper.make_node("Relu", [f"{name}.out"], [f"{name}.relu"], name=f"{name}.relu"))
        return f"{name}.relu"

    x = conv("stem", "image", 3, 32, 3)  # C=3: not divisible by 4, skipped with a reason
    x = conv("block1.conv", x, 32, 64, 3)
    x = conv("block2.grouped", x, 64, 64, 3, group=4)
    x = conv("block2.depthwise", x, 64, 64, 3, group=64)  # depthwise: never eligible
    x = conv("block3.pointwise", x, 64, 128, 1)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["features"], name="flatten", axis=1))
    inits.append(numpy_helper.from_array(_he(rng, (256, 128), 128), "fc1.weight"))  # [out, in]: transB=1
    inits.append(numpy_helper.from_array(np.zeros(256, np.float32), "fc1.bias"))
    nodes.append(helper.make_node("Gemm", ["features", "fc1.weight", "fc1.bias"], ["fc1.out"], name="fc1", transB=1))
    nodes.append(helper.make_node("Relu", ["fc1.out"], ["fc1.relu"], name="fc1.relu"))
    inits.append(numpy_helper.from_array(_he(rng, (256, 10), 256), "head.weight"))  # [K, N]: axis 0
    nodes.append(helper.make_node("MatMul", ["fc1.relu", "head.weight"], ["logits"], name="head"))
    graph = helper.make_graph(
        nodes, "tiny_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="sparsify-sample")
    model.doc_string = "sparsify built-in sample: a tiny CNN classifier with random weights"
    onnx.checker.check_model(model)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", default="samples/build/tiny_cnn.onnx")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(build_tiny_cnn(args.seed), out)
    inputs = out.with_name(out.name.replace(".onnx", "") + ".inputs.npz")
    np.savez(inputs, image=sample_inputs())
    print(f"wrote {out} and {inputs} (64 sample images for --inputs)")


if __name__ == "__main__":
    main()
