"""Channel permutation for N:M (Pool & Yu 2021, NVIDIA ASP): reorder a weight's input
channels so that the groups of M hold less-important weights together, raising the
magnitude (or score) that N:M keeps.

The search is ASP's idea of channel swaps between groups, vectorized: each round draws many
random pairs of groups, evaluates every swap of one channel between the two, and applies
the best improving swaps that touch disjoint groups.  Deterministic for a given seed.
"""

from __future__ import annotations

import numpy as np

__all__ = ["retained", "search_permutation"]


def _kept(groups: np.ndarray, n: int) -> np.ndarray:
    """Score kept per group: the n largest of every column, summed.  groups [..., m, cols]."""
    return np.sort(groups, axis=-2)[..., -n:, :].sum(axis=(-2, -1))


def retained(scores: np.ndarray, n: int, m: int) -> float:
    """Total score kept by N:M along axis 0 of ``scores`` [K, cols]."""
    return float(_kept(scores.reshape(-1, m, scores.shape[1]), n).sum())


def _without_each_row(groups: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """For every group and every row i removed: (sum of the n-1 largest left, n-th largest left).

    Inserting a value v then keeps ``base + max(nth, v)`` per column: no sort per candidate.
    """
    count, m, cols = groups.shape
    base = np.empty((count, m, cols))
    nth = np.empty((count, m, cols))
    for i in range(m):
        rest = np.sort(np.delete(groups, i, axis=1), axis=1)[:, ::-1, :]  # descending
        base[:, i] = rest[:, : n - 1].sum(axis=1)
        nth[:, i] = rest[:, n - 1]
    return base, nth


def search_permutation(scores: np.ndarray, n: int, m: int, *, rounds: int = 100, pairs: int = 512,
                       seed: int = 0) -> np.ndarray:
    """A permutation ``p`` of the K rows of ``scores`` [K, cols] (non-negative) such that
    ``retained(scores[p])`` is at least ``retained(scores)`` (swaps are applied only when
    they gain)."""
    k = scores.shape[0]
    groups_count = k // m
    perm = np.arange(k)
    if groups_count < 2:
        return perm
    rng = np.random.default_rng(seed)
    current = scores.astype(np.float64)
    stale = 0
    for _ in range(rounds):
        g = current.reshape(groups_count, m, -1)
        kept = _kept(g, n)
        base, nth = _without_each_row(g, n)
        a = rng.integers(0, groups_count, pairs)
        b = rng.integers(0, groups_count - 1, pairs)
        b = np.where(b >= a, b + 1, b)
        # swap row i of group a with row j of group b: gain[P, i, j]
        new_a = (base[a][:, :, None, :] + np.maximum(nth[a][:, :, None, :], g[b][:, None, :, :])).sum(-1)
        new_b = (base[b][:, None, :, :] + np.maximum(nth[b][:, None, :, :], g[a][:, :, None, :])).sum(-1)
        gain = (new_a + new_b - (kept[a] + kept[b])[:, None, None]).reshape(pairs, -1)
        best = gain.argmax(axis=1)
        best_gain = gain[np.arange(pairs), best]
        used = np.zeros(groups_count, dtype=bool)
        applied = 0
        for p in np.argsort(-best_gain, kind="stable"):
            if best_gain[p] <= 1e-9 * (1 + abs(kept[a[p]])):
                break
            if used[a[p]] or used[b[p]]:
                continue
            used[a[p]] = used[b[p]] = True
            i, j = divmod(int(best[p]), m)
            ra, rb = a[p] * m + i, b[p] * m + j
            current[[ra, rb]] = current[[rb, ra]]
            perm[[ra, rb]] = perm[[rb, ra]]
            applied += 1
        stale = stale + 1 if applied == 0 else 0
        if stale >= 3:
            break
    return perm
