"""The least-squares fit of the weights a mask keeps, once SparseGPT has chosen the mask.

SparseGPT's OBS update (``masks/sparsegpt.py``) chooses the mask group by group and moves each
pruned column's error onto the columns not yet processed: weights kept in earlier columns never
absorb later columns' errors, so its result is not the best weights for the mask it chose.  With
the mask fixed, the best weights for a row ``w`` minimise ``(a - w)^T H_d (a - w)`` with ``a = 0``
where pruned (``H_d`` the damped, shrunk Hessian the OBS step used): a linear system in the kept
entries, ``a_S = w_S + H_SS^-1 H_SP w_P``, a different one for every row.  Solved here by
conjugate gradients with a diagonal preconditioner, every row at once (each iteration is one
``[rows, K] x [K, K]`` product), starting from SparseGPT's weights, so the fit never ends worse
than OBS left it (docs/methods.md has its effect with little calibration data).
"""

from __future__ import annotations

import numpy as np

__all__ = ["ITERATIONS", "DampedHessian", "fit_kept"]

ITERATIONS = 8  # docs/methods.md: 4 lose a little, 10 gain little over 8
TOLERANCE = 1e-4  # stop once every row's residual fell below this fraction of its first one


class DampedHessian:
    """``H_d = scale * H`` off the diagonal, ``diagonal`` on it, applied without building a second
    K x K matrix (SparseGPT's shrinkage and damping).  With ``samples`` (the rows X of
    H = X^T X, when there are few: T < K / 4), a product is taken as (p X^T) X: 2 T K work per
    row instead of K^2 (few calibration tokens for a wide layer)."""

    def __init__(self, hessian: np.ndarray, diagonal: np.ndarray, scale: float, samples: np.ndarray | None = None):
        self.hessian = hessian
        self.diagonal = diagonal
        self.scale = scale
        self.samples = samples
        self._correction = (diagonal - scale * np.diag(hessian)).astype(hessian.dtype)

    def times(self, rows: np.ndarray) -> np.ndarray:
        """``rows @ H_d`` (H_d is symmetric)."""
        if self.samples is not None:
            product: np.ndarray = (rows @ self.samples.T) @ self.samples
        else:
            product = rows @ self.hessian
        product *= self.scale
        product += rows * self._correction
        return product


def _ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """top / bottom per row, 0 where bottom is not positive (a row already solved)."""
    positive = bottom > 0
    return np.where(positive, top / np.where(positive, bottom, 1), 0).astype(top.dtype)[:, None]


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot products, without a temporary the size of ``a``."""
    return np.einsum("ij,ij->i", a, b)


def fit_kept(target: np.ndarray, start: np.ndarray, damped: DampedHessian, iterations: int | None = None,
             overwrite: bool = False) -> np.ndarray:
    """The weights closest to ``target`` in the ``H_d`` norm with ``start``'s zeros kept: ``target``
    [rows, K] is the weight SparseGPT pruned, ``start`` its result (the N:M mask is where it is
    non-zero).  Returns an array in ``start``'s dtype, exactly zero wherever ``start`` is: a new
    one, or ``start`` itself with ``overwrite`` when it is C-ordered.  Memory: three or four
    [rows, K] arrays and the one-byte mask, besides the inputs."""
    dtype = start.dtype
    keep = start != 0
    reciprocal = np.where(damped.diagonal > 0, 1.0 / np.maximum(damped.diagonal, 1e-30), 0).astype(dtype)
    # C order: row-wise steps on a transposed weight would be strided
    fitted = np.ascontiguousarray(start) if overwrite else np.array(start, dtype=dtype, order="C")
    residual = damped.times(np.ascontiguousarray(target - fitted, dtype=dtype))  # minus half the gradient
    direction = residual * reciprocal
    direction *= keep  # the kept entries only: every direction stays on the mask
    rz = _dot(residual, direction)
    stop = TOLERANCE**2 * rz
    scratch = np.empty_like(fitted)
    for _ in range(ITERATIONS if iterations is None else iterations):
        if not np.any(rz > stop):
            break
        step = damped.times(direction)
        alpha = _ratio(rz, _dot(direction, step))  # direction is zero off the mask: no masking needed here
        np.multiply(direction, alpha, out=scratch)
        fitted += scratch
        step *= alpha
        residual -= step
        del step
        np.multiply(residual, reciprocal, out=scratch)  # the preconditioned residual, on the mask
        scratch *= keep
        rz_next = _dot(residual, scratch)
        direction *= _ratio(rz_next, rz)
        direction += scratch
        rz = rz_next
    fitted *= keep  # exactly zero where pruned (round-off never reaches there, but be certain)
    return fitted
