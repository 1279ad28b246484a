"""Per-target activation statistics from calibration inputs (Wanda norms, SparseGPT Hessians).

Each target's activation (the op's other operand) is exposed as an extra graph output and
accumulated over every calibration run: ``sq_norm[k] = sum x_k^2`` and, where SparseGPT needs
it, ``hessian = X^T X`` with rows = every position that meets the weight.
"""

from __future__ import annotations

import numpy as np

from sparsify.analysis.index import int_attr
from sparsify.analysis.targets import Target
from sparsify.calibrate.session import InMemoryModel
from sparsify.masks.stats import ActivationStats

__all__ = ["ActivationStats", "activation_input", "collect_stats"]


def activation_input(target: Target) -> tuple[str, int]:
    """(activation tensor name, its feature axis) for a target's op."""
    node = target.op_node()
    if node.op_type == "Conv":
        return node.input[0], 1
    other = node.input[1 - target.input_index]
    if node.op_type == "MatMul":
        return other, (-1 if target.input_index == 1 else -2)
    if target.input_index == 1:  # Gemm(X, W): X is A
        return other, (0 if int_attr(node, "transA", 0, 0, 1) else 1)
    return other, (1 if int_attr(node, "transB", 0, 0, 1) else 0)


def _rows(x: np.ndarray, axis: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        return x[None, :]
    return np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis])


def collect_stats(model: InMemoryModel, targets: list[Target], feeds: list[dict[str, np.ndarray]],
                  hessian_for: set[str], reference=None) -> dict[str, ActivationStats]:
    """Stats keyed by activation name; Hessians only for activations in ``hessian_for``.

    With ``reference`` (a session of the dense model that outputs these activations; it never
    changes, so the caller makes it once), also ``cross = X^T X_dense`` for those, so a layer
    can be refit toward the dense model's output rather than its own drifted input's.
    """
    wanted = {activation_input(t) for t in targets}
    names = sorted({name for name, _ in wanted})
    session = model.session(extra_outputs=names, only=True)  # runs only what these need
    outputs = [o.name for o in session.get_outputs()]
    dense_session = reference if hessian_for else None
    stats: dict[str, ActivationStats] = {}
    axes = dict(wanted)
    for feed in feeds:
        values = dict(zip(outputs, session.run(outputs, feed), strict=True))
        dense_values = dict(zip(names, dense_session.run(names, feed), strict=True)) if dense_session is not None else {}
        for name in names:
            rows = _rows(values[name], axes[name])
            entry = stats.get(name)
            if entry is None:
                k = rows.shape[1]
                entry = stats[name] = ActivationStats(0, np.zeros(k), np.zeros((k, k)) if name in hessian_for else None,
                                                      np.zeros(k))
            entry.rows += rows.shape[0]
            entry.total += rows.sum(axis=0)
            entry.sq_norm += np.einsum("ij,ij->j", rows, rows)
            if entry.hessian is not None:
                entry.hessian += rows.T @ rows
                if name in dense_values:
                    dense_rows = _rows(dense_values[name], axes[name])
                    entry.cross = (0 if entry.cross is None else entry.cross) + rows.T @ dense_rows
                    entry.dense_total = (0 if entry.dense_total is None else entry.dense_total) + dense_rows.sum(axis=0)
    return stats
