"""ONNX Runtime sessions over an in-memory model whose weights we swap."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto

from sparsify.errors import UsageError
from sparsify.io.graph_walk import stored_tensors

__all__ = ["InMemoryModel", "calibration_options"]


def calibration_options() -> ort.SessionOptions:
    """Options for the sessions that run calibration data: quiet, and without ONNX Runtime's
    spinning workers.  Calibration alternates runs with this process's own linear algebra
    (Gram products, factorisations, OBS); by default ONNX Runtime's idle workers keep spinning on
    the cores for a while after each run ("session.intra_op.allow_spinning", docs/sources.md#ort-spinning),
    taking them from the BLAS threads that need them next."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class InMemoryModel:
    """A fully loaded model (external data included) whose stored weights can be replaced
    by pruned bit patterns before a session is made."""

    def __init__(self, path):
        try:
            self.proto = onnx.load(str(path))
        except Exception as exc:  # noqa: BLE001
            raise UsageError(f"data-aware pruning needs the model in memory: {exc}") from None
        if self.proto.ByteSize() >= 2**31 - 1:
            raise UsageError("data-aware pruning and accuracy budgets support models below 2 GB")
        self._tensors: dict[str, TensorProto] = stored_tensors(self.proto.graph)
        self._original = {name: bytes(t.raw_data) for name, t in self._tensors.items() if t.HasField("raw_data")}

    def set_bits(self, name: str, bits: np.ndarray | None) -> None:
        """Replace weight ``name`` with ``bits`` (None: restore the original)."""
        tensor = self._tensors[name]
        if bits is None:
            if name in self._original:
                tensor.raw_data = self._original[name]
            return
        if name not in self._original:  # typed-field storage: keep its bytes so it can be restored
            self._original[name] = onnx.numpy_helper.to_array(tensor).tobytes()
        for field in ("float_data", "int32_data", "int64_data", "double_data"):
            tensor.ClearField(field)
        tensor.raw_data = np.ascontiguousarray(bits).tobytes()

    def rebase(self, name: str, bits: np.ndarray) -> None:
        """Make ``bits`` this weight's dense value (used after a channel permutation)."""
        self.set_bits(name, bits)
        self._original[name] = np.ascontiguousarray(bits).tobytes()

    def session(self, extra_outputs: list[str] | None = None, only: bool = False) -> ort.InferenceSession:
        """A session; ``extra_outputs`` become graph outputs too (``only``: the sole outputs,
        so ONNX Runtime drops every node they do not need)."""
        model = self.proto
        if extra_outputs:
            model = onnx.ModelProto()
            model.CopyFrom(self.proto)
            if only:
                del model.graph.output[:]
            present = {o.name for o in model.graph.output}
            for name in extra_outputs:
                if name not in present:
                    model.graph.output.append(onnx.ValueInfoProto(name=name))
                    present.add(name)
        return ort.InferenceSession(model.SerializeToString(), calibration_options(),
                                    providers=["CPUExecutionProvider"])
