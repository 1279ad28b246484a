"""Dense vs sparse parity in ONNX Runtime: per-output metrics and the gates on them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from sparsify.io.jsonsafe import json_safe
from sparsify.verify.feeds import CannotMakeInputs, load_feeds, random_feeds

__all__ = ["Gate", "OutputParity", "ParityResult", "apply_gates", "check_parity", "metrics"]


@dataclass
class OutputParity:
    name: str
    max_abs_diff: float
    rel_l2_error: float
    cosine_similarity: float
    top1_agreement: float | None  # only for outputs that look like class scores [batch, classes]
    # Non-finite values (NaN, +-inf) count: a mismatch makes rel_l2_error and max_abs_diff inf
    # and fails every gate.  Values non-finite in both with the same value (NaN/NaN, inf/inf) match.
    nonfinite_sparse_only: int = 0  # non-finite in the candidate where the dense output is finite
    nonfinite_dense_only: int = 0  # non-finite in the dense output where the candidate is finite
    nonfinite_differing: int = 0  # non-finite in both but different (NaN vs inf, +inf vs -inf)

    @property
    def nonfinite_mismatches(self) -> int:
        return self.nonfinite_sparse_only + self.nonfinite_dense_only + self.nonfinite_differing


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
        """JSON-ready: non-finite floats become the strings "inf", "-inf", "nan" (JSON has no
        such numbers)."""
        return json_safe(asdict(self))


def _looks_like_class_scores(array: np.ndarray) -> bool:
    return array.ndim == 2 and array.shape[1] >= 2 and np.issubdtype(array.dtype, np.floating)


def metrics(name: str, dense: np.ndarray, sparse: np.ndarray) -> OutputParity:
    """Parity of one output.  Where both are finite: max |d|, relative L2, cosine.  Every
    position where exactly one side is non-finite, or both are but differ, is counted, and
    any such position makes the relative error (and max |d|) inf."""
    d, s = dense.astype(np.float64).ravel(), sparse.astype(np.float64).ravel()
    if d.shape != s.shape:
        raise ValueError(f"output {name!r}: dense has {d.size} values, the candidate {s.size}")
    d_ok, s_ok = np.isfinite(d), np.isfinite(s)
    sparse_only = int(np.count_nonzero(d_ok & ~s_ok))
    dense_only = int(np.count_nonzero(~d_ok & s_ok))
    both = ~d_ok & ~s_ok
    same = (np.isnan(d) & np.isnan(s)) | (d == s)
    differing = int(np.count_nonzero(both & ~same))
    finite = d_ok & s_ok
    d, s = d[finite], s[finite]
    diff = d - s
    norm_d, norm_s = float(np.linalg.norm(d)), float(np.linalg.norm(s))
    max_abs = float(np.max(np.abs(diff))) if diff.size else 0.0
    rel = float(np.linalg.norm(diff) / norm_d) if norm_d > 0 else (0.0 if norm_s == 0 else float("inf"))
    if norm_d > 0 and norm_s > 0:
        cosine = float(np.dot(d, s) / (norm_d * norm_s))
    else:
        cosine = 1.0 if norm_d == norm_s else 0.0
    if sparse_only + dense_only + differing:
        max_abs = rel = float("inf")
    top1 = None
    if _looks_like_class_scores(dense) and dense.shape == sparse.shape and dense.shape[0] > 0:
        agree = np.argmax(dense, axis=-1) == np.argmax(sparse, axis=-1)
        # A row whose scores mismatch in finiteness has no meaningful argmax: it disagrees.
        row_bad = (np.isfinite(dense) != np.isfinite(sparse)).any(axis=-1)
        top1 = float(np.mean(agree & ~row_bad))
    return OutputParity(name, max_abs, rel, cosine, top1, sparse_only, dense_only, differing)


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


def _nonfinite_reason(result: ParityResult) -> str:
    bad = [o for o in result.outputs if o.nonfinite_mismatches]
    if not bad:
        return ""
    o = bad[0]
    return (f"output {o.name!r}: {o.nonfinite_sparse_only} value(s) non-finite only in the candidate, "
            f"{o.nonfinite_dense_only} only in the dense model, {o.nonfinite_differing} differing")


def apply_gates(result: ParityResult, max_rel_error: float | None, min_top1: float | None) -> None:
    """Append the requested gates (evaluated on result.outputs) to result.gates.  A
    non-finite mismatch in any output fails every gate."""
    nonfinite = _nonfinite_reason(result) if result.verified else ""
    if max_rel_error is not None:
        value = max((o.rel_l2_error for o in result.outputs), default=None) if result.verified else None
        reason = nonfinite or ("" if value is not None else f"not evaluated: {result.reason or 'no outputs'}")
        passed = value is not None and value <= max_rel_error and not nonfinite
        result.gates.append(Gate("max_rel_error", max_rel_error, value, passed, reason))
    if min_top1 is not None:
        values = [o.top1_agreement for o in result.outputs if o.top1_agreement is not None]
        value = min(values) if values and result.verified else None
        if nonfinite:
            reason = nonfinite
        elif value is None:
            reason = f"not evaluated: {result.reason}" if not result.verified else "not evaluated: no output looks like class scores [batch, classes]"
        else:
            reason = ""
        passed = value is not None and value >= min_top1 and not nonfinite
        result.gates.append(Gate("min_top1_agreement", min_top1, value, passed, reason))


def check_parity(dense_path: Path, sparse_path: Path, *, input_shapes: dict[str, list[int]],
                 inputs_npz: str | None, seed: int, max_rel_error: float | None = None,
                 min_top1: float | None = None, inputs_label: str | None = None) -> ParityResult:
    """Run both models on the same inputs.  ORT failing on the *dense* model is "not
    verified" (bf16 compute, custom domains); it failing only on the sparse one is a bug."""
    result = ParityResult(verified=False, inputs=inputs_label or (str(inputs_npz) if inputs_npz else "random"))
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
