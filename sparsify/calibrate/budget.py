"""Accuracy budget: measure each layer's sensitivity, keep the most sensitive dense.

Loss is either the top-1 accuracy drop on a labelled set (``--max-accuracy-drop``) or the
relative L2 drift of the outputs (``--max-output-drift``).  Sensitivity of a weight = the
loss with only that weight pruned.  Then the k most sensitive stay dense, with the smallest
k that meets the budget (binary search over k, confirmed by a final evaluation, and a linear
walk upward if the loss is not monotonic in k).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from sparsify.errors import UsageError
from sparsify.io.npz import ArraySource, read_arrays, source_name
from sparsify.verify.feeds import feeds_from_arrays
from sparsify.verify.metrics import metrics

__all__ = ["BudgetResult", "EvalData", "accuracy_loss", "choose_dense", "drift_loss", "load_eval"]


@dataclass
class EvalData:
    feeds: list[dict[str, np.ndarray]]
    labels: np.ndarray | None


@dataclass
class BudgetResult:
    kind: str  # "accuracy_drop" or "output_drift"
    budget: float
    dense_value: float | None  # dense accuracy (accuracy mode)
    final_loss: float
    met: bool
    kept_dense: list[str] = field(default_factory=list)
    sensitivity: dict[str, float] = field(default_factory=dict)
    evaluations: int = 0
    final_accuracy: float | None = None  # accuracy mode: dense accuracy minus the final drop


def load_eval(source: ArraySource, session: ort.InferenceSession, need_labels: bool) -> EvalData:
    data = read_arrays(source, "eval data")  # read once: the inputs and the labels
    path = source_name(source, "eval data")
    feeds = feeds_from_arrays(path, data, session)
    labels = None
    if need_labels:
        if "labels" not in data:
            raise UsageError(f"{path}: --max-accuracy-drop needs class indices under the key 'labels'")
        raw = np.asarray(data["labels"]).reshape(-1)
        integral = raw.dtype.kind in "iub" or (raw.dtype.kind == "f" and bool(np.all(np.isfinite(raw)))
                                                and bool(np.all(raw == np.round(raw))))
        if not integral or (raw.size and raw.min() < 0):
            raise UsageError(f"{path}: 'labels' must be non-negative integer class indices (got dtype {raw.dtype}"
                             f"{', with NaN/inf or fractions' if raw.dtype.kind == 'f' else ''})")
        labels = raw.astype(np.int64)
    return EvalData(feeds, labels)


def _first_output(session: ort.InferenceSession, feeds) -> np.ndarray:
    return np.concatenate([_rows(session.run(None, f)[0]) for f in feeds])


def _rows(scores) -> np.ndarray:
    scores = np.asarray(scores)
    return scores.reshape(-1, scores.shape[-1]) if scores.ndim > 1 else scores[None, :]


def accuracy(session: ort.InferenceSession, data: EvalData) -> float:
    scores = _first_output(session, data.feeds)
    predictions = np.argmax(scores, axis=-1)
    if data.labels is None or len(predictions) != len(data.labels):
        raise UsageError(f"the eval set has {0 if data.labels is None else len(data.labels)} labels but the model "
                         f"made {len(predictions)} predictions")
    # A row with a NaN/inf score has no trustworthy prediction: it counts as wrong.
    finite_rows = np.isfinite(scores).all(axis=-1) if np.issubdtype(scores.dtype, np.floating) else True
    return float(np.mean((predictions == data.labels) & finite_rows))


def accuracy_loss(dense_accuracy: float, data: EvalData) -> Callable[[ort.InferenceSession], float]:
    return lambda session: dense_accuracy - accuracy(session, data)


def drift_loss(dense_session: ort.InferenceSession, data: EvalData) -> Callable[[ort.InferenceSession], float]:
    reference = [dense_session.run(None, f) for f in data.feeds]

    def loss(session: ort.InferenceSession) -> float:
        worst = 0.0
        for feed, dense_out in zip(data.feeds, reference, strict=True):
            for d, s in zip(dense_out, session.run(None, feed), strict=True):
                worst = max(worst, metrics("", np.asarray(d), np.asarray(s)).rel_l2_error)
        return worst

    return loss


def choose_dense(weights: list[str], evaluate: Callable[[set[str]], float], budget: float,
                 kind: str, dense_value: float | None) -> BudgetResult:
    """``evaluate(pruned_set) -> loss``.  Returns which weights to keep dense."""
    result = BudgetResult(kind, budget, dense_value, 0.0, False)
    for name in weights:
        result.sensitivity[name] = evaluate({name})
        result.evaluations += 1
    order = sorted(weights, key=lambda w: (-result.sensitivity[w], weights.index(w)))

    def loss_with(k: int) -> float:
        result.evaluations += 1
        return evaluate(set(order[k:]))

    lo, hi = 0, len(order)  # the answer k lies in [lo, hi]; k = len(order) prunes nothing
    while lo < hi:
        mid = (lo + hi) // 2
        if loss_with(mid) <= budget:
            hi = mid
        else:
            lo = mid + 1
    k = lo
    final = loss_with(k) if k < len(order) else 0.0
    while final > budget and k < len(order):
        k += 1
        final = loss_with(k) if k < len(order) else 0.0
    result.kept_dense, result.final_loss, result.met = order[:k], final, final <= budget
    if dense_value is not None:
        result.final_accuracy = dense_value - final
    return result
