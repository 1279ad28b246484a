"""Inputs for the parity check: random ones shaped from the model, or the user's .npz."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort

from sparsify.errors import UsageError
from sparsify.io.npz import ArraySource, read_arrays, scan_arrays, source_name

__all__ = ["CannotMakeInputs", "InputSpec", "check_arrays_fit", "check_input_shapes", "check_npz_inputs", "feeds_from_arrays", "load_feeds", "parse_input_shapes",
           "random_feeds", "specs_from_graph", "specs_from_session"]


class CannotMakeInputs(Exception):
    """Random inputs cannot be made for this model (the parity check is then "not verified")."""

_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32, "tensor(uint64)": np.uint64, "tensor(bool)": np.bool_,
}


def parse_input_shapes(specs: list[str] | None, label: str = "--input-shape") -> dict[str, list[int]]:
    """``["x:1x3x224x224", ...]`` -> {"x": [1, 3, 224, 224]}; errors name the option as ``label``."""
    shapes: dict[str, list[int]] = {}
    for spec in specs or []:
        match = re.fullmatch(r"(.+):(\d+(?:[x,]\d+)*)", spec.strip())
        if not match:
            raise UsageError(f"invalid {label} {spec!r}: expected NAME:1x3x224x224")
        shapes[match.group(1)] = [int(d) for d in re.split(r"[x,]", match.group(2))]
    return shapes


def random_feeds(session: ort.InferenceSession, shapes: dict[str, list[int]], seed: int,
                 notes: list[str]) -> list[dict[str, np.ndarray]]:
    """One batch of seeded random inputs; dynamic dims without --input-shape become 1."""
    rng = np.random.default_rng(seed)
    feed: dict[str, np.ndarray] = {}
    names = {i.name for i in session.get_inputs()}
    unknown = sorted(set(shapes) - names)
    if unknown:
        raise UsageError(f"--input-shape names {unknown[0]!r}, which is not a model input ({', '.join(sorted(names))})")
    for info in session.get_inputs():
        dtype = _ORT_TYPES.get(info.type)
        if dtype is None:
            raise CannotMakeInputs(f"input {info.name!r} has type {info.type}, which random inputs cannot fill (use --inputs)")
        if info.name in shapes:
            shape = shapes[info.name]
            if len(shape) != len(info.shape):
                raise UsageError(f"--input-shape {info.name}: rank {len(shape)}, the model says {len(info.shape)}")
        else:
            shape = []
            for dim in info.shape:
                if isinstance(dim, int) and dim >= 0:
                    shape.append(dim)
                else:
                    shape.append(1)
                    notes.append(f"input {info.name!r}: dynamic dimension {dim!r} set to 1 (use --input-shape)")
        if np.issubdtype(dtype, np.floating):
            feed[info.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype is np.bool_:
            feed[info.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            # Small non-negative integers are valid token ids, masks and indices alike.
            feed[info.name] = rng.integers(0, 2, shape).astype(dtype)
    return [feed]


@dataclass(frozen=True)
class InputSpec:
    """One graph input as the checks need it: name, numpy dtype (None: unknown), dims (None: dynamic)."""

    name: str
    dtype: type | None
    shape: tuple[int | None, ...] | None  # None: rank unknown


def specs_from_session(session: ort.InferenceSession) -> list[InputSpec]:
    return [InputSpec(i.name, _ORT_TYPES.get(i.type),
                      tuple(d if isinstance(d, int) and d >= 0 else None for d in i.shape))
            for i in session.get_inputs()]


def specs_from_graph(graph: onnx.GraphProto) -> list[InputSpec]:
    """The graph's run-time inputs (an initializer listed as an input is never required: before IR 4
    it is no input at all, from IR 4 feeding it is optional)."""
    initializers = {t.name for t in graph.initializer}
    specs = []
    for value in graph.input:
        if value.name in initializers:
            continue  # before IR 4 a listed initializer is no input; from IR 4 feeding it is optional
        tensor = value.type.tensor_type
        try:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).type if tensor.elem_type else None
        except (KeyError, TypeError, ValueError):
            dtype = None
        shape = tuple(int(d.dim_value) if d.HasField("dim_value") and d.dim_value >= 0 else None
                      for d in tensor.shape.dim) if tensor.HasField("shape") else None
        specs.append(InputSpec(value.name, dtype, shape))
    return specs


_ACCEPTS = {"f": "fiub", "i": "iub", "u": "iub", "b": "b"}


def check_arrays_fit(path: str, arrays: dict[str, tuple[tuple[int, ...], np.dtype]],
                     specs: list[InputSpec]) -> int:
    """Check (shape, dtype) of each input's array against the graph input; return the sample
    count.  An array with one more axis than the input holds samples along axis 0; one of the
    input's rank is a single batch (inputs of unknown rank are not checked)."""
    missing = [s.name for s in specs if s.name not in arrays]
    if missing:
        raise UsageError(f"{path}: no array for model input {missing[0]!r} (keys: {', '.join(sorted(arrays)) or 'none'})")
    counts = set()
    for spec in specs:
        shape, dtype = arrays[spec.name]
        if spec.dtype is not None:
            want = np.dtype(spec.dtype).kind
            if dtype.kind not in _ACCEPTS.get(want, want):
                raise UsageError(f"{path}: input {spec.name!r}: array dtype {dtype} does not fit the model's "
                                 f"{np.dtype(spec.dtype)} input")
        if spec.shape is None:
            continue
        rank = len(spec.shape)
        if len(shape) not in (rank, rank + 1):
            raise UsageError(f"{path}: input {spec.name!r}: array of rank {len(shape)}; the model input has rank "
                             f"{rank} (or {rank + 1} with samples stacked along axis 0)")
        stacked = len(shape) == rank + 1
        if stacked and shape[0] == 0:
            raise UsageError(f"{path}: input {spec.name!r} holds no samples (axis 0 has length 0)")
        sample = shape[1:] if stacked else shape
        for axis, (want_dim, got) in enumerate(zip(spec.shape, sample, strict=True)):
            if want_dim is not None and want_dim != got:
                raise UsageError(f"{path}: input {spec.name!r}: axis {axis} has length {got}, the model expects {want_dim}")
        counts.add(shape[0] if stacked else 1)
    if len(counts) > 1:
        raise UsageError(f"{path}: inputs hold different numbers of samples ({sorted(counts)})")
    return counts.pop() if counts else 1


def load_feeds(source: ArraySource, session: ort.InferenceSession) -> list[dict[str, np.ndarray]]:
    """Samples from an .npz (keys = input names), checked against the model's inputs first.

    An array with one more axis than the input holds samples stacked along axis 0 (each is
    run on its own); an array of the input's rank is run as one batch.
    """
    return feeds_from_arrays(source_name(source, "inputs"), read_arrays(source, "inputs"), session)


def load_feeds_for_graph(source: ArraySource, graph: onnx.GraphProto) -> list[dict[str, np.ndarray]]:
    """:func:`load_feeds` against the graph's declared inputs (no session, so no weights loaded)."""
    return _feeds(source_name(source, "inputs"), read_arrays(source, "inputs"), specs_from_graph(graph))


def feeds_from_arrays(path: str, arrays: dict[str, np.ndarray],
                      session: ort.InferenceSession) -> list[dict[str, np.ndarray]]:
    """:func:`load_feeds` on arrays already read from ``path`` (how errors name them)."""
    return _feeds(path, arrays, specs_from_session(session))


def _feeds(path: str, arrays: dict[str, np.ndarray], specs: list[InputSpec]) -> list[dict[str, np.ndarray]]:
    arrays = dict(arrays)
    count = check_arrays_fit(path, {k: (a.shape, a.dtype) for k, a in arrays.items()}, specs)
    for spec in specs:
        array = arrays[spec.name]
        if spec.shape is None or array.ndim != len(spec.shape) + 1:
            array = array[None]
        if spec.dtype is not None and array.dtype != spec.dtype:
            array = array.astype(spec.dtype)
        arrays[spec.name] = array
    return [{spec.name: arrays[spec.name][i] for spec in specs} for i in range(count)]


def check_input_shapes(shapes: dict[str, list[int]], graph: onnx.GraphProto, label: str = "--input-shape") -> None:
    """--input-shape against the graph's inputs, before any work: the name exists, the rank
    matches, and every dimension the model fixes is kept."""
    specs = {s.name: s for s in specs_from_graph(graph)}
    for name, shape in shapes.items():
        spec = specs.get(name)
        if spec is None:
            raise UsageError(f"{label} names {name!r}, which is not a model input ({', '.join(sorted(specs)) or 'none'})")
        if spec.shape is None:
            continue
        if len(shape) != len(spec.shape):
            raise UsageError(f"{label} {name}: rank {len(shape)}, the model input has rank {len(spec.shape)}")
        for axis, (want, got) in enumerate(zip(spec.shape, shape, strict=True)):
            if want is not None and want != got:
                raise UsageError(f"{label} {name}: axis {axis} is fixed at {want} in the model, got {got}")


def check_npz_inputs(source: ArraySource, graph: onnx.GraphProto, extra_keys: tuple[str, ...] = ()) -> None:
    """Up-front check of model inputs (an npz, from its headers alone, or arrays) against the graph."""
    headers = scan_arrays(source, "inputs")
    check_arrays_fit(source_name(source, "inputs"), {k: v for k, v in headers.items() if k not in extra_keys}, specs_from_graph(graph))
