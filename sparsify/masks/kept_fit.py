"""The least-squares fit of the weights a mask keeps, once SparseGPT has chosen the mask.

SparseGPT's OBS update (``masks/sparsegpt.py``) chooses the mask group by group and moves each
pruned column's error onto the columns not yet processed: weights kept in earlier columns never
absorb later columns' errors, so its result is not the best weights for the mask it chose.  With
the mask fixed, the best weights for a row ``w`` minimise ``(a - w)^T H_d (a - w)`` with ``a = 0``
where pruned (``H_d`` the damped, shrunk Hessian the OBS step used): a linear system in the kept
entries, ``a_S = w_S + H_SS^-1 H_SP w_P``, a different one for every row.  Solved here by
conjugate gradients with a diagonal preconditioner, every row at once (each iteration is one
``[rows, K] x [K, K]`` product), starting from SparseGPT's weights, so the fit never ends worse
than OBS left it (docs/methods.md has its effect with little calibration data).  The rows are
independent, so the solve runs over blocks of ``BLOCK_ROWS`` rows: the element-wise steps between
the products then work on arrays that stay in the CPU's caches.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BLOCK_ROWS", "ITERATIONS", "DampedHessian", "fit_kept"]

ITERATIONS = 5  # docs/methods.md: 0.0007 below 6 at 64 and at 512 sentences (0.001 below 8), 4 lose 0.002-0.003
TOLERANCE = 1e-4  # stop once every row's residual fell below this fraction of its first one
BLOCK_ROWS = 256  # rows solved together (docs/methods.md, "Speed": 20-35% faster than all at once)


class DampedHessian:
    """``H_d = scale * H`` off the diagonal, ``diagonal`` on it (SparseGPT's shrinkage and
    damping), held as one float32 K x K matrix: ``hessian`` itself, overwritten, with
    ``overwrite`` (the caller's H is not needed afterwards: no second K x K matrix), else a copy.
    With ``samples`` (the rows X of H = X^T X, when there are few: T < K / 4), no matrix is
    held and a product is taken as (p X^T) X: 2 T K work per row instead of K^2 (few
    calibration tokens for a wide layer)."""

    def __init__(self, hessian: np.ndarray, diagonal: np.ndarray, scale: float, samples: np.ndarray | None = None,
                 overwrite: bool = False):
        self.diagonal = diagonal
        self.scale = scale
        self.samples = samples
        self._correction = (diagonal - scale * np.diag(hessian)).astype(np.float32)
        self.matrix: np.ndarray | None = None
        if samples is None:
            owned = overwrite and hessian.dtype == np.float32 and hessian.flags.c_contiguous and hessian.flags.writeable
            matrix = hessian if owned else np.array(hessian, dtype=np.float32)
            matrix *= np.float32(scale)
            np.einsum("ii->i", matrix)[:] = diagonal
            self.matrix = matrix

    def times(self, rows: np.ndarray) -> np.ndarray:
        """``rows @ H_d`` (H_d is symmetric)."""
        if self.matrix is not None:
            return rows @ self.matrix
        assert self.samples is not None
        product: np.ndarray = (rows @ self.samples.T) @ self.samples
        product *= self.scale
        product += rows * self._correction
        return product

    def explicit(self) -> np.ndarray:
        """H_d as a float64 K x K matrix (for checks)."""
        if self.matrix is not None:
            return self.matrix.astype(np.float64)
        assert self.samples is not None
        samples = self.samples.astype(np.float64)
        h = self.scale * (samples.T @ samples)
        return h + np.diag(self._correction.astype(np.float64))


def _ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """top / bottom per row, 0 where bottom is not positive (a row already solved)."""
    positive = bottom > 0
    return np.where(positive, top / np.where(positive, bottom, 1), 0).astype(top.dtype)[:, None]


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot products, without a temporary the size of ``a``."""
    return np.einsum("ij,ij->i", a, b)


def fit_kept(target: np.ndarray, start: np.ndarray, damped: DampedHessian, iterations: int | None = None,
             overwrite: bool = False, residual: np.ndarray | None = None) -> np.ndarray:
    """The weights closest to ``target`` in the ``H_d`` norm with ``start``'s zeros kept: ``target``
    [rows, K] is the weight SparseGPT pruned, ``start`` its result (the N:M mask is where it is
    non-zero).  Returns an array in ``start``'s dtype, exactly zero wherever ``start`` is: a new
    one, or ``start`` itself with ``overwrite`` when it is C-ordered.  ``residual``: the first
    residual ``(target - start) H_d`` when the caller has it cheaper than a product (it is
    overwritten).  Memory: a few [BLOCK_ROWS, K] arrays, besides the inputs and the result."""
    dtype = start.dtype
    # C order: row-wise steps on a transposed weight would be strided
    fitted = np.ascontiguousarray(start) if overwrite else np.array(start, dtype=dtype, order="C")
    reciprocal = np.where(damped.diagonal > 0, 1.0 / np.maximum(damped.diagonal, 1e-30), 0).astype(dtype)
    count = ITERATIONS if iterations is None else iterations
    for first in range(0, len(fitted), BLOCK_ROWS):
        rows = slice(first, first + BLOCK_ROWS)
        _fit_block(target[rows], fitted[rows], damped, reciprocal, count, None if residual is None else residual[rows])
    return fitted


def _fit_block(target: np.ndarray, fitted: np.ndarray, damped: DampedHessian, reciprocal: np.ndarray,
               iterations: int, first: np.ndarray | None) -> None:
    """Conjugate gradients on ``fitted`` (a C-ordered block of rows, in place) for its own mask,
    from the residual ``first`` if given (used in place)."""
    keep = fitted != 0
    precondition = reciprocal * keep  # the diagonal preconditioner on the mask: every direction stays on it
    residual = damped.times(np.ascontiguousarray(target - fitted, dtype=fitted.dtype)) if first is None else first
    # (the residual is minus half the gradient)
    direction = residual * precondition
    rz = _dot(residual, direction)
    stop = TOLERANCE**2 * rz
    scratch = np.empty_like(fitted)
    for left in range(iterations - 1, -1, -1):
        if not np.any(rz > stop):
            break
        step = damped.times(direction)
        alpha = _ratio(rz, _dot(direction, step))  # direction is zero off the mask: no masking needed here
        np.multiply(direction, alpha, out=scratch)
        fitted += scratch
        if not left:  # the last step: the next residual and direction would not be used
            break
        step *= alpha
        residual -= step
        del step
        np.multiply(residual, precondition, out=scratch)  # the preconditioned residual, on the mask
        rz_next = _dot(residual, scratch)
        direction *= _ratio(rz_next, rz)
        direction += scratch
        rz = rz_next
    fitted *= keep  # exactly zero where pruned (round-off never reaches there, but be certain)
