"""Vectorized N:M kernel: which weights to keep, and whether a tensor already is N:M.

Groups are M consecutive entries along ``axis``.  The tensor is viewed (without copying)
as ``(rows, M, inner)`` where ``rows = prod(shape[:axis]) * L/M`` and ``inner =
prod(shape[axis+1:])``, so any axis works without a transpose.  Work is chunked over rows
to bound temporaries; there is no Python loop over groups.
"""

from __future__ import annotations

import numpy as np

__all__ = ["NMAudit", "group_view", "nm_keep_mask", "nm_violations", "prune_bits_inplace"]

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


class NMAudit:
    """Counts, over any number of pieces, the non-zero entries and the groups holding more than
    n of them.  An entry counts as non-zero when ``bits & mask != zero`` (floats: the magnitude
    bits, so -0.0 is zero; int8/uint8 behind DequantizeLinear: all bits against a scalar zero
    point).  Pieces are views ``(rows, m, inner)``; each is tested in ~1M-entry chunks through
    buffers reused for the whole audit, so no piece-sized temporary is ever allocated (page
    faults on fresh memory cost more than the test itself on small machines)."""

    def __init__(self, mask: np.integer, zero: np.integer, n: int):
        self.mask, self.zero, self.n = mask, zero, n
        self.nonzeros = self.bad = self.groups = 0
        self._buffers: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None

    def add(self, view: np.ndarray) -> None:
        rows, m, inner = view.shape
        per = max(1, (_CHUNK_ELEMENTS // 4) // max(1, m * inner))
        entries, groups = min(rows, per) * m * inner, min(rows, per) * inner
        if self._buffers is None or self._buffers[0].size < entries or self._buffers[0].dtype != view.dtype:
            self._buffers = (np.empty(entries, dtype=view.dtype), np.empty(entries, dtype=bool),
                             np.empty(groups, dtype=np.uint8), np.empty(groups, dtype=bool))  # m <= 64
        key, nonzero, counts, over = self._buffers
        for start in range(0, rows, per):
            chunk = view[start : start + per]
            size, groups = chunk.size, chunk.shape[0] * inner
            k = np.bitwise_and(chunk, self.mask, out=key[:size].reshape(chunk.shape))
            nz = np.not_equal(k, self.zero, out=nonzero[:size].reshape(chunk.shape))
            self.nonzeros += int(np.count_nonzero(nz))
            ones = nz.view(np.uint8)
            c = counts[:groups].reshape(chunk.shape[0], inner)
            np.copyto(c, ones[:, 0, :])
            for j in range(1, m):  # m-1 adds of whole slices beat a reduction over a short axis
                np.add(c, ones[:, j, :], out=c)
            self.bad += int(np.count_nonzero(np.greater(c, self.n, out=over[:groups].reshape(c.shape))))
            self.groups += groups


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
