"""ONNX Runtime sessions of the model file itself, with the changed weights handed over in memory.

An accuracy budget evaluates the model many times, each time with a different set of weights
pruned.  ``InMemoryModel`` loads the whole model as a protobuf, keeps a copy of every weight's
original bytes and serialises the whole model for every session: about four copies of the
weights, and protobuf's 2 GB limit.  ``FileModel`` makes each session from the model's own
path (ONNX Runtime reads the file and its external data itself) and passes only the weights
that differ from the file with ``SessionOptions.add_initializer``, as arrays that view the
pruned bits (no copy).  So a budget holds ONNX Runtime's copy of the model plus the pruned
weights, and external-data models over 2 GB work.

It applies where every changed tensor is an initializer of the main graph with a plain numeric
type; otherwise (a weight in a Constant node or a subgraph, bfloat16, 4-bit types)
:func:`file_model_or_none` returns None and the caller uses ``InMemoryModel``.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto

from sparsify.calibrate.session import calibration_options

__all__ = ["FileModel", "file_model_or_none", "release_memory"]

_NUMPY: dict[int, np.dtype] = {
    int(code): np.dtype(kind) for code, kind in (
        (TensorProto.FLOAT, np.float32), (TensorProto.FLOAT16, np.float16), (TensorProto.DOUBLE, np.float64),
        (TensorProto.INT8, np.int8), (TensorProto.UINT8, np.uint8), (TensorProto.INT16, np.int16),
        (TensorProto.UINT16, np.uint16), (TensorProto.INT32, np.int32), (TensorProto.INT64, np.int64))}


class FileModel:
    """Sessions of ``path`` with some initializers replaced (by name) in memory."""

    def __init__(self, path: Path, initializers: dict[str, TensorProto]):
        self.path = path
        self._tensors = initializers  # the main graph's initializers (weightless protos suffice)
        self._base: dict[str, np.ndarray] = {}  # dense values that differ from the file (permutation)
        self._current: dict[str, np.ndarray] = {}  # pruned / corrected values

    def _typed(self, name: str, bits: np.ndarray) -> np.ndarray:
        tensor = self._tensors[name]
        dtype = _NUMPY[tensor.data_type]
        flat = np.ascontiguousarray(bits).reshape(-1)
        if flat.dtype != dtype:
            flat = flat.view(np.uint8).view(dtype)  # bits as stored: same bytes, the tensor's type
        return flat.reshape(tuple(tensor.dims))

    def set_bits(self, name: str, bits: np.ndarray | None) -> None:
        """Replace weight ``name`` with ``bits`` (None: back to its dense value)."""
        if bits is None:
            self._current.pop(name, None)
        else:
            self._current[name] = self._typed(name, bits)

    def rebase(self, name: str, bits: np.ndarray) -> None:
        """Make ``bits`` this weight's dense value (after a channel permutation)."""
        self._base[name] = self._typed(name, bits)
        self._current.pop(name, None)

    def session(self) -> ort.InferenceSession:
        options = calibration_options()
        # pre-packing copies every MatMul weight into a packed layout: on a ViT-B/16 shape it raised
        # a session's peak from 1.3 to 2.0 GB at the same speed, for sessions that run a few batches
        options.add_session_config_entry("session.disable_prepacking", "1")
        values = {**self._base, **self._current}
        # the OrtValues view the arrays: they must outlive the session, so the session keeps them
        keep = [ort.OrtValue.ortvalue_from_numpy(array) for array in values.values()]
        for name, value in zip(values, keep, strict=True):
            options.add_initializer(name, value)
        session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        session._sparsify_initializers = keep  # type: ignore[attr-defined]
        return session


def release_memory() -> None:
    """Give the heap that a dropped session freed back to the operating system (glibc keeps it
    otherwise: 12 sessions of a 326 MB model left 1.2 GB resident, 64 MB after this)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def file_model_or_none(path: Path, initializers: Iterable[TensorProto], changing: Iterable[str]) -> FileModel | None:
    """A :class:`FileModel` when every tensor in ``changing`` is one of ``initializers`` (the main
    graph's) with a plain numeric type; None otherwise."""
    by_name = {t.name: t for t in initializers}
    for name in changing:
        tensor = by_name.get(name)
        if tensor is None or tensor.data_type not in _NUMPY:
            return None
    return FileModel(path, by_name)
