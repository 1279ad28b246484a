"""Vectorized N:M kernel: which weights to keep, and whether a tensor already is N:M.

Groups are M consecutive entries along ``axis``.  The tensor is viewed (without copying)
as ``(rows, M, inner)`` where ``rows = prod(shape[:axis]) * L/M`` and ``inner =
prod(shape[axis+1:])``, so any axis works without a transpose.  Work is chunked over rows
to bound temporaries; there is no Python loop over groups.
"""

from __future__ import annotations

import numpy as np

__all__ = ["group_view", "nm_keep_mask", "nm_violations", "prune_bits_inplace"]

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
    # One comparison per pair (i < j): g = s_i >= s_j means i beats j, else j beats i.
    m = scores.shape[1]
    ranks = [np.full(scores.shape[::2], m - 1 - i, dtype=np.int8) for i in range(m)]
    for i in range(m):
        s_i = scores[:, i, :]
        for j in range(i + 1, m):
            g = s_i >= scores[:, j, :]
            ranks[j] += g
            ranks[i] -= g
    keep = np.empty(scores.shape, dtype=bool)
    for i in range(m):
        np.less(ranks[i], n, out=keep[:, i, :])
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


def prune_bits_inplace(bits: np.ndarray, abs_mask: np.integer, axis: int, n: int, m: int) -> tuple[int, int, int, int]:
    """Zero, in place, every non-zero float outside the n largest |x| of its group.

    ``bits`` holds IEEE float bit patterns (uint32 or uint16); ``bits & abs_mask`` orders
    like |x|.  Works chunk by chunk with small temporaries, so a weight of any size costs
    one pass and no weight-sized allocations.  Entries that are already zero (±0.0) are
    never rewritten, and when no group violates N:M nothing is written at all.

    Returns (non-zeros before, non-zeros after, violating groups, groups).
    """
    view = group_view(bits, axis, m)
    if not np.shares_memory(view, bits):
        raise ValueError("prune_bits_inplace needs a C-contiguous array")
    kernel = _keep_by_rank if m <= _RANK_MAX_M else _keep_by_sort
    rows_per_chunk = max(1, (_CHUNK_ELEMENTS // 4) // max(1, m * view.shape[2]))
    before = after = bad = 0
    for start in range(0, view.shape[0], rows_per_chunk):
        chunk = view[start : start + rows_per_chunk]
        key = chunk & abs_mask
        nonzero = key != 0
        counts = nonzero.sum(axis=1, dtype=np.int32)
        chunk_bad = int(np.count_nonzero(counts > n))
        nonzero_count = int(counts.sum())
        before += nonzero_count
        if not chunk_bad:
            after += nonzero_count
            continue
        bad += chunk_bad
        keep = kernel(key, n)
        # Multiplying by (kept or already zero) zeroes exactly the dropped non-zeros; it
        # is ~15x faster than copyto(where=) and leaves -0.0 entries alone.
        np.multiply(chunk, keep | ~nonzero, out=chunk, casting="unsafe")
        kept = np.logical_and(keep, nonzero, out=keep)
        kept_counts = kept.sum(axis=1, dtype=np.int32)
        # Post-condition: a wrong-axis or partial prune must never reach the writer.
        if (kept_counts > n).any():
            raise AssertionError("internal error: group still holds more than N non-zeros after pruning")
        after += int(kept_counts.sum())
    return before, after, bad, view.shape[0] * view.shape[2]
