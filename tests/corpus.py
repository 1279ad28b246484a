"""The onnx wheel's backend-test models, and a harness that makes the zoo ones prunable.

The ``light`` zoo architectures store every weight as ``ConstantOfShape(shape)``; the
harness replaces each such node by a random initializer of that shape (seeded by name), so
the real architectures get pruned.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
SMALL_SUITES = ("simple", "pytorch-converted", "pytorch-operator")
LIGHT_FAST = ("light_squeezenet",)


def small_models() -> list[Path]:
    return sorted(p for suite in SMALL_SUITES for p in (DATA / suite).glob("*/model.onnx"))


def light_models() -> list[Path]:
    return sorted((DATA / "light").glob("light_*.onnx"))


def model_id(path: Path) -> str:
    return path.stem if path.parent.name == "light" else f"{path.parent.parent.name}/{path.parent.name}"


def materialise(path: Path, out: Path) -> Path:
    """Copy of ``path`` with ConstantOfShape weights turned into random initializers."""
    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    kept = []
    for node in model.graph.node:
        shape_name = node.input[0] if node.input else ""
        if node.op_type == "ConstantOfShape" and shape_name in inits:
            shape = numpy_helper.to_array(inits[shape_name]).astype(np.int64).tolist()
            rng = np.random.default_rng(zlib.crc32(node.output[0].encode()))
            fan_in = max(1, int(np.prod(shape[1:])) if len(shape) > 1 else 1)
            values = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
            model.graph.initializer.append(numpy_helper.from_array(values, node.output[0]))
            if model.ir_version < 4:  # IR 3 requires every initializer to be a graph input
                model.graph.input.append(onnx.helper.make_tensor_value_info(node.output[0], 1, shape))
        else:
            kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    used = {name for node in kept for name in node.input}
    unused = [t for t in model.graph.initializer if t.name not in used and t.name.endswith("__SHAPE")]
    for tensor in unused:
        model.graph.initializer.remove(tensor)
    gone = {t.name for t in unused}
    for value in [i for i in model.graph.input if i.name in gone]:
        model.graph.input.remove(value)
    onnx.save(model, str(out))
    return out


def recorded_inputs(path: Path) -> dict[str, np.ndarray] | None:
    """The model's recorded inputs (test_data_set_0/input_*.pb), when it has them."""
    folder = path.parent / "test_data_set_0"
    if not folder.is_dir():
        return None
    model = onnx.load(str(path), load_external_data=False)
    initializer_names = {t.name for t in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in initializer_names]
    feeds = {}
    for index, name in enumerate(names):
        pb = folder / f"input_{index}.pb"
        if not pb.exists():
            return None
        tensor = onnx.TensorProto()
        tensor.ParseFromString(pb.read_bytes())
        feeds[name] = numpy_helper.to_array(tensor)
    return feeds
