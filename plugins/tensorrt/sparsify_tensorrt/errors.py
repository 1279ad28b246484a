"""One line and the right exit code for a failed TensorRT build (Polygraphy wraps most failures
in ``PolygraphyException`` whose text is the last error TensorRT logged)."""

from __future__ import annotations

import re

from sparsify.plugin_api import InputError, MissingComponent, SparsifyError

__all__ = ["translate_build_error"]

_NO_GPU = re.compile(r"cuda (initialization|driver)|no cuda|cudaErrorNoDevice|no (cuda-capable|gpu) device|"
                     r"CUDA driver version is insufficient|libcuda", re.I)
_PARSER = re.compile(r"failed to parse onnx|onnx parser|ModelImporter|unsupported operator|While parsing node", re.I)


def _last_error_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if re.search(r"\[E\]|error", line, re.I)]
    return ((errors or lines or [""])[-1])[:300]


def translate_build_error(exc: BaseException, log: str = "") -> SparsifyError:
    """No usable GPU -> exit 5; TensorRT cannot parse/support the model -> exit 2 (bad input
    for TensorRT, with its reason); anything else -> exit 1 with TensorRT's last error."""
    text = f"{exc}\n{log}"
    detail = _last_error_line(str(exc)) or _last_error_line(log) or type(exc).__name__
    if _NO_GPU.search(text):
        return MissingComponent(f"sparsify build needs a usable NVIDIA GPU ({detail}); run it on a machine with an "
                                "NVIDIA GPU and driver, e.g. docker run --gpus all with docker/Dockerfile.tensorrt")
    if _PARSER.search(text):
        return InputError(f"TensorRT cannot build this model: {_last_error_line(log) or detail}")
    return SparsifyError(f"TensorRT build failed: {detail}")
