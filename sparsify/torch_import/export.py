"""Export an ``nn.Module`` to ONNX with either PyTorch exporter."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

from sparsify.errors import MissingComponent, UsageError

__all__ = ["EXPORTERS", "export_to_onnx", "quiet_output", "require_torch"]

EXPORTERS = ("legacy", "dynamo")


def require_torch():
    try:
        import torch  # noqa: TID251 - this module is the lazy torch boundary
    except ImportError:
        raise MissingComponent("PyTorch is not installed: pip install 'sparsify[torch]'") from None
    return torch


@contextlib.contextmanager
def quiet_output() -> Iterator[list[str]]:
    """Silence what torch and its exporters print (Python and C++ alike, on fds 1 and 2, plus
    warnings and logging); the captured lines are handed back for error messages."""
    captured: list[str] = []
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile(mode="w+b") as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        previous = logging.root.manager.disable
        logging.disable(logging.CRITICAL)
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            logging.disable(previous)
            sink.seek(0)
            captured.extend(sink.read().decode("utf-8", "replace").splitlines())


def _failure(exc: BaseException, what: str) -> UsageError:
    message = str(exc).strip().splitlines()
    return UsageError(f"{what} failed: {type(exc).__name__}: {message[0][:300] if message else ''}".rstrip(": "))


def export_to_onnx(module, example_inputs: tuple, path: Path, exporter: str = "legacy", opset: int = 17, *,
                   input_names: list[str] | None = None, output_names: list[str] | None = None,
                   dynamic_axes: dict | None = None) -> Path:
    """``legacy`` = the TorchScript exporter (``dynamo=False``), ``dynamo`` = torch.export based
    (needs onnxscript).  They lay weights out differently (e.g. nn.Linear as Gemm(transB=1) or
    as MatMul with a transposed initializer); the mapping step does not assume either.  The
    exporters' own output is captured; a model that fails to run or export is a UsageError
    carrying the model's own message."""
    torch = require_torch()
    if exporter not in EXPORTERS:
        raise UsageError(f"unknown exporter {exporter!r}: choose from {', '.join(EXPORTERS)}")
    if exporter == "dynamo" and importlib.util.find_spec("onnxscript") is None:
        raise MissingComponent("the dynamo exporter needs onnxscript: pip install onnxscript")
    if not isinstance(example_inputs, tuple):
        example_inputs = (example_inputs,)
    if isinstance(module, torch.nn.Module):
        module = module.eval()
    elif exporter != "dynamo":
        raise UsageError("an ExportedProgram goes through the dynamo exporter")
    names = {"input_names": input_names, "output_names": output_names, "dynamic_axes": dynamic_axes}
    try:
        with torch.no_grad(), quiet_output():
            if exporter == "legacy":
                torch.onnx.export(module, example_inputs, str(path), opset_version=opset, dynamo=False,
                                  **{k: v for k, v in names.items() if v is not None})
            else:
                program = torch.onnx.export(module, example_inputs, dynamo=True, opset_version=max(opset, 18))
                program.save(str(path))
    except (UsageError, MissingComponent):
        raise
    except Exception as exc:  # noqa: BLE001 - the model's forward or the exporter failed: bad input
        raise _failure(exc, "exporting the model to ONNX") from None
    return path
