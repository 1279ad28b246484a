"""Seeded mutation fuzzer for the pass's promises (run by tests/test_mutation_fuzz.py).

Mutants of several base models — bit flips, truncation, varint and length corruption,
duplicated and swapped fields, huge or negative dims, wrong dtypes, dangling names,
malformed attributes, external-data tricks — each go through ``prune --no-verify``,
``prune`` (with parity) and ``check``, in-process in a forked child per case.  Every run
must end with exit 0, 2 or 3 and no traceback; exit 2 writes nothing; the input never
changes; on exit 0 the output passes ``onnx.checker`` and loads in ONNX Runtime wherever the
input did, and re-running is byte-identical.

    python -m tests.mutation_fuzz --cases 2000 --seed 0 --workers 2 [--keep DIR]

prints one JSON line per failing case and a summary line; exit 1 when any case failed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.builders import init, make_model, rand, vi

CASE_TIMEOUT_S = 60


# ---------------------------------------------------------------------------------------- base models

def _mlp() -> onnx.ModelProto:
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"], name="mm1"), helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "W2"], ["y"], name="mm2")]
    return make_model(nodes, [vi("x", [2, 16])], [vi("y", [2, 8])], [init(rand([16, 16]), "W1"), init(rand([16, 8], 1), "W2")])


def _gemm() -> onnx.ModelProto:
    node = helper.make_node("Gemm", ["x", "W", "b"], ["y"], name="fc", transB=1)
    return make_model([node], [vi("x", [2, 16])], [vi("y", [2, 8])], [init(rand([8, 16]), "W"), init(rand([8], 2), "b")])


def _conv() -> onnx.ModelProto:
    nodes = [helper.make_node("Conv", ["x", "W1"], ["h"], name="conv3", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h"], ["r"]), helper.make_node("Conv", ["r", "W2"], ["y"], name="conv1")]
    return make_model(nodes, [vi("x", [1, 8, 5, 5])], [vi("y", [1, 4, 5, 5])],
                      [init(rand([8, 8, 3, 3]), "W1"), init(rand([4, 8, 1, 1], 1), "W2")])


def _grouped() -> onnx.ModelProto:
    node = helper.make_node("Conv", ["x", "W"], ["y"], name="gconv", group=2)
    return make_model([node], [vi("x", [1, 16, 4, 4])], [vi("y", [1, 8, 4, 4])], [init(rand([8, 8, 1, 1]), "W")])


def _qdq() -> onnx.ModelProto:
    q = np.random.default_rng(3).integers(-100, 100, [16, 8]).astype(np.int8)
    nodes = [helper.make_node("DequantizeLinear", ["Wq", "s", "z"], ["W"], name="dq", axis=1),
             helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
    return make_model(nodes, [vi("x", [2, 16])], [vi("y", [2, 8])],
                      [init(q, "Wq"), init(np.full([8], 0.02, np.float32), "s"), init(np.zeros([8], np.int8), "z")])


def _transpose_cast() -> onnx.ModelProto:
    nodes = [helper.make_node("Cast", ["Wh"], ["Wc"], to=TensorProto.FLOAT), helper.make_node("Transpose", ["Wc"], ["W"], perm=[1, 0]),
             helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
    return make_model(nodes, [vi("x", [2, 16])], [vi("y", [2, 8])], [init(rand([8, 16]).astype(np.float16), "Wh")])


def _constant_node() -> onnx.ModelProto:
    nodes = [helper.make_node("Constant", [], ["W"], value=numpy_helper.from_array(rand([16, 8]), "Wconst")),
             helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
    return make_model(nodes, [vi("x", [2, 16])], [vi("y", [2, 8])])


def _shared() -> onnx.ModelProto:
    nodes = [helper.make_node("MatMul", ["x", "W"], ["a"], name="mm1"), helper.make_node("MatMul", ["a", "W"], ["y"], name="mm2")]
    return make_model(nodes, [vi("x", [2, 16])], [vi("y", [2, 16])], [init(rand([16, 16]), "W")])


def _typed_fields() -> onnx.ModelProto:
    w = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[16, 8], float_data=rand([16, 8]).ravel().tolist())
    return make_model([helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], [vi("x", [2, 16])], [vi("y", [2, 8])], [w])


BASES: dict[str, Callable[[], onnx.ModelProto]] = {
    "mlp": _mlp, "gemm": _gemm, "conv": _conv, "grouped": _grouped, "qdq": _qdq, "transpose_cast": _transpose_cast,
    "constant": _constant_node, "shared": _shared, "typed_fields": _typed_fields,
}
EXTERNAL_BASES = ("mlp", "conv")  # also written with external data


# ---------------------------------------------------------------------------------------- wire-level view
# Written independently of sparsify/io/protowire.py on purpose: the mutations must not share
# a parsing bug with the code they attack.

def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _encode(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _fields(buf: bytes, start: int, end: int, depth: int = 0) -> list[tuple[int, int, int, int, int]]:
    """(field start, tag end, length-prefix end, field end, depth) of every field, descending
    into length-delimited payloads that parse as messages."""
    found = []
    pos = start
    while pos < end:
        first = pos
        try:
            tag, pos = _varint(buf, pos)
            wire = tag & 7
            tag_end = pos
            if wire == 0:
                _, pos = _varint(buf, pos)
                found.append((first, tag_end, tag_end, pos, depth))
            elif wire == 1:
                pos += 8
                found.append((first, tag_end, tag_end, pos, depth))
            elif wire == 5:
                pos += 4
                found.append((first, tag_end, tag_end, pos, depth))
            elif wire == 2:
                length, payload = _varint(buf, pos)
                pos = payload + length
                if pos > end:
                    return found
                found.append((first, tag_end, payload, pos, depth))
                if depth < 6 and length:
                    inner = _fields(buf, payload, pos, depth + 1)
                    if inner and inner[-1][3] == pos:
                        found.extend(inner)
            else:
                return found
        except ValueError:
            return found
    return found


def _siblings(fields, field):
    """Fields of the same message as ``field`` (same depth, inside the same parent span)."""
    parents = [f for f in fields if f[4] == field[4] - 1 and f[2] <= field[0] < f[3]]
    lo, hi = (parents[0][2], parents[0][3]) if parents else (0, 1 << 62)
    return [f for f in fields if f[4] == field[4] and lo <= f[0] < hi]


def _reencode_lengths(buf: bytes, fields, changed_start: int, delta: int) -> bytes:
    """After inserting ``delta`` bytes at ``changed_start``, fix the length prefix of every
    enclosing length-delimited field (innermost first, so offsets stay valid)."""
    data = bytearray(buf)
    enclosing = sorted((f for f in fields if f[2] != f[1] and f[2] <= changed_start < f[3] or
                        (f[2] != f[1] and f[2] <= changed_start == f[3])), key=lambda f: -f[4])
    for _first, tag_end, payload, end, _ in enclosing:
        length = end - payload + delta
        prefix = _encode(length)
        old = payload - tag_end
        data[tag_end:payload] = prefix
        delta += len(prefix) - old
    return bytes(data)


# ---------------------------------------------------------------------------------------- mutations

def _bit_flips(buf: bytes, rng: random.Random) -> bytes:
    data = bytearray(buf)
    for _ in range(rng.randint(1, 8)):
        pos = rng.randrange(len(data))
        data[pos] ^= 1 << rng.randrange(8)
    return bytes(data)


def _truncate(buf: bytes, rng: random.Random) -> bytes:
    return buf[: rng.randrange(len(buf))]


def _corrupt_length(buf: bytes, rng: random.Random) -> bytes:
    fields = [f for f in _fields(buf, 0, len(buf)) if f[2] != f[1]]
    if not fields:
        return _bit_flips(buf, rng)
    first, tag_end, payload, end, _ = rng.choice(fields)
    length = end - payload
    new = rng.choice([0, 1, length - 1, length + 1, length + rng.randint(2, 64), 2**31, 2**63 - 1, 2**64 - 1, length * 2])
    if rng.random() < 0.2:  # an over-long varint (11 continuation bytes)
        return buf[:tag_end] + b"\xff" * 11 + buf[payload:]
    return buf[:tag_end] + _encode(max(new, 0)) + buf[payload:]


def _corrupt_varint(buf: bytes, rng: random.Random) -> bytes:
    fields = [f for f in _fields(buf, 0, len(buf)) if f[2] == f[1] and f[3] > f[1]]
    if not fields:
        return _bit_flips(buf, rng)
    first, tag_end, _, end, _ = rng.choice(fields)
    value = rng.choice([0, 1, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**64 - 1, rng.getrandbits(40)])
    if (buf[first] & 7) != 0:  # fixed-size field: scribble its bytes instead
        return buf[:tag_end] + bytes(rng.getrandbits(8) for _ in range(end - tag_end)) + buf[end:]
    return buf[:tag_end] + _encode(value) + buf[end:]


def _duplicate_field(buf: bytes, rng: random.Random) -> bytes:
    fields = _fields(buf, 0, len(buf))
    if not fields:
        return buf + buf[:8]
    field = rng.choice(fields)
    copy = buf[field[0]:field[3]]
    mutated = buf[:field[3]] + copy + buf[field[3]:]
    return _reencode_lengths(mutated, fields, field[3], len(copy))


def _swap_fields(buf: bytes, rng: random.Random) -> bytes:
    fields = _fields(buf, 0, len(buf))
    if len(fields) < 2:
        return _bit_flips(buf, rng)
    field = rng.choice(fields)
    siblings = [f for f in _siblings(fields, field) if f != field]
    if not siblings:
        return _bit_flips(buf, rng)
    other = rng.choice(siblings)
    a, b = sorted([field, other])
    if a[3] > b[0]:
        return _bit_flips(buf, rng)
    return buf[:a[0]] + buf[b[0]:b[3]] + buf[a[3]:b[0]] + buf[a[0]:a[3]] + buf[b[3]:]


@dataclasses.dataclass
class _Case:
    """One proto mutation's inputs: the model copy, its tensors, the seeded RNG, the kind drawn."""

    m: onnx.ModelProto
    tensors: list
    rng: random.Random
    kind: str


def _m_dims(c: _Case) -> None:
    if c.tensors:
        t = c.rng.choice(c.tensors)
        if t.dims:
            i = c.rng.randrange(len(t.dims))
            t.dims[i] = c.rng.choice([-1, -(2**40), 0, 2**40, 2**62, t.dims[i] + 1, t.dims[i] * 2]) if c.kind == "dims" else -c.rng.randint(1, 9)


def _m_dtype(c: _Case) -> None:
    if c.tensors:
        c.rng.choice(c.tensors).data_type = c.rng.choice([0, 2, 3, 6, 7, 8, 9, 10, 11, 16, 17, 21, 22, 23, 999, -5])


def _m_dangling(c: _Case) -> None:
    if c.m.graph.node:
        node = c.rng.choice(c.m.graph.node)
        if node.input:
            node.input[c.rng.randrange(len(node.input))] = c.rng.choice(["nowhere", "", "x", node.output[0] if node.output else "y"])


def _m_attribute(c: _Case) -> None:
    g = c.m.graph
    if not g.node:
        return
    # On an op the pass reads attributes of, placed first so it is the one found.
    readers = [n for n in g.node if n.op_type in ("Gemm", "Conv", "Transpose", "DequantizeLinear", "Cast")] or list(g.node)
    node = c.rng.choice(readers)
    name = c.rng.choice({"Gemm": ["transA", "transB"], "Conv": ["group", "kernel_shape"], "Transpose": ["perm"],
                       "DequantizeLinear": ["axis", "block_size"], "Cast": ["to"]}.get(node.op_type, ["axis"]))
    value = c.rng.choice([1.5, float("nan"), 2**40, -1, 0, 3, [1.0, 0.0], [3, 7], [0, 0], "str",
                        numpy_helper.from_array(np.array(1)), helper.make_graph([], "g", [], [])])
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend([helper.make_attribute(name, value), *kept])


def _m_quant_params(c: _Case) -> None:
    g = c.m.graph
    if any(n.op_type == "DequantizeLinear" for n in g.node):
        scale = next(t for t in g.initializer if t.name == "s")
        count = c.rng.choice([1, 3, 7, 9, 16])
        scale.CopyFrom(numpy_helper.from_array(np.full([count] if c.rng.random() < 0.7 else [count, 1], 0.02, np.float32), "s"))


def _m_no_length(c: _Case) -> None:
    for t in c.m.graph.initializer:
        if t.data_location == TensorProto.EXTERNAL:
            kept = [(e.key, e.value) for e in t.external_data if e.key != "length"]
            del t.external_data[:]
            for key, value in kept:
                entry = t.external_data.add()
                entry.key, entry.value = key, value


def _m_drop_init(c: _Case) -> None:
    if c.m.graph.initializer:
        del c.m.graph.initializer[c.rng.randrange(len(c.m.graph.initializer))]


def _m_rename_init(c: _Case) -> None:
    inits = c.m.graph.initializer
    if inits:
        inits[c.rng.randrange(len(inits))].name = c.rng.choice(["x", "y", "", inits[0].name])


def _m_ir(c: _Case) -> None:
    c.m.ir_version = c.rng.choice([0, 1, 3, 4, 99, -1])


def _m_opset(c: _Case) -> None:
    c.m.opset_import[0].version = c.rng.choice([1, 7, 11, 999])


def _m_input_listed(c: _Case) -> None:
    if c.m.graph.initializer:
        t = c.rng.choice(c.m.graph.initializer)
        c.m.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))


def _m_raw_resize(c: _Case) -> None:
    if c.m.graph.initializer:
        t = c.rng.choice(c.m.graph.initializer)
        if t.HasField("raw_data"):
            t.raw_data = t.raw_data[: c.rng.randrange(len(t.raw_data) + 1)] + b"\0" * c.rng.choice([0, 0, 4, 7])


def _m_external(c: _Case) -> None:
    if not c.m.graph.initializer:
        return
    t = c.rng.choice(c.m.graph.initializer)
    t.data_location = TensorProto.EXTERNAL
    nbytes = str(int(np.prod(t.dims)) * 4)
    t.ClearField("raw_data")
    del t.external_data[:]
    for key, value in c.rng.choice([[("location", "../outside.bin")], [("location", "/etc/passwd")],
                                  [("location", "missing.bin")], [("location", "\x00sparsify-embedded"), ("offset", "0")],
                                  [("location", "\x00sparsify-embedded"), ("offset", "0"), ("length", nbytes)],
                                  [("location", "m.onnx.data"), ("offset", "0")],
                                  [("location", "m.onnx"), ("offset", "0"), ("length", "16")],
                                  [("location", "m.onnx"), ("offset", "-1")]]):
        entry = t.external_data.add()
        entry.key, entry.value = key, value


PROTO_MUTATIONS = {"dims": _m_dims, "dims_negative": _m_dims, "dtype": _m_dtype, "dangling": _m_dangling,
                   "attribute": _m_attribute, "quant_params": _m_quant_params, "no_length": _m_no_length,
                   "drop_init": _m_drop_init, "rename_init": _m_rename_init, "ir": _m_ir, "opset": _m_opset,
                   "input_listed": _m_input_listed, "raw_resize": _m_raw_resize, "external": _m_external}


def _proto_mutation(model: onnx.ModelProto, rng: random.Random) -> bytes:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    tensors = list(m.graph.initializer) + [a.t for n in m.graph.node for a in n.attribute if a.HasField("t")]
    kind = rng.choice(["dims", "dtype", "dangling", "attribute", "attribute", "attribute", "drop_init", "rename_init", "ir",
                       "opset", "dims_negative", "input_listed", "raw_resize", "external", "external", "quant_params",
                       "no_length"])
    PROTO_MUTATIONS[kind](_Case(m, tensors, rng, kind))
    return m.SerializeToString()


BYTE_MUTATIONS = [_bit_flips, _truncate, _corrupt_length, _corrupt_varint, _duplicate_field, _swap_fields]


def make_mutant(base_bytes: bytes, base_model: onnx.ModelProto, rng: random.Random) -> tuple[str, bytes]:
    if rng.random() < 0.5:
        return "proto", _proto_mutation(base_model, rng)
    mutation = rng.choice(BYTE_MUTATIONS)
    return mutation.__name__.lstrip("_"), mutation(base_bytes, rng)


# ---------------------------------------------------------------------------------------- one case

def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _run(args: list[str]) -> tuple[int, str]:
    from sparsify.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, err.getvalue()


def _loads_in_ort(path: Path) -> bool:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return True
    except Exception:  # noqa: BLE001 - any refusal counts as "does not load"
        return False


def _passes_checker(path: Path) -> bool:
    try:
        onnx.checker.check_model(str(path))
        return True
    except Exception:  # noqa: BLE001
        return False


def check_case(folder: Path) -> list[str]:
    """All three commands on ``folder/m.onnx``; the broken promises, as strings."""
    problems: list[str] = []
    model = folder / "m.onnx"
    inputs = {p.name: p for p in folder.iterdir()}
    original = _digest(folder)
    input_checker, input_ort = _passes_checker(model), _loads_in_ort(model)
    runs = [("prune --no-verify", ["prune", str(model), "--no-verify", "-o", str(folder / "a.onnx")], "a"),
            ("prune", ["prune", str(model), "-o", str(folder / "b.onnx")], "b"),
            ("check", ["check", str(model), "--report", str(folder / "c.json")], "c")]
    for label, args, stem in runs:
        before = _digest(folder)
        code, err = _run(args)
        after = _digest(folder)
        if code not in (0, 2, 3):
            problems.append(f"{label}: exit {code}: {err.strip()[:300]}")
        if "Traceback" in err or (code != 0 and len(err.strip().splitlines()) != 1):
            problems.append(f"{label}: not one line of error: {err.strip()[:300]}")
        if {k: v for k, v in after.items() if k in original} != original:
            problems.append(f"{label}: an input file changed")
        if code == 2 and after != before:
            problems.append(f"{label}: exit 2 but files changed: {sorted(set(after) ^ set(before))}")
        if code == 0 and stem in ("a", "b"):
            out = folder / f"{stem}.onnx"
            if input_checker and not _passes_checker(out):
                problems.append(f"{label}: output fails onnx.checker though the input passes")
            if input_ort and not _loads_in_ort(out):
                problems.append(f"{label}: output does not load in ONNX Runtime though the input does")
        if code == 0 and stem == "a":
            produced = {k: v for k, v in after.items() if k.startswith("a.onnx")}
            again, err2 = _run(args)
            redo = {k: v for k, v in _digest(folder).items() if k.startswith("a.onnx")}
            if again != 0 or redo != produced:
                problems.append(f"{label}: re-run not byte-identical (exit {again}: {err2.strip()[:200]})")
    extra = sorted(p for p in os.listdir(folder) if p.endswith(".sparsify-tmp"))
    if extra:
        problems.append(f"staging files left: {extra}")
    del inputs
    return problems


# ---------------------------------------------------------------------------------------- the driver

def _write_case(folder: Path, data: bytes, external: bytes | None) -> None:
    folder.mkdir()
    (folder / "m.onnx").write_bytes(data)
    if external is not None:
        (folder / "m.onnx.data").write_bytes(external)


def _bases(workdir: Path) -> list[tuple[str, onnx.ModelProto, bytes, bytes | None]]:
    bases = []
    for name, build in BASES.items():
        model = build()
        bases.append((name, model, model.SerializeToString(), None))
    for name in EXTERNAL_BASES:
        folder = workdir / f"base_ext_{name}"
        folder.mkdir()
        onnx.save(BASES[name](), str(folder / "m.onnx"), save_as_external_data=True, location="m.onnx.data", size_threshold=0)
        data = (folder / "m.onnx").read_bytes()
        bases.append((f"{name}+external", onnx.load(str(folder / "m.onnx"), load_external_data=False), data,
                      (folder / "m.onnx.data").read_bytes()))
    return bases


def _child(folder: Path, result: Path) -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        problems = check_case(folder)
    except BaseException as exc:  # noqa: BLE001 - a crash of the harness itself is a finding too
        problems = [f"harness: {type(exc).__name__}: {exc}"]
    result.write_text(json.dumps(problems))
    os._exit(0)


def fuzz(cases: int, seed: int, workers: int, keep: Path | None) -> int:
    rng = random.Random(seed)
    root = Path(tempfile.mkdtemp(prefix="sparsify-fuzz-"))
    bases = _bases(root)
    running: dict[int, tuple[int, str, Path, float]] = {}
    failures = 0
    counts: dict[str, int] = {}
    started = time.monotonic()

    def reap(block: bool) -> None:
        nonlocal failures
        for pid, (index, label, folder, deadline) in list(running.items()):
            done, _ = os.waitpid(pid, 0 if block and len(running) == 1 else os.WNOHANG)
            if not done and time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                problems = [f"hang: no result within {CASE_TIMEOUT_S} s"]
            elif not done:
                continue
            else:
                result = folder / "result.json"
                problems = json.loads(result.read_text()) if result.exists() else ["child died without a result"]
            del running[pid]
            if problems:
                failures += 1
                print(json.dumps({"case": index, "mutation": label, "problems": problems}), flush=True)
                if keep is not None:
                    os.system(f"cp -r {folder} {keep}/case{index}")  # noqa: S605 - test tool
            os.system(f"rm -rf {folder}")  # noqa: S605

    for index in range(cases):
        name, model, data, external = bases[index % len(bases)]
        mutation, mutant = make_mutant(data, model, rng)
        counts[mutation] = counts.get(mutation, 0) + 1
        folder = root / f"case{index}"
        _write_case(folder, mutant, external)
        while len(running) >= workers:
            reap(block=False)
            time.sleep(0.002)
        pid = os.fork()
        if pid == 0:
            _child(folder, folder / "result.json")
        running[pid] = (index, f"{name}/{mutation}", folder, time.monotonic() + CASE_TIMEOUT_S)
    while running:
        reap(block=False)
        time.sleep(0.002)
    elapsed = time.monotonic() - started
    os.system(f"rm -rf {root}")  # noqa: S605
    print(json.dumps({"summary": True, "cases": cases, "bases": len(bases), "failed": failures, "seconds": round(elapsed, 1),
                      "mutations": counts}), flush=True)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--keep", type=Path, help="copy failing cases here")
    args = parser.parse_args(argv)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    import onnxruntime  # noqa: F401 - imported once here, before forking

    import sparsify.cli
    import sparsify.verify.parity  # noqa: F401

    sparsify.cli.build_parser()  # plugin discovery and parser imports happen once, before forking
    if os.environ.get("SPARSIFY_VALIDATE_REPORTS"):  # the test suite validates every report: load it once
        from sparsify.report import _validator

        _validator()

    return fuzz(args.cases, args.seed, args.workers, args.keep)


if __name__ == "__main__":
    sys.exit(main())
