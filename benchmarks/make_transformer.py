"""Build a BERT-shaped transformer ONNX with distinct random weights, streaming to disk.

    python benchmarks/make_transformer.py OUT.onnx --layers 24 --d-model 1024 --d-ff 4096 [--external]

24 x d1024/ff4096 is BERT-large's shape: 302M parameters, ~1.21 GB fp32.  With
``--external`` weights go to ``OUT.onnx.data`` (required above 2 GB); they are written
one tensor at a time, so building a >2 GB model needs little memory.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def _layer(nodes, names, x, i, d, ff):
    p = f"l{i}."
    def mm(a, w, out):
        nodes.append(helper.make_node("MatMul", [a, p + w], [p + out], name=p + out))
        names.append((p + w, (d, d) if w in ("q", "k", "v", "o") else ((d, ff) if w == "ff1" else (ff, d))))
        return p + out
    q, k, v = mm(x, "q", "q_out"), mm(x, "k", "k_out"), mm(x, "v", "v_out")
    nodes.append(helper.make_node("Transpose", [k], [p + "kT"], perm=[0, 2, 1]))
    nodes.append(helper.make_node("MatMul", [q, p + "kT"], [p + "scores"], name=p + "scores"))
    nodes.append(helper.make_node("Softmax", [p + "scores"], [p + "probs"], axis=-1))
    nodes.append(helper.make_node("MatMul", [p + "probs", v], [p + "ctx"], name=p + "ctx"))
    o = mm(p + "ctx", "o", "attn")
    nodes.append(helper.make_node("Add", [x, o], [p + "res1"]))
    h = mm(p + "res1", "ff1", "ff1_out")
    nodes.append(helper.make_node("Relu", [h], [p + "act"]))
    f = mm(p + "act", "ff2", "ff2_out")
    nodes.append(helper.make_node("Add", [p + "res1", f], [p + "res2"]))
    return p + "res2"


def build(out: Path, layers: int, d: int, ff: int, external: bool, seed: int = 0) -> int:
    nodes, names = [], []
    x = "hidden"
    for i in range(layers):
        x = _layer(nodes, names, x, i, d, ff)
    rng = np.random.default_rng(seed)
    data_name = out.name + ".data"
    initializers = []
    params = 0
    with open(out.with_name(data_name), "wb") if external else open(os.devnull, "wb") as data:
        for name, shape in names:
            w = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)
            params += w.size
            if external:
                offset = data.tell()
                data.write(w.tobytes())
                t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=shape)
                for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(w.nbytes))):
                    t.external_data.add(key=key, value=value)
                t.data_location = TensorProto.EXTERNAL
            else:
                t = numpy_helper.from_array(w, name)
            initializers.append(t)
            del w
    graph = helper.make_graph(
        nodes, "transformer", [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", "seq", d])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", "seq", d])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with open(out, "wb") as handle:
        handle.write(model.SerializeToString())
    return params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--d-model", type=int, default=1024)
    parser.add_argument("--d-ff", type=int, default=4096)
    parser.add_argument("--external", action="store_true")
    args = parser.parse_args()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    params = build(args.output, args.layers, args.d_model, args.d_ff, args.external)
    print(f"wrote {args.output}: {params / 1e6:.1f}M parameters")


if __name__ == "__main__":
    main()
