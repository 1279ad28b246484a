"""The model the data-aware pass works on, without loading it: weights stay in the file.

``StreamedModel`` knows the graph from the weightless skeleton and reads a stored tensor's
bytes only when a segment that uses it is built (``calibrate/segments.py``).  What the pass
changes — pruned weights, corrected biases, permuted (re-based) tensors — is kept by name.  So
memory holds one segment's weights at a time, and a model larger than RAM can be calibrated.
``in_memory()`` gives the whole model as an ``InMemoryModel`` where whole-model sessions are
needed (accuracy budgets; a graph that cannot be cut): loaded once, with every change applied,
and kept in step with the changes made after.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto

from sparsify.calibrate.file_session import FileModel, file_model_or_none
from sparsify.calibrate.session import InMemoryModel
from sparsify.io.graph_walk import stored_tensors, subgraphs
from sparsify.io.model import LoadedModel

__all__ = ["StreamedModel"]


def _restore(tensor: TensorProto, data: bytes) -> None:
    tensor.ClearField("external_data")
    tensor.ClearField("data_location")
    tensor.raw_data = data


class StreamedModel:
    """Current weights of a model read from its file on demand, with the pass's changes by name."""

    def __init__(self, loaded: LoadedModel):
        self.loaded = loaded
        self.proto = loaded.skeleton  # the graph (no weight bytes)
        self._stored = stored_tensors(loaded.skeleton.graph)  # name -> skeleton tensor
        self._base: dict[str, bytes] = {}  # re-based dense values (permutation)
        self._current: dict[str, bytes] = {}  # pruned / corrected values
        self._written: dict[str, Callable[[], bytes]] = {}  # values already in the output file: read back
        self._whole: InMemoryModel | None = None  # made by in_memory(), then kept in step

    def set_bits(self, name: str, bits: np.ndarray | None) -> None:
        """Replace weight ``name`` with ``bits`` (None: back to its dense value)."""
        self._written.pop(name, None)
        if bits is None:
            self._current.pop(name, None)
        else:
            self._current[name] = np.ascontiguousarray(bits).tobytes()
        if self._whole is not None:
            self._whole.set_bits(name, bits)

    def set_written(self, name: str, read_back: Callable[[], bytes]) -> None:
        """Weight ``name`` now has the value already written to the output: read it back when a
        segment needs it (nothing is kept in memory)."""
        self._current.pop(name, None)
        self._written[name] = read_back
        if self._whole is not None:
            self._whole.set_bits(name, np.frombuffer(read_back(), dtype=np.uint8))

    def rebase(self, name: str, bits: np.ndarray) -> None:
        """Make ``bits`` this weight's dense value (used after a channel permutation)."""
        self._base[name] = np.ascontiguousarray(bits).tobytes()
        self._current.pop(name, None)
        if self._whole is not None:
            self._whole.rebase(name, bits)

    def _bytes(self, name: str) -> bytes | None:
        """The current value of stored tensor ``name``, or None when the skeleton already holds
        it (typed fields)."""
        if name in self._written:
            return self._written[name]()
        if name in self._current:
            return self._current[name]
        if name in self._base:
            return self._base[name]
        original = self._stored.get(name)
        if original is None or self.loaded.location(original).kind == "inline":
            return None
        return self.loaded.read_bytes(original)

    def initializer(self, name: str, into: TensorProto | None = None) -> TensorProto:
        """A self-contained copy of stored tensor ``name`` with its current bytes (written into
        ``into``, e.g. a graph's new initializer entry, so the bytes are not copied again)."""
        tensor = TensorProto() if into is None else into
        tensor.CopyFrom(self._stored[name])
        data = self._bytes(name)
        if data is not None:
            _restore(tensor, data)
        return tensor

    def node(self, node: onnx.NodeProto, into: onnx.NodeProto | None = None) -> onnx.NodeProto:
        """A self-contained copy of a skeleton node: its Constant value and the tensors of its
        subgraphs carry their bytes (written into ``into`` when given)."""
        copy = onnx.NodeProto() if into is None else into
        copy.CopyFrom(node)
        self._fill(node, copy, constant_name=node.output[0] if node.op_type == "Constant" and node.output else None)
        return copy

    def _fill(self, original: onnx.NodeProto, copy: onnx.NodeProto, constant_name: str | None) -> None:
        for attr, attr_copy in zip(original.attribute, copy.attribute, strict=True):
            if attr.HasField("t"):
                name = constant_name if constant_name and attr.name == "value" else None
                data = self._bytes(name) if name else self._file_bytes(attr.t)
                if data is not None:
                    _restore(attr_copy.t, data)
            for tensor, tensor_copy in zip(attr.tensors, attr_copy.tensors, strict=True):
                data = self._file_bytes(tensor)
                if data is not None:
                    _restore(tensor_copy, data)
        for sub, sub_copy in zip(subgraphs(original), subgraphs(copy), strict=True):
            for tensor, tensor_copy in zip(sub.initializer, sub_copy.initializer, strict=True):
                data = self._file_bytes(tensor)
                if data is not None:
                    _restore(tensor_copy, data)
            for inner, inner_copy in zip(sub.node, sub_copy.node, strict=True):
                self._fill(inner, inner_copy, None)

    def _file_bytes(self, tensor: TensorProto) -> bytes | None:
        if self.loaded.location(tensor).kind == "inline":
            return None
        return self.loaded.read_bytes(tensor)

    def for_sessions(self) -> FileModel | InMemoryModel:
        """Whole-model sessions with every change applied, for an accuracy budget: sessions of the
        file with the changed weights passed in memory where possible (``FileModel``: no copy of
        the model in Python, no 2 GB limit), else the whole model loaded (``in_memory``)."""
        if self._whole is not None:
            return self._whole
        changed = {*self._base, *self._current, *self._written}
        model = file_model_or_none(self.loaded.path, self.proto.graph.initializer, changed)
        if model is None:
            return self.in_memory()
        self._apply_changes(model)
        return model

    def _apply_changes(self, model: FileModel | InMemoryModel) -> None:
        """Every change so far onto ``model`` (set_bits / rebase keep only an array's bytes: a
        uint8 view of them will do)."""
        for name, data in self._base.items():
            model.rebase(name, np.frombuffer(data, dtype=np.uint8))
        for name, data in self._current.items():
            model.set_bits(name, np.frombuffer(data, dtype=np.uint8))
        for name, read_back in self._written.items():
            model.set_bits(name, np.frombuffer(read_back(), dtype=np.uint8))

    def in_memory(self) -> InMemoryModel:
        """The whole model loaded (once), with every change applied (for whole-model sessions)."""
        if self._whole is not None:
            return self._whole
        memory = InMemoryModel(self.loaded.path)
        self._apply_changes(memory)
        self._whole = memory
        return memory
