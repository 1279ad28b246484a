"""SparseGPT for N:M (Frantar & Alistarh 2023): prune with the OBS weight update.

Columns are the reduction axis.  For every group of M columns the N kept per row are the
ones whose removal costs most (w^2 / [H^-1]_jj^2); the error of each pruned column is
propagated to the columns not yet processed through the inverse Hessian's Cholesky factor.
Blocked (lazy batch updates) and damped; a Hessian that stays singular after more damping
is refused with a reason so the caller can fall back.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from sparsify.masks.blas import small_ops
from sparsify.masks.kept_fit import DampedHessian, fit_kept

__all__ = ["Prepared", "SparseGPTError", "damping", "group_order", "inverse_factor", "obs_factor", "prepare", "sparsegpt_prune"]


class SparseGPTError(ValueError):
    """SparseGPT cannot handle this weight (the message says why)."""


def _lapack(name: str, like: np.ndarray):
    """SciPy's LAPACK routine ``name`` for ``like``'s precision (dpotrf or spotrf, ...), or None
    without SciPy."""
    try:
        from scipy.linalg import lapack
    except ImportError:
        return None
    return lapack.get_lapack_funcs(name, (like,))


def _inverse_times(u: np.ndarray, y: np.ndarray) -> np.ndarray:
    """U^T (U y) for an upper-triangular C-ordered ``u`` [K, K] and ``y`` [K, columns], with BLAS
    trmm when SciPy is installed (half a general product's work: ``u.T`` is the same memory read
    as a lower-triangular Fortran matrix, ``y.T`` a Fortran [columns, K] one)."""
    try:
        from scipy.linalg import blas
    except ImportError:
        return u.T @ (u @ y)
    trmm = blas.get_blas_funcs("trmm", (u, y))
    uy_t = trmm(1.0, u.T, np.ascontiguousarray(y).T, side=1, lower=1)  # y^T U^T = (U y)^T
    return trmm(1.0, u.T, uy_t, side=1, lower=1, trans_a=1, overwrite_b=1).T  # (U y)^T U = (U^T U y)^T


def _upper_solve(u: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """U^-1 y for an upper-triangular C-ordered ``u`` [K, K] and a C-ordered ``y`` [K, columns]
    (overwritten), with BLAS trsm; None without SciPy.  As in :func:`_inverse_times`, ``u.T`` is
    U^T as a lower-triangular Fortran matrix and ``y.T`` a Fortran [columns, K] one: X U^T = y^T
    is solved for X = (U^-1 y)^T."""
    try:
        from scipy.linalg import blas
    except ImportError:
        return None
    trsm = blas.get_blas_funcs("trsm", (u, y))
    return trsm(1.0, u.T, y.T, side=1, lower=1, overwrite_b=1).T


def _lower_inverse(lower: np.ndarray) -> np.ndarray:
    """Inverse of a C-ordered lower-triangular matrix, in place with LAPACK trtri when SciPy is
    installed (``lower.T`` is the same memory read as an upper-triangular Fortran matrix)."""
    trtri = _lapack("trtri", lower)
    if trtri is None:
        return np.linalg.inv(lower)
    inverse_t, info = trtri(lower.T, lower=0, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError("singular triangular factor")
    return inverse_t.T


def _cholesky_in_place(base: np.ndarray) -> np.ndarray:
    """L with L L^T = ``base`` (C-ordered, symmetric), written over ``base`` with LAPACK potrf
    when SciPy is installed (no second K x K matrix); NumPy's copy otherwise."""
    potrf = _lapack("potrf", base)
    if potrf is None:
        return np.linalg.cholesky(base)
    upper, info = potrf(base.T, lower=0, clean=1, overwrite_a=1)  # base.T: Fortran, same memory
    if info != 0:
        raise np.linalg.LinAlgError("not positive definite")
    return upper.T


DAMP = 0.03  # added to H's diagonal, as a fraction of its mean, when the row count is unknown (the paper: 1%)
# with T calibration rows for a K-wide input: DAMP_PER_WIDTH * K / T, within [DAMP_MIN, DAMP_MAX]
# (a ridge of fixed strength against the evidence of T rows; docs/methods.md has the ablation)
DAMP_PER_WIDTH: float | None = 0.4
DAMP_MIN = 0.01
DAMP_MAX = 0.1
BLOCK = 128  # columns per lazy batch update (the paper's B)
PUT_BACK_COLUMNS = 64  # columns of OBS's result put back in the weight's order at a time (Prepared._stored)
SHRINK = 0.1  # H's off-diagonal scaled by 1 - SHRINK: a noisy estimate from little data (docs/methods.md)


def _damped(hessian: np.ndarray, shrink: float, damp: float, attempt: int, dtype: type,
            index: np.ndarray | None = None) -> np.ndarray:
    """J H J (J the reversal; with ``index``, H's rows and columns taken in that order),
    shrunk toward its diagonal, dead inputs set to 1, damped by damp * 10^attempt of the mean
    diagonal: a new ``dtype`` matrix."""
    if index is None:
        base: np.ndarray = np.array(hessian[::-1, ::-1], dtype=dtype)
    else:  # rows gathered whole, then each block of rows' columns: no K x K temporary (np.ix_ is 3x slower)
        backwards = index[::-1]
        base = hessian.take(backwards, axis=0).astype(dtype, copy=False)
        for first in range(0, len(base), PERMUTE_ROWS):
            base[first:first + PERMUTE_ROWS] = base[first:first + PERMUTE_ROWS].take(backwards, axis=1)
    diagonal = np.einsum("ii->i", base)  # a writable view of the diagonal
    if shrink:
        kept = diagonal.copy()
        base *= 1.0 - shrink
        diagonal[:] = kept
    diagonal[diagonal == 0] = 1.0  # dead inputs
    diagonal += damp * float(np.mean(diagonal)) * 10**attempt
    return base


PERMUTE_ROWS = 256  # rows whose columns are permuted at a time
REVERSE_CHUNK = 1 << 20  # values swapped per step of an in-place reversal


def _reversed_in_place(a: np.ndarray) -> np.ndarray:
    """``a[::-1, ::-1]`` written over the C-contiguous ``a`` (its flat buffer reversed, chunk by
    chunk): a fresh K x K copy would cost more than the reversal, its pages first touched."""
    flat = a.reshape(-1)  # a view of the same memory
    half = flat.size // 2
    for start in range(0, half, REVERSE_CHUNK):
        stop = min(start + REVERSE_CHUNK, half)
        front = flat[start:stop].copy()
        flat[start:stop] = flat[flat.size - stop:flat.size - start][::-1]
        flat[flat.size - stop:flat.size - start] = front[::-1]
    return a


def _factor_and_diagonal(hessian: np.ndarray, damp: float, shrink: float, dtype: type,
                         index: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The upper factor U of H^-1 (U^T U = H^-1), as the reference code uses it, from ONE
    Cholesky factorisation: with J the reversal permutation, J H J = L L^T gives H = U0 U0^T
    for the upper-triangular U0 = J L J, so H^-1 = (U0^-1)^T U0^-1 and U = U0^-1.  ``shrink``
    first moves H toward its diagonal.  One K x K ``dtype`` matrix is worked on in place, plus
    the result (the Hessian itself was summed in float64).  With ``index``, the factor is that
    of H with rows and columns in that order.  Also the diagonal of the shrunk, damped H that was
    factored, in H's own order."""
    for attempt in range(6):
        base = _damped(hessian, shrink, damp, attempt, dtype, index)
        diagonal = np.empty(len(base), dtype=base.dtype)  # read before the factorisation overwrites it
        diagonal[np.arange(len(base)) if index is None else index] = np.diag(base)[::-1]
        try:
            lower = _cholesky_in_place(base)
        except np.linalg.LinAlgError:
            continue
        # U = U0^-1 with U0 = J L J, i.e. J L^-1 J
        inverse = _lower_inverse(lower)
        if inverse.dtype == dtype and inverse.flags.c_contiguous:
            return _reversed_in_place(inverse), diagonal
        return np.ascontiguousarray(inverse[::-1, ::-1], dtype=dtype), diagonal
    raise SparseGPTError("calibration Hessian is not positive definite even after damping")


def _inverse_cholesky(hessian: np.ndarray, damp: float, shrink: float = 0.0,
                      dtype: type = np.float64) -> np.ndarray:
    """The upper factor of the shrunk, damped H^-1 (:func:`_factor_and_diagonal`)."""
    return _factor_and_diagonal(hessian, damp, shrink, dtype)[0]


def inverse_factor(hessian: np.ndarray, damp: float = DAMP, shrink: float = 0.0,
                   dtype: type = np.float64) -> np.ndarray:
    """The upper factor of the damped H^-1 that :func:`sparsegpt_prune` uses (compute it once
    for weights that share a Hessian)."""
    if not np.all(np.isfinite(hessian)):
        raise SparseGPTError("calibration Hessian has the wrong shape or non-finite values")
    return _inverse_cholesky(hessian, damp, shrink, dtype)


@dataclass
class Prepared:
    """What every weight reading one activation (Q, K and V) shares: the upper factor U of
    the shrunk, damped H^-1 (one factorisation), with the columns in the order OBS visits them,
    and, with a dense reference, C - H.  In float32, as in the reference implementation: the
    factorisation and the products with the weights run at twice float64's speed in half the
    memory, and the damping keeps the factorisation well conditioned (H itself is summed in
    float64)."""

    factor: np.ndarray  # U^T U = H_d^-1 with rows and columns in ``order``
    shift: np.ndarray | None = None  # C - H = X^T (X_dense - X)
    damped: DampedHessian | None = None  # H_d itself, for the fit of the kept weights
    order: np.ndarray | None = None  # the column order OBS works in (None: as stored)
    dead: np.ndarray | None = None  # inputs the calibration data never excited (diag(H) = 0)
    refit_map: np.ndarray | None = None  # H_d^-1 (C - H), formed once a weight as tall as K is refit

    def solve(self, y: np.ndarray) -> np.ndarray:
        """H_d^-1 y for ``y`` [K, columns] in the weight's own column order."""
        if self.order is None:
            return _inverse_times(self.factor, y)
        result = np.empty_like(y)
        result[self.order] = _inverse_times(self.factor, y[self.order])
        return result

    def refit(self, weight: np.ndarray, projected: np.ndarray | None = None) -> np.ndarray:
        """Refit toward the dense output, shrunk toward the original weight:
        argmin_A ||X A - X_dense W||^2 + (A - W)^T D (A - W) (rows here are output features), with
        D the damping and shrinkage that the factor carries, i.e. A^T = W^T + H_d^-1 (C - H) W^T.
        Directions the calibration data barely excites keep the original weight; a plain
        least-squares refit would shrink them toward zero and overfit little calibration data
        (docs/methods.md has the ablation).  With no drift (C = H) the weight is unchanged.
        ``projected``: (C - H) W^T [K, rows] itself, summed during calibration as
        X^T ((X_dense - X) W^T) for a weight with few rows (calibrate/capture.py); then no K x K
        drift term exists and only the solve is left."""
        w = weight.astype(self.factor.dtype)
        if projected is not None:
            if projected.shape != (w.shape[1], w.shape[0]) or not np.all(np.isfinite(projected)):
                raise SparseGPTError("calibration drift term has the wrong shape or non-finite values")
            return w + self.solve(projected.astype(w.dtype, copy=False)).T
        if self.refit_map is None and self.shift is not None and w.shape[0] >= w.shape[1]:
            # a weight with at least K rows: M = H_d^-1 (C - H) costs no more than its own refit, and
            # every weight sharing this Hessian is then refit with one product (not a product and a solve)
            self.refit_map, self.shift = self.solve(self.shift), None
        if self.refit_map is not None:
            return w + w @ self.refit_map.T
        if self.shift is None:
            return w
        return w + self.solve(self.shift @ w.T).T

    def _stored(self, visited: np.ndarray) -> np.ndarray:
        """[K, rows] in OBS's visiting order back to a new [rows, K] in the weight's column order,
        PUT_BACK_COLUMNS columns at a time: those rows of ``visited`` gathered (a small temporary),
        then written transposed.  Scattering into the transposed result, or one whole gather and
        one transposing copy, took 2-8x as long and the latter a second [K, rows] temporary."""
        rows, width = visited.shape[1], visited.shape[0]
        result = np.empty((rows, width), dtype=visited.dtype)
        back = np.argsort(self.order) if self.order is not None else np.arange(width)
        for first in range(0, width, PUT_BACK_COLUMNS):
            result[:, first:first + PUT_BACK_COLUMNS] = visited[back[first:first + PUT_BACK_COLUMNS]].T
        return result

    def prune(self, weight: np.ndarray, n: int, m: int, fit_iterations: int | None = None,
              projected: np.ndarray | None = None) -> np.ndarray:
        """The weight [rows, K] refit toward the dense output (``projected``: see :meth:`refit`),
        pruned to N:M by OBS (columns in ``order``), then its kept weights fitted for the mask OBS
        chose (masks/kept_fit.py; ``fit_iterations`` of it, None: its default, 0: none)."""
        target = _ready(self.refit(weight, projected), m, len(self.factor), self.dead)
        # OBS works on [K, rows], columns in its visiting order: one copy, put back in place once
        visited = np.ascontiguousarray(target.T) if self.order is None else target.T[self.order]
        fit = self.damped is not None and fit_iterations != 0
        errors = np.zeros_like(visited) if fit else None
        _obs_transposed(visited, self.factor, n, m, BLOCK, errors)
        pruned = self._stored(visited)
        del visited
        if not fit:
            return pruned
        assert self.damped is not None and errors is not None
        # OBS moved the weight by U^T E (E its errors): the fit's first residual H_d (target - pruned)
        # is U^-1 E, a triangular solve (half a product) instead of a product with H_d
        first = _upper_solve(self.factor, errors)
        del errors
        residual = None if first is None else self._stored(first)
        del first
        return fit_kept(target, pruned, self.damped, fit_iterations, overwrite=True, residual=residual)


def damping(width: int, rows: int | None) -> float:
    """The damping for a ``width``-wide input's Hessian summed over ``rows`` calibration rows, as a
    fraction of its mean diagonal: the fewer rows per input feature, the noisier ``X^T X`` and the
    more damping (``DAMP`` when the rows are not known)."""
    if not rows or DAMP_PER_WIDTH is None:
        return DAMP
    return min(DAMP_MAX, max(DAMP_MIN, DAMP_PER_WIDTH * width / rows))


def group_order(hessian: np.ndarray, m: int) -> np.ndarray:
    """Columns in groups of ``m`` (as stored), the groups by descending activation energy (the
    sum of their diagonal of H): OBS fixes the most excited inputs' masks first, with least error
    carried into them, and later groups absorb the compensation (GPTQ's "act order", applied to
    whole N:M groups so each group stays M contiguous inputs).  docs/methods.md has its effect."""
    k = hessian.shape[0]
    energy = np.diag(hessian).astype(np.float64).reshape(k // m, m).sum(axis=1)
    groups = np.argsort(-energy, kind="stable")
    return (groups[:, None] * m + np.arange(m)).reshape(-1)


def prepare(hessian: np.ndarray, drift: np.ndarray | None = None, m: int | None = None,
            samples: np.ndarray | None = None, rows: int | None = None, overwrite: bool = False) -> Prepared:
    """:class:`Prepared` for one Hessian (and its drift term X^T (X_dense - X), if any); with
    ``m`` (the pattern's M, dividing K), OBS visits groups of M columns in :func:`group_order`;
    ``samples``: the rows X of H = X^T X when there are few (the fit's products use them);
    ``rows``: how many calibration rows H sums (sets the :func:`damping`); ``overwrite``: a float32
    ``hessian`` becomes the damped H_d the fit multiplies by (no second K x K matrix)."""
    if drift is not None and (drift.shape != hessian.shape or not np.all(np.isfinite(drift))):
        raise SparseGPTError("calibration drift term has the wrong shape or non-finite values")
    if hessian.ndim != 2 or hessian.shape[0] != hessian.shape[1] or not np.all(np.isfinite(hessian)):
        raise SparseGPTError("calibration Hessian has the wrong shape or non-finite values")
    order = group_order(hessian, m) if m and hessian.shape[0] % m == 0 else None
    factor, diagonal = _factor_and_diagonal(hessian, damping(hessian.shape[0], rows), SHRINK, np.float32, order)
    if samples is not None and (samples.ndim != 2 or samples.shape[1] != hessian.shape[0]):
        samples = None
    dead = np.diag(hessian) == 0
    damped = DampedHessian(hessian, diagonal, 1.0 - SHRINK, samples, overwrite)
    return Prepared(factor, None if drift is None else drift.astype(np.float32, copy=False), damped, order,
                    dead if dead.any() else None)


def obs_factor(hessian: np.ndarray) -> np.ndarray:
    """The float32 upper factor of the shrunk, damped H^-1."""
    return inverse_factor(hessian, DAMP, SHRINK, np.float32)


def sparsegpt_prune(weight: np.ndarray, hessian: np.ndarray, n: int, m: int, *, damp: float = DAMP,
                    block: int = BLOCK, factor: np.ndarray | None = None) -> np.ndarray:
    """``weight``: [rows, K] (K = reduction axis), ``hessian``: [K, K] = X^T X; ``factor``:
    :func:`inverse_factor` of it, when already computed.

    Returns the pruned and updated weight (in the factor's precision: float64 unless a float32
    factor is given); each group of m columns keeps n non-zeros per row.
    """
    w = np.array(weight, dtype=np.float64 if factor is None else factor.dtype)
    # a given factor was made from this Hessian, which was checked then: not read again per weight
    if hessian.ndim != 2 or hessian.shape[0] != hessian.shape[1] or (factor is None and not np.all(np.isfinite(hessian))):
        raise SparseGPTError("calibration Hessian has the wrong shape or non-finite values")
    w = _ready(w, m, len(hessian), np.diag(hessian) == 0)
    return _obs(w, _inverse_cholesky(hessian, damp) if factor is None else factor, n, m, block)


def _ready(w: np.ndarray, m: int, width: int, dead: np.ndarray | None) -> np.ndarray:
    """``w`` [rows, K] checked for OBS (K divisible by ``m`` and equal to the Hessian's ``width``,
    every value finite), with the weights of ``dead`` inputs (never active in the calibration
    data: their weights never matter) set to zero in place."""
    cols = w.shape[1]
    if cols % m:
        raise SparseGPTError(f"reduction length {cols} is not divisible by {m}")
    if cols != width:
        raise SparseGPTError(f"reduction length {cols} does not match the calibration Hessian's {width}")
    if not np.all(np.isfinite(w)):
        raise SparseGPTError("weight holds non-finite values")
    if dead is not None and dead.any():
        w[:, dead] = 0.0
    return w


def _obs(w: np.ndarray, hinv: np.ndarray, n: int, m: int, block: int) -> np.ndarray:
    """OBS on ``w`` [rows, K] in place (through a transposed copy); returns ``w``."""
    wt = np.ascontiguousarray(w.T)
    _obs_transposed(wt, hinv, n, m, block)
    w[...] = wt.T
    return w


def _obs_transposed(wt: np.ndarray, hinv: np.ndarray, n: int, m: int, block: int,
                    errors: np.ndarray | None = None) -> None:
    """OBS on the transposed weight ``wt`` [K, rows] (C-ordered) in place, column group by column
    group, with ``hinv`` the upper factor U of H^-1 in the same column order: every column the
    group loop touches is one contiguous vector.  ``errors`` (zeros like ``wt``), if given, receives
    every column's error E: OBS leaves ``wt - U^T E``."""
    cols = wt.shape[0]
    block = max(m, (block // m) * m)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        w1 = wt[i1:i2]  # a view: updated in place
        err = np.zeros_like(w1) if errors is None else errors[i1:i2]
        h1 = hinv[i1:i2, i1:i2]
        scale = (1.0 / np.diag(h1) ** 2).astype(w1.dtype)[:, None]  # dropping w_j costs w_j^2 / [H^-1]_jj^2
        with small_ops():  # products of M columns: one BLAS thread is faster (masks/blas.py)
            for g in range(0, i2 - i1, m):
                _prune_group(w1, err, h1, scale, g, n, m)
        wt[i2:] -= hinv[i1:i2, i2:].T @ err


SELECT_BY_COMPARISON_MAX_M = 8  # above this M, the M(M-1)/2 vector comparisons cost more than a sort


@lru_cache(maxsize=8)
def _pairs(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For ranking M values by comparisons: every pair i < j, and the [M, pairs] matrix that
    turns the pairs' outcomes b_ij = (c_i <= c_j) into ranks (b_ij puts i before j and counts
    for j; 1 - b_ij counts for i), with the constant part of those counts."""
    first, second = np.triu_indices(m, 1)
    counts = np.zeros((m, len(first)), dtype=np.float32)
    counts[second, np.arange(len(first))] = 1.0
    counts[first, np.arange(len(first))] = -1.0
    return first, second, counts, np.bincount(first, minlength=m).astype(np.float32)[:, None]


def _dropped(cost: np.ndarray, n: int, m: int) -> np.ndarray:
    """[m, rows] bool: the m-n cheapest of each row's m costs (``cost`` [m, rows]), a tie going to
    the lower column (as a stable sort orders them)."""
    if m > SELECT_BY_COMPARISON_MAX_M:
        order = np.argsort(cost, axis=0, kind="stable")
        drop = np.zeros(cost.shape, dtype=bool)
        np.put_along_axis(drop, order[: m - n], True, axis=0)
        return drop
    first, second, counts, constant = _pairs(m)
    rank = counts @ (cost[first] <= cost[second]).astype(np.float32)  # how many come before each
    rank += constant
    return rank < m - n


def _prune_group(w1: np.ndarray, err: np.ndarray, h1: np.ndarray, scale: np.ndarray, g: int, n: int,
                 m: int) -> None:
    """One group of m columns (rows ``g:g+m`` of the transposed block ``w1``): bring it up to date
    with the errors of the block's earlier columns (``err[:g]``, one [m, g] x [g, rows] product:
    a later column of the block is only read when its group is reached), drop the m-n cheapest
    per weight row (w^2 / [H^-1]_jj^2) and record their errors in ``err``.

    Column by column, a dropped column j carries e_j = (w_j - sum_{i<j} e_i U_ij) / U_jj and a
    kept one carries nothing; then w <- w - E U[group, group] within the group (which leaves the
    dropped entries at zero) — the same result as the column-by-column reference in a fixed,
    small number of vector operations per group."""
    group = w1[g:g + m]
    if g:  # the errors of the block's earlier columns, applied to this group only when it is reached
        group -= h1[:g, g:g + m].T @ err[:g]
    cost = group * group
    cost *= scale[g:g + m]
    drop = _dropped(cost, n, m)
    errors = err[g:g + m]  # zeros so far: filled with this group's errors in place
    np.multiply(drop, (1.0 / np.diag(h1)[g:g + m])[:, None], out=errors)  # 1 / U_jj where dropped, else 0
    errors[0] *= group[0]
    for j in range(1, m):
        errors[j] *= group[j] - h1[g:g + j, g + j] @ errors[:j]
    group -= h1[g:g + m, g:g + m].T @ errors
    np.copyto(group, 0.0, where=drop)  # exactly +0.0, not round-off (nor -0.0, whose bits are not zero)
