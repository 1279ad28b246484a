"""Property tests of the vectorized N:M kernel against an independent reference."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sparsify.masks.nm import nm_keep_mask, nm_violations
from tests.builders import groups, is_nm, reference_prune

PATTERNS = st.sampled_from([(1, 2), (2, 4), (1, 4), (3, 4), (4, 8), (2, 8), (5, 16)])


# Small integer-valued floats make ties common, which exercises the tie-break.
TIES = st.integers(-4, 4).map(float)


@st.composite
def weight_and_axis(draw, elements=TIES):
    """(float32 weight, axis, n, m) with the axis a multiple of m."""
    n, m = draw(PATTERNS)
    rank = draw(st.integers(1, 4))
    axis = draw(st.integers(0, rank - 1))
    shape = [draw(st.integers(1, 5)) for _ in range(rank)]
    shape[axis] = m * draw(st.integers(1, 4))
    values = draw(hnp.arrays(np.float32, shape, elements=elements))
    return values, axis, n, m


def _prune(w, axis, n, m):
    keep = nm_keep_mask(np.abs(w), axis, n, m)
    return np.where(keep, w, np.float32(0)), keep


@settings(max_examples=300, deadline=None)
@given(weight_and_axis())
def test_nm_holds_along_axis(case):
    w, axis, n, m = case
    out, _ = _prune(w, axis, n, m)
    assert is_nm(out, axis, n, m)
    bad, total = nm_violations(out != 0, axis, n, m)
    assert bad == 0 and total == w.size // m


@settings(max_examples=300, deadline=None)
@given(weight_and_axis())
def test_matches_reference_including_ties(case):
    w, axis, n, m = case
    out, _ = _prune(w, axis, n, m)
    np.testing.assert_array_equal(out, reference_prune(w, axis, n, m))


@settings(max_examples=200, deadline=None)
@given(weight_and_axis())
def test_kept_values_are_the_largest_and_unchanged(case):
    w, axis, n, m = case
    out, keep = _prune(w, axis, n, m)
    assert keep.sum() == w.size * n // m
    np.testing.assert_array_equal(out[keep].view(np.uint32), w[keep].view(np.uint32))
    kept_groups = groups(np.where(keep, np.abs(w), np.inf), axis, m).min(-1)
    dropped = groups(np.where(keep, -np.inf, np.abs(w)), axis, m).max(-1)
    assert (kept_groups >= dropped).all()


@settings(max_examples=200, deadline=None)
@given(weight_and_axis())
def test_idempotent(case):
    w, axis, n, m = case
    once, _ = _prune(w, axis, n, m)
    twice, _ = _prune(once, axis, n, m)
    np.testing.assert_array_equal(once, twice)


def test_violations_counts_bad_groups():
    x = np.array([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=bool)
    assert nm_violations(x, 1, 2, 4) == (1, 2)
    assert nm_violations(x.T, 0, 2, 4) == (1, 2)


@settings(max_examples=300, deadline=None)
@given(weight_and_axis())
def test_in_place_bit_kernel_matches_reference(case):
    from sparsify.masks.nm import prune_bits_inplace

    w, axis, n, m = case
    bits = w.copy().view(np.uint32)
    before, after, bad, total = prune_bits_inplace(bits, np.uint32(0x7FFFFFFF), axis, n, m)
    out = bits.view(np.float32)
    np.testing.assert_array_equal(out, reference_prune(w, axis, n, m))
    assert before == np.count_nonzero(w) and after == np.count_nonzero(out)
    assert (bad == 0) == is_nm(w, axis, n, m) and total == w.size // m
    # Entries that were zero keep their exact bits (-0.0 stays -0.0).
    zeros = w == 0
    np.testing.assert_array_equal(bits[zeros], w.view(np.uint32)[zeros])


def test_one_factorisation_gives_the_reference_upper_factor_of_the_inverse():
    """SparseGPT's reference: cholesky(cholesky_inverse(cholesky(H)), upper=True)."""
    from sparsify.masks.sparsegpt import _inverse_cholesky

    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 48))
    h = x.T @ x
    h[5, :] = h[:, 5] = 0.0  # a dead input
    got = _inverse_cholesky(h, 0.01)
    ref = h.copy()
    ref[5, 5] = 1.0
    ref += np.eye(48) * 0.01 * np.mean(np.diag(ref))
    lower = np.linalg.cholesky(ref)
    inverse = np.linalg.inv(lower)
    expected = np.linalg.cholesky(inverse.T @ inverse).T
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    assert np.allclose(np.triu(got), got)


def _reference_sparsegpt(w, hinv, n, m, block):
    """The column-by-column loop of the SparseGPT reference code (lazy batch updates)."""
    w = w.copy()
    rows, cols = w.shape
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        w1, err, h1 = w[:, i1:i2].copy(), np.zeros((rows, i2 - i1)), hinv[i1:i2, i1:i2]
        pruned = np.zeros(w1.shape, dtype=bool)
        for i in range(i2 - i1):
            if i % m == 0:
                cost = w1[:, i:i + m] ** 2 / np.diag(h1)[i:i + m][None, :] ** 2
                order = np.argsort(cost, axis=1, kind="stable")
                drop = np.zeros_like(cost, dtype=bool)
                np.put_along_axis(drop, order[:, :m - n], True, axis=1)
                pruned[:, i:i + m] = drop
            column = w1[:, i]
            q = np.where(pruned[:, i], 0.0, column)
            e = (column - q) / h1[i, i]
            w1[:, i:] -= np.outer(e, h1[i, i:])
            w1[:, i] = q
            err[:, i] = e
        w[:, i1:i2] = w1
        w[:, i2:] -= err @ hinv[i1:i2, i2:]
    return w


@pytest.mark.parametrize("n, m, block", [(2, 4, 128), (2, 4, 8), (1, 4, 16), (4, 8, 32), (3, 16, 32), (1, 2, 8)])
def test_group_batched_sparsegpt_equals_the_column_by_column_reference(n, m, block):
    from sparsify.masks.sparsegpt import DAMP, _inverse_cholesky, sparsegpt_prune

    rng = np.random.default_rng(n * 10 + m)
    w, x = rng.standard_normal((12, 64)), rng.standard_normal((300, 64))
    h = x.T @ x
    got = sparsegpt_prune(w, h, n, m, block=block)
    expected = _reference_sparsegpt(w, _inverse_cholesky(h, DAMP), n, m, max(m, (block // m) * m))
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-10)
    assert np.count_nonzero(got) == w.size * n // m
    assert not np.signbit(got[got == 0]).any()  # pruned entries are +0.0 (a -0.0 has non-zero bits)


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (3, 8), (5, 16)])
def test_ties_in_the_cost_go_to_the_lower_column_as_in_the_reference(n, m):
    """Equal costs in a group (equal magnitudes, H a multiple of I): the lower column is dropped
    first, as a stable sort orders them, by comparisons (M <= 8) or by a sort (larger M)."""
    from sparsify.masks.sparsegpt import DAMP, _inverse_cholesky, sparsegpt_prune

    rng = np.random.default_rng(m * 7 + n)
    w = rng.integers(-2, 3, (9, 4 * m)).astype(np.float64)
    h = 4.0 * np.eye(4 * m)
    got = sparsegpt_prune(w, h, n, m)
    expected = _reference_sparsegpt(w, _inverse_cholesky(h, DAMP), n, m, 128)
    assert np.array_equal(got != 0, expected != 0)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)
    assert not np.signbit(got[got == 0]).any()  # +0.0: a -0.0 would read as non-zero bits
