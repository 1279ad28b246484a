"""Vectorized N:M kernel: which weights to keep, and whether a tensor already is N:M.

Groups are M consecutive entries along ``axis``.  The tensor is viewed (without copying)
as ``(rows, M, inner)`` where ``rows = prod(shape[:axis]) * L/M`` and ``inner =
prod(shape[axis+1:])``, so any axis works without a transpose.  Work is chunked over rows
to bound temporaries; there is no Python loop over groups.
"""

from __future__ import annotations

import numpy as np

__all__ = ["group_view", "nm_keep_mask", "nm_violations"]

_CHUNK_ELEMENTS = 1 << 22  # ~4M weights per chunk keeps temporaries small and cache friendly
_RANK_MAX_M = 8  # up to M=8 pairwise ranks beat a sort; beyond, a stable argsort


def group_view(array: np.ndarray, axis: int, m: int) -> np.ndarray:
    """``array`` viewed as ``(rows, m, inner)`` with groups along axis 1."""
    shape = array.shape
    axis = axis % array.ndim
    length = shape[axis]
    if length % m:
        raise ValueError(f"axis {axis} has length {length}, not divisible by {m}")
    outer = int(np.prod(shape[:axis], dtype=np.int64)) * (length // m)
    inner = int(np.prod(shape[axis + 1 :], dtype=np.int64))
    return np.ascontiguousarray(array).reshape(outer, m, inner)


def _keep_by_rank(scores: np.ndarray, n: int) -> np.ndarray:
    # rank_i = how many entries of the group beat entry i; ties go to the lower index.
    m = scores.shape[1]
    keep = np.empty(scores.shape, dtype=bool)
    for i in range(m):
        s_i = scores[:, i, :]
        rank = np.zeros(s_i.shape, dtype=np.uint8)
        for j in range(m):
            if j < i:
                rank += scores[:, j, :] >= s_i
            elif j > i:
                rank += scores[:, j, :] > s_i
        np.less(rank, n, out=keep[:, i, :])
    return keep


def _keep_by_sort(scores: np.ndarray, n: int) -> np.ndarray:
    m = scores.shape[1]
    # Stable ascending sort of the reversed group: the last n are the largest, and among
    # equal scores the lower original index sorts later, so it is kept.
    order = np.argsort(scores[:, ::-1, :], axis=1, kind="stable")[:, m - n :, :]
    keep = np.zeros(scores.shape, dtype=bool)
    np.put_along_axis(keep, (m - 1) - order, True, axis=1)
    return keep


def nm_keep_mask(scores: np.ndarray, axis: int, n: int, m: int) -> np.ndarray:
    """Boolean mask (shape of ``scores``): the n largest scores of each group of m along axis.

    Deterministic: on equal scores the entry with the lower index along ``axis`` is kept.
    """
    view = group_view(scores, axis, m)
    keep = np.empty(view.shape, dtype=bool)
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // max(1, m * view.shape[2]))
    kernel = _keep_by_rank if m <= _RANK_MAX_M else _keep_by_sort
    for start in range(0, view.shape[0], rows_per_chunk):
        stop = start + rows_per_chunk
        keep[start:stop] = kernel(view[start:stop], n)
    return keep.reshape(scores.shape)


def nm_violations(nonzero: np.ndarray, axis: int, n: int, m: int) -> tuple[int, int]:
    """(groups with more than n non-zeros, total groups) along ``axis``."""
    view = group_view(nonzero, axis, m)
    groups = view.shape[0] * view.shape[2]
    bad = 0
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // max(1, m * view.shape[2]))
    for start in range(0, view.shape[0], rows_per_chunk):
        counts = view[start : start + rows_per_chunk].sum(axis=1, dtype=np.int32)
        bad += int(np.count_nonzero(counts > n))
    return bad, groups
