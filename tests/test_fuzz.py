"""Hypothesis-generated graphs: chains of MatMul/Gemm or Conv whose weights are stored in
every way the pass looks through (Transpose, Cast, Identity, Q/DQ, shared).  The generator
knows each weight's true reduction axis; the pass must agree, leave every other byte alone,
be deterministic and idempotent, and agree with ``check --strict``."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import sparsify
from tests.builders import is_nm, make_model, run, vi


@dataclass
class Built:
    model: onnx.ModelProto
    axes: dict[str, int] = field(default_factory=dict)  # stored weight name -> reduction axis
    zero: dict[str, int] = field(default_factory=dict)  # quantized weight -> zero point (per-tensor)
    feeds: dict[str, np.ndarray] = field(default_factory=dict)


class Graph:
    def __init__(self, draw):
        self.draw, self.nodes, self.inits, self.built = draw, [], [], None
        self.axes, self.zero, self.count = {}, {}, 0
        self.rng = np.random.default_rng(draw(st.integers(0, 2**16)))

    def name(self, prefix):
        self.count += 1
        return f"{prefix}{self.count}"

    def weight(self, shape, axis):
        """Store a weight of op-level ``shape`` (reduction along ``axis``); return the tensor
        name the op should consume."""
        draw = self.draw
        values = self.rng.standard_normal(shape).astype(np.float32)
        transpose = len(shape) >= 2 and draw(st.booleans())
        stored_axis, stored = axis, values
        perm = None
        if transpose:
            perm = list(draw(st.permutations(range(len(shape)))))
            # stored = values.transpose(inverse(perm)), and Transpose(perm) gives values back
            inverse = list(np.argsort(perm))
            stored = values.transpose(inverse)
            stored_axis = perm[axis]
        kind = draw(st.sampled_from(["f32", "f16", "q8", "u8", "qdq"]))
        name = self.name("W")
        out = name
        if kind == "f32":
            self.inits.append(numpy_helper.from_array(stored, name))
        elif kind == "f16":
            self.inits.append(numpy_helper.from_array(stored.astype(np.float16), name))
            out = self.name("cast")
            self.nodes.append(helper.make_node("Cast", [name], [out], to=TensorProto.FLOAT))
        elif kind in ("q8", "u8"):
            dtype = np.int8 if kind == "q8" else np.uint8
            zp = int(draw(st.integers(-3, 3))) + (0 if kind == "q8" else 128)
            q = self.rng.integers(-100, 100, stored.shape) + zp
            self.inits.append(numpy_helper.from_array(np.clip(q, -128 if kind == "q8" else 0, 127 if kind == "q8" else 255).astype(dtype), name))
            scale, zname = self.name("s"), self.name("zp")
            self.inits.append(numpy_helper.from_array(np.array(0.01, np.float32), scale))
            self.inits.append(numpy_helper.from_array(np.array(zp, dtype), zname))
            out = self.name("dq")
            self.nodes.append(helper.make_node("DequantizeLinear", [name, scale, zname], [out]))
            self.zero[name] = zp
        else:  # float weight fake-quantized by Q -> DQ
            self.inits.append(numpy_helper.from_array(stored, name))
            scale, zname = self.name("s"), self.name("zp")
            self.inits.append(numpy_helper.from_array(np.array(0.02, np.float32), scale))
            self.inits.append(numpy_helper.from_array(np.array(0, np.int8), zname))
            q, dq = self.name("q"), self.name("dq")
            self.nodes.append(helper.make_node("QuantizeLinear", [name, scale, zname], [q]))
            self.nodes.append(helper.make_node("DequantizeLinear", [q, scale, zname], [dq]))
            out = dq
        if draw(st.booleans()):
            ident = self.name("id")
            self.nodes.append(helper.make_node("Identity", [out], [ident]))
            out = ident
        if transpose:
            t = self.name("t")
            self.nodes.append(helper.make_node("Transpose", [out], [t], perm=perm))
            out = t
        self.axes[name] = stored_axis
        return out


@st.composite
def dense_chain(draw):
    g = Graph(draw)
    dims = draw(st.lists(st.sampled_from([4, 6, 8, 12, 16]), min_size=2, max_size=4))
    x = "x"
    shared: dict[tuple, str] = {}
    for i, (k, n) in enumerate(zip(dims, dims[1:], strict=False)):
        op = draw(st.sampled_from(["MatMul", "Gemm"]))
        trans_b = op == "Gemm" and draw(st.booleans())
        shape, axis = ((n, k), 1) if trans_b else ((k, n), 0)
        key = (op, trans_b, shape)
        if key in shared and draw(st.booleans()):
            w = shared[key]  # shared weight, same axis
        else:
            w = shared[key] = g.weight(shape, axis)
        y = g.name("y")
        if op == "MatMul":
            g.nodes.append(helper.make_node("MatMul", [x, w], [y], name=f"layer{i}"))
        else:
            g.nodes.append(helper.make_node("Gemm", [x, w], [y], name=f"layer{i}", transB=int(trans_b)))
        x = y
    model = make_model(g.nodes, [vi("x", [2, dims[0]])], [vi(x, None)], g.inits)
    return Built(model, g.axes, g.zero, {"x": g.rng.standard_normal((2, dims[0])).astype(np.float32)})


@st.composite
def conv_chain(draw):
    g = Graph(draw)
    channels = draw(st.lists(st.sampled_from([4, 6, 8, 16]), min_size=2, max_size=3))
    x = "x"
    for i, (c_in, c_out) in enumerate(zip(channels, channels[1:], strict=False)):
        groups = draw(st.sampled_from([d for d in (1, 2, 4) if c_in % d == 0 and c_out % d == 0]))
        k = draw(st.sampled_from([1, 3]))
        w = g.weight((c_out, c_in // groups, k, k), 1)
        y = g.name("y")
        g.nodes.append(helper.make_node("Conv", [x, w], [y], name=f"conv{i}", group=groups, pads=[k // 2] * 4))
        x = y
    model = make_model(g.nodes, [vi("x", [1, channels[0], 5, 5])], [vi(x, None)], g.inits)
    return Built(model, g.axes, g.zero, {"x": g.rng.standard_normal((1, channels[0], 5, 5)).astype(np.float32)})


def _arrays(path):
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def _check(built: Built):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / "in.onnx"
        onnx.save(built.model, str(src))
        audit_before = sparsify.check(src)
        report = sparsify.prune(src, output=tmp / "a.onnx", verify=False)
        sparsify.prune(src, output=tmp / "b.onnx", verify=False)
        assert (tmp / "a.onnx").read_bytes() == (tmp / "b.onnx").read_bytes()  # deterministic
        before, after = _arrays(src), _arrays(tmp / "a.onnx")
        pruned = {t.target.weight for t in report.rows if t.outcome.status == "pruned"}
        for row in report.rows:
            if row.outcome.status in ("pruned", "already_nm"):
                assert row.target.axis == built.axes[row.target.weight], (row.target.layer, row.target.axis, built.axes[row.target.weight])
        for name, value in before.items():
            if name not in pruned:
                assert value.tobytes() == after[name].tobytes(), name  # untouched, bit for bit
                continue
            zero = built.zero.get(name, 0)
            assert is_nm(after[name], built.axes[name], zero=zero)
            changed = after[name] != value
            assert (after[name][changed] == zero).all()  # only zeroing, kept values identical
        dense_out, sparse_out = run(src, built.feeds), run(tmp / "a.onnx", built.feeds)
        assert [o.shape for o in dense_out] == [o.shape for o in sparse_out]
        audit = sparsify.check(tmp / "a.onnx")
        assert audit.count("non_compliant") == 0
        assert {t.target.layer for t in audit_before.rows if t.outcome.status == "non_compliant"} == \
               {t.target.layer for t in report.rows if t.outcome.status == "pruned"}
        sparsify.prune(tmp / "a.onnx", output=tmp / "c.onnx", verify=False)
        assert (tmp / "c.onnx").read_bytes() == (tmp / "a.onnx").read_bytes()  # idempotent


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(dense_chain())
def test_fuzz_dense_chains(built):
    _check(built)


@SETTINGS
@given(conv_chain())
def test_fuzz_conv_chains(built):
    _check(built)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dense_chain(), st.sampled_from(["wanda", "sparsegpt"]), st.booleans())
def test_fuzz_data_aware_methods(built, method, permute):
    """Calibrated methods (and permutation) on the same random graphs: every pruned weight is
    N:M along its true axis, the audit agrees, the model still runs, the result is deterministic."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / "in.onnx"
        onnx.save(built.model, str(src))
        np.savez(tmp / "cal.npz", x=np.random.default_rng(0).standard_normal((3, 2, built.feeds["x"].shape[1])).astype(np.float32))
        kwargs = dict(verify=False, method=method, calibration=[str(tmp / "cal.npz")], permute=permute)
        report = sparsify.prune(src, output=tmp / "a.onnx", **kwargs)
        sparsify.prune(src, output=tmp / "b.onnx", **kwargs)
        assert (tmp / "a.onnx").read_bytes() == (tmp / "b.onnx").read_bytes()
        after = _arrays(tmp / "a.onnx")
        for row in report.rows:
            if row.outcome.status == "pruned":
                assert row.target.axis == built.axes[row.target.weight]
                assert is_nm(after[row.target.weight], row.target.axis, zero=built.zero.get(row.target.weight, 0))
        assert sparsify.check(tmp / "a.onnx").count("non_compliant") == 0
        dense_out, sparse_out = run(src, built.feeds), run(tmp / "a.onnx", built.feeds)
        assert [o.shape for o in dense_out] == [o.shape for o in sparse_out]
        assert all(np.isfinite(o).all() for o in sparse_out)
