"""Dense vs sparse parity in ONNX Runtime: per-output metrics and the gates on them."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from sparsify.verify.feeds import CannotMakeInputs, load_feeds, random_feeds

__all__ = ["Gate", "OutputParity", "ParityResult", "apply_gates", "check_parity", "metrics"]

logger = logging.getLogger(__name__)


@dataclass
class OutputParity:
    name: str
    max_abs_diff: float
    rel_l2_error: float
    cosine_similarity: float
    top1_agreement: float | None  # only for outputs that look like class scores [batch, classes]


@dataclass
class Gate:
    name: str  # "max_rel_error" or "min_top1_agreement"
    threshold: float
    value: float | None
    passed: bool
    reason: str = ""


@dataclass
class ParityResult:
    verified: bool
    reason: str = ""
    provider: str = "CPUExecutionProvider"
    inputs: str = "random"
    runs: int = 0  # ORT runs per model (one per stacked sample, or one batch)
    outputs: list[OutputParity] = field(default_factory=list)
    gates: list[Gate] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def gates_passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def to_dict(self) -> dict:
        return asdict(self)


def _looks_like_class_scores(array: np.ndarray) -> bool:
    return array.ndim == 2 and array.shape[1] >= 2 and np.issubdtype(array.dtype, np.floating)


def metrics(name: str, dense: np.ndarray, sparse: np.ndarray) -> OutputParity:
    d, s = dense.astype(np.float64).ravel(), sparse.astype(np.float64).ravel()
    finite = np.isfinite(d) & np.isfinite(s)
    d, s = d[finite], s[finite]
    diff = d - s
    norm_d, norm_s = float(np.linalg.norm(d)), float(np.linalg.norm(s))
    max_abs = float(np.max(np.abs(diff))) if diff.size else 0.0
    rel = float(np.linalg.norm(diff) / norm_d) if norm_d > 0 else (0.0 if norm_s == 0 else float("inf"))
    if norm_d > 0 and norm_s > 0:
        cosine = float(np.dot(d, s) / (norm_d * norm_s))
    else:
        cosine = 1.0 if norm_d == norm_s else 0.0
    top1 = None
    if _looks_like_class_scores(dense):
        top1 = float(np.mean(np.argmax(dense, axis=-1) == np.argmax(sparse, axis=-1)))
    return OutputParity(name, max_abs, rel, cosine, top1)


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[-1] if text else type(exc).__name__)[:300]


def apply_gates(result: ParityResult, max_rel_error: float | None, min_top1: float | None) -> None:
    """Append the requested gates (evaluated on result.outputs) to result.gates."""
    if max_rel_error is not None:
        value = max((o.rel_l2_error for o in result.outputs), default=None) if result.verified else None
        reason = "" if value is not None else f"not evaluated: {result.reason or 'no outputs'}"
        result.gates.append(Gate("max_rel_error", max_rel_error, value, value is not None and value <= max_rel_error, reason))
    if min_top1 is not None:
        values = [o.top1_agreement for o in result.outputs if o.top1_agreement is not None]
        value = min(values) if values and result.verified else None
        if value is None:
            reason = f"not evaluated: {result.reason}" if not result.verified else "not evaluated: no output looks like class scores [batch, classes]"
        else:
            reason = ""
        result.gates.append(Gate("min_top1_agreement", min_top1, value, value is not None and value >= min_top1, reason))


def check_parity(dense_path: Path, sparse_path: Path, *, input_shapes: dict[str, list[int]],
                 inputs_npz: str | None, seed: int, max_rel_error: float | None = None,
                 min_top1: float | None = None) -> ParityResult:
    """Run both models on the same inputs.  ORT failing on the *dense* model is "not
    verified" (bf16 compute, custom domains); it failing only on the sparse one is a bug."""
    result = ParityResult(verified=False, inputs=str(inputs_npz) if inputs_npz else "random")
    try:
        dense = _session(dense_path)
    except Exception as exc:  # noqa: BLE001 - ORT raises many types; all mean "cannot run"
        result.reason = f"ONNX Runtime cannot run the dense model: {_first_line(exc)}"
        apply_gates(result, max_rel_error, min_top1)
        return result
    try:
        feeds = load_feeds(inputs_npz, dense) if inputs_npz else random_feeds(dense, input_shapes, seed, result.notes)
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
    for index, name in enumerate(names):
        d = np.concatenate([np.atleast_1d(run[index]) for run in dense_out])
        s = np.concatenate([np.atleast_1d(run[index]) for run in sparse_out])
        result.outputs.append(metrics(name, d, s))
    result.verified, result.runs = True, len(feeds)
    apply_gates(result, max_rel_error, min_top1)
    return result
