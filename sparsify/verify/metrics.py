"""Parity metrics and gates: how far a candidate's outputs are from the dense model's.

Pure numpy (no ONNX Runtime): the pass compares ONNX Runtime runs with it, build plugins
compare any runner's outputs (a TensorRT engine) with it, so every gate means the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from sparsify.io.jsonsafe import json_safe

__all__ = ["Gate", "OutputParity", "ParityResult", "apply_gates", "compare_runs", "metrics"]


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
    nonzero_norms = norm_d > 0 and norm_s > 0
    cosine = float(np.dot(d, s) / (norm_d * norm_s)) if nonzero_norms else (1.0 if norm_d == norm_s else 0.0)
    if sparse_only + dense_only + differing:
        max_abs = rel = float("inf")
    top1 = None
    if _looks_like_class_scores(dense) and dense.shape == sparse.shape and dense.shape[0] > 0:
        agree = np.argmax(dense, axis=-1) == np.argmax(sparse, axis=-1)
        # A row whose scores mismatch in finiteness has no meaningful argmax: it disagrees.
        row_bad = (np.isfinite(dense) != np.isfinite(sparse)).any(axis=-1)
        top1 = float(np.mean(agree & ~row_bad))
    return OutputParity(name, max_abs, rel, cosine, top1, sparse_only, dense_only, differing)


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


def compare_runs(result: ParityResult, names: list[str], reference_runs: Sequence[Mapping[str, Any]],
                 candidate_runs: Sequence[Mapping[str, Any]]) -> None:
    """Metrics of each output over all runs (concatenated along axis 0) into ``result``, which
    is then verified.  Used by the pass (ONNX Runtime vs ONNX Runtime) and by build plugins
    (any runner vs the dense model), so every gate means the same everywhere."""
    for name in names:
        dense = np.concatenate([np.atleast_1d(np.asarray(run[name])) for run in reference_runs])
        other = np.concatenate([np.atleast_1d(np.asarray(run[name])) for run in candidate_runs])
        result.outputs.append(metrics(name, dense, other))
    result.verified, result.runs = True, len(reference_runs)
