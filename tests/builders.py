"""Tiny ONNX models built in code, and independent reference checks for the tests.

The reference N:M check here is written differently from sparsify's kernel on purpose
(np.moveaxis + argsort), so a shared bug cannot hide.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 21)]


def make_model(nodes, inputs, outputs, initializers=(), opset=None, ir_version=10, **kw) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers), **kw)
    model = helper.make_model(graph, opset_imports=opset or OPSET)
    model.ir_version = ir_version
    return model


def vi(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def rand(shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def init(array, name) -> TensorProto:
    return numpy_helper.from_array(array, name)


def save(model: onnx.ModelProto, path: Path, **kw) -> Path:
    onnx.save(model, str(path), **kw)
    return path


def weights(path: Path) -> dict[str, np.ndarray]:
    """Initializers and Constant-node tensors (by output name), data loaded."""
    model = onnx.load(str(path))
    found = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            found[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return found


def groups(array: np.ndarray, axis: int, m: int) -> np.ndarray:
    moved = np.moveaxis(array, axis, -1)
    return moved.reshape(*moved.shape[:-1], moved.shape[-1] // m, m)


def is_nm(array: np.ndarray, axis: int, n: int = 2, m: int = 4, zero=0) -> bool:
    return bool(((groups(array, axis, m) != zero).sum(-1) <= n).all())


def reference_prune(array: np.ndarray, axis: int, n: int = 2, m: int = 4, scores=None) -> np.ndarray:
    """Keep the n largest |w| of each group along axis; ties to the lower index."""
    g = groups(np.abs(array.astype(np.float64)) if scores is None else scores, axis, m)
    order = np.argsort(-g, axis=-1, kind="stable")[..., :n]
    keep = np.zeros(g.shape, bool)
    np.put_along_axis(keep, order, True, axis=-1)
    keep = np.moveaxis(keep.reshape(*keep.shape[:-2], -1), -1, axis)
    return np.where(keep, array, np.zeros((), array.dtype))


def run(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)
