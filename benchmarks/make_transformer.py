"""Build a BERT-shaped transformer ONNX with distinct random weights, streaming to disk.

    python benchmarks/make_transformer.py OUT.onnx --layers 24 --d-model 1024 --d-ff 4096 [--external]
        [--vit] [--gated]

24 x d1024/ff4096 is BERT-large's shape: 302M parameters, ~1.21 GB fp32.  With
``--external`` weights go to ``OUT.onnx.data`` (required above 2 GB); they are written
one tensor at a time, so building a >2 GB model needs little memory.
``--vit``: ViT-shaped instead (input [batch, 3, 224, 224], a 16x16/16 patch-embedding Conv,
pre-LayerNorm blocks, GELU); 12 x d768/ff3072 is ViT-B/16's shape.  ``--gated``: a gated MLP
(``down(silu(gate x) * up x)``, LLaMA's) instead of ReLU.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def _layer(nodes, names, x, i, d, ff, norm=False, gated=False, gelu=False):
    p = f"l{i}."
    def mm(a, w, out):
        nodes.append(helper.make_node("MatMul", [a, p + w], [p + out], name=p + out))
        names.append((p + w, (d, d) if w in ("q", "k", "v", "o") else ((ff, d) if w == "ff2" else (d, ff))))
        return p + out

    def layer_norm(a, tag):
        if not norm:
            return a
        names.extend([(p + tag + ".scale", (d,)), (p + tag + ".bias", (d,))])
        nodes.append(helper.make_node("LayerNormalization", [a, p + tag + ".scale", p + tag + ".bias"], [p + tag],
                                      axis=-1))
        return p + tag
    x_in = x
    x = layer_norm(x_in, "ln1")
    q, k, v = mm(x, "q", "q_out"), mm(x, "k", "k_out"), mm(x, "v", "v_out")
    nodes.append(helper.make_node("Transpose", [k], [p + "kT"], perm=[0, 2, 1]))
    nodes.append(helper.make_node("MatMul", [q, p + "kT"], [p + "scores"], name=p + "scores"))
    nodes.append(helper.make_node("Softmax", [p + "scores"], [p + "probs"], axis=-1))
    nodes.append(helper.make_node("MatMul", [p + "probs", v], [p + "ctx"], name=p + "ctx"))
    o = mm(p + "ctx", "o", "attn")
    nodes.append(helper.make_node("Add", [x_in, o], [p + "res1"]))
    y = layer_norm(p + "res1", "ln2")
    h = mm(y, "ff1", "ff1_out")
    if gated:
        g = mm(y, "gate", "gate_out")
        nodes.append(helper.make_node("Sigmoid", [g], [p + "sig"]))
        nodes.append(helper.make_node("Mul", [g, p + "sig"], [p + "silu"]))
        nodes.append(helper.make_node("Mul", [p + "silu", h], [p + "act"]))
    elif gelu:
        names.append((p + "sqrt_half", ()))
        names.append((p + "one", ()))
        names.append((p + "half", ()))
        nodes += [helper.make_node("Mul", [h, p + "sqrt_half"], [p + "hs"]), helper.make_node("Erf", [p + "hs"], [p + "erf"]),
                  helper.make_node("Add", [p + "erf", p + "one"], [p + "erf1"]),
                  helper.make_node("Mul", [h, p + "erf1"], [p + "herf"]),
                  helper.make_node("Mul", [p + "herf", p + "half"], [p + "act"])]
    else:
        nodes.append(helper.make_node("Relu", [h], [p + "act"]))
    f = mm(p + "act", "ff2", "ff2_out")
    nodes.append(helper.make_node("Add", [p + "res1", f], [p + "res2"]))
    return p + "res2"


_CONSTANTS = {"sqrt_half": 0.5 ** 0.5, "one": 1.0, "half": 0.5}


def _value(name: str, shape, rng) -> np.ndarray:
    """Random weights; LayerNorm scales 1, biases 0; GELU's constants their values."""
    tail = name.rsplit(".", 1)[-1]
    if tail == "shape":
        return np.array([0, 0, -1], np.int64)  # Reshape: keep batch and channels, flatten the rest
    if tail in _CONSTANTS:
        return np.array(_CONSTANTS[tail], np.float32)
    if tail == "scale":
        return np.ones(shape, np.float32)
    if tail == "bias":
        return np.zeros(shape, np.float32)
    return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)


def build(out: Path, layers: int, d: int, ff: int, external: bool, seed: int = 0, vit: bool = False,
          gated: bool = False) -> int:
    nodes, names = [], []
    x = "hidden"
    if vit:  # [B, 3, 224, 224] -> 16x16 patches -> [B, 196, d]
        names += [("patch.weight", (d, 3, 16, 16)), ("patch.shape", (3,))]
        nodes += [helper.make_node("Conv", ["pixels", "patch.weight"], ["patches"], name="patch_embed",
                                   kernel_shape=[16, 16], strides=[16, 16]),
                  helper.make_node("Reshape", ["patches", "patch.shape"], ["flat"]),  # [B, d, 196]
                  helper.make_node("Transpose", ["flat"], ["hidden"], perm=[0, 2, 1])]
    for i in range(layers):
        x = _layer(nodes, names, x, i, d, ff, norm=vit, gated=gated, gelu=vit)
    rng = np.random.default_rng(seed)
    data_name = out.name + ".data"
    initializers = []
    params = 0
    with open(out.with_name(data_name), "wb") if external else open(os.devnull, "wb") as data:
        for name, shape in names:
            w = _value(name, shape, rng)
            params += w.size
            if external:
                offset = data.tell()
                data.write(w.tobytes())
                t = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(w.dtype), dims=shape)
                for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(w.nbytes))):
                    t.external_data.add(key=key, value=value)
                t.data_location = TensorProto.EXTERNAL
            else:
                t = numpy_helper.from_array(w, name)
            initializers.append(t)
            del w
    inputs = [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 3, 224, 224])] if vit else \
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", "seq", d])]
    graph = helper.make_graph(
        nodes, "transformer", inputs,
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
    parser.add_argument("--vit", action="store_true", help="ViT-shaped: image input, patch embedding, pre-LN, GELU")
    parser.add_argument("--gated", action="store_true", help="gated MLP (LLaMA's) instead of ReLU")
    args = parser.parse_args()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    params = build(args.output, args.layers, args.d_model, args.d_ff, args.external, vit=args.vit, gated=args.gated)
    print(f"wrote {args.output}: {params / 1e6:.1f}M parameters")


if __name__ == "__main__":
    main()
