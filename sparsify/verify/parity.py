"""Dense vs sparse parity in ONNX Runtime: both models on the same inputs, then the metrics
and gates of ``verify/metrics.py``."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from sparsify.io.npz import ArraySource, source_name
from sparsify.verify.feeds import CannotMakeInputs, load_feeds, random_feeds
from sparsify.verify.metrics import Gate, OutputParity, ParityResult, apply_gates, compare_runs, metrics

__all__ = ["Gate", "OutputParity", "ParityResult", "apply_gates", "check_parity", "compare_runs", "metrics"]


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 4
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _first_line(exc: BaseException) -> str:
    """ONNX Runtime's message on one line: its first line plus the lines that name what is
    wrong (``index: 2 Got: 31 Expected: 32``), never only the closing advice."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    detail = [line for line in lines[1:] if any(w in line for w in ("Got", "Expected", "index", "invalid", "mismatch"))]
    return "; ".join([lines[0], *detail])[:400]


def check_parity(dense_path: Path, sparse_path: Path, *, input_shapes: dict[str, list[int]],
                 inputs_npz: ArraySource | None, seed: int, max_rel_error: float | None = None,
                 min_top1: float | None = None, inputs_label: str | None = None) -> ParityResult:
    """Run both models on the same inputs.  ORT failing on the *dense* model is "not
    verified" (bf16 compute, custom domains); it failing only on the sparse one is a bug."""
    result = ParityResult(verified=False, inputs=inputs_label or (source_name(inputs_npz, "inputs") if inputs_npz is not None else "random"))
    try:
        dense = _session(dense_path)
    except Exception as exc:  # noqa: BLE001 - ORT raises many types; all mean "cannot run"
        result.reason = f"ONNX Runtime cannot run the dense model: {_first_line(exc)}"
        apply_gates(result, max_rel_error, min_top1)
        return result
    try:
        feeds = load_feeds(inputs_npz, dense) if inputs_npz is not None else random_feeds(dense, input_shapes, seed, result.notes)
    except CannotMakeInputs as exc:
        result.reason = str(exc)
        apply_gates(result, max_rel_error, min_top1)
        return result
    try:
        dense_out = [dense.run(None, feed) for feed in feeds]
    except Exception as exc:  # noqa: BLE001
        result.reason = f"ONNX Runtime cannot run the dense model on these inputs: {_first_line(exc)}"
        apply_gates(result, max_rel_error, min_top1)
        return result
    del dense
    sparse = _session(sparse_path)
    sparse_out = [sparse.run(None, feed) for feed in feeds]
    names = [o.name for o in sparse.get_outputs()]
    compare_runs(result, names, [dict(zip(names, run, strict=True)) for run in dense_out],
                 [dict(zip(names, run, strict=True)) for run in sparse_out])
    apply_gates(result, max_rel_error, min_top1)
    return result
