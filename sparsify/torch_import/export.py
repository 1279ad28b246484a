"""Export an ``nn.Module`` to ONNX with either PyTorch exporter."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from sparsify.errors import MissingComponent, UsageError

__all__ = ["EXPORTERS", "export_to_onnx", "require_torch"]

EXPORTERS = ("legacy", "dynamo")


def require_torch():
    try:
        import torch  # noqa: TID251 - this module is the lazy torch boundary
    except ImportError:
        raise MissingComponent("PyTorch is not installed: pip install 'sparsify[torch]'") from None
    return torch


def export_to_onnx(module, example_inputs: tuple, path: Path, exporter: str = "legacy", opset: int = 17) -> Path:
    """``legacy`` = the TorchScript exporter (``dynamo=False``), ``dynamo`` = torch.export based
    (needs onnxscript).  They lay weights out differently (e.g. nn.Linear as Gemm(transB=1) or
    as MatMul with a transposed initializer); the mapping step does not assume either."""
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
    with torch.no_grad():
        if exporter == "legacy":
            torch.onnx.export(module, example_inputs, str(path), opset_version=opset, dynamo=False)
        else:
            program = torch.onnx.export(module, example_inputs, dynamo=True, opset_version=max(opset, 18))
            program.save(str(path))
    return path
