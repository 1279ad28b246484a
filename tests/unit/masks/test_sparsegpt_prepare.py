"""SparseGPT's shared factors: shrinkage, damping, float32 storage and the refit toward the dense output."""

import numpy as np
import pytest

from sparsify.masks import sparsegpt as sg
from sparsify.masks.sparsegpt import SparseGPTError, prepare, sparsegpt_prune
from tests.builders import is_nm


def _subspace_data(seed=0, k=16, rank=4, rows=400):
    """Calibration inputs confined to a rank-``rank`` subspace of R^k, a drifted copy of them
    (the dense model's inputs, a linear map of them) in the same subspace, and an orthonormal basis of what they miss."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((k, k)))[0]
    seen, unseen = basis[:, :rank], basis[:, rank:]
    x = rng.standard_normal((rows, rank)) @ seen.T
    drift = np.eye(k) + 0.3 * seen @ rng.standard_normal((rank, rank)) @ seen.T  # linear, within the subspace
    x_dense = x @ drift
    return x, x_dense, unseen, rng.standard_normal((6, k))


def test_factor_is_the_inverse_of_the_shrunk_damped_hessian():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 12))
    h = x.T @ x
    u = prepare(h).factor
    assert u.dtype == np.float32 and np.allclose(np.triu(u), u)
    mean = float(np.mean(np.diag(h)))
    shrunk = (1 - sg.SHRINK) * h + sg.SHRINK * np.diag(np.diag(h)) + sg.DAMP * mean * np.eye(12)
    np.testing.assert_allclose(u.astype(np.float64).T @ u, np.linalg.inv(shrunk), rtol=2e-4, atol=1e-7)


def test_damping_grows_with_width_per_calibration_row():
    assert sg.damping(384, None) == sg.DAMP  # rows unknown
    values = [sg.damping(384, rows) for rows in (10, 1_000, 2_000, 4_000, 100_000)]
    assert values == sorted(values, reverse=True)  # more rows: less damping
    assert values[0] == sg.DAMP_MAX and values[-1] == sg.DAMP_MIN  # clipped at both ends
    assert sg.damping(384, 4_000) == pytest.approx(sg.DAMP_PER_WIDTH * 384 / 4_000)
    assert sg.damping(1536, 4_000) > sg.damping(384, 4_000)  # a wider input needs more rows


@pytest.mark.parametrize("rows", [None, 40, 100_000])
def test_prepare_damps_by_the_calibration_rows(rows):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((50, 12))
    h = x.T @ x
    u = prepare(h, rows=rows).factor  # no m: columns as stored
    mean = float(np.mean(np.diag(h)))
    damp = sg.damping(12, rows)
    shrunk = (1 - sg.SHRINK) * h + sg.SHRINK * np.diag(np.diag(h)) + damp * mean * np.eye(12)
    np.testing.assert_allclose(u.astype(np.float64).T @ u, np.linalg.inv(shrunk), rtol=2e-4, atol=1e-7)


def test_refit_is_a_no_op_without_drift():
    x, _, _, w = _subspace_data()
    h = x.T @ x
    np.testing.assert_allclose(prepare(h, np.zeros_like(h)).refit(w), w, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(prepare(h).refit(w), w.astype(np.float32))


def test_refit_moves_toward_the_dense_output_on_the_calibration_data():
    x, x_dense, _, w = _subspace_data(2)
    a = prepare(x.T @ x, x.T @ (x_dense - x)).refit(w).astype(np.float64)
    target = x_dense @ w.T
    assert np.linalg.norm(x @ a.T - target) < 0.5 * np.linalg.norm(x @ w.T - target)


def test_refit_keeps_the_weight_in_directions_the_calibration_data_never_excites():
    """A plain damped least-squares refit, (H + lambda I)^-1 C W^T, sends those directions to
    zero; the refit shrinks toward W instead."""
    x, x_dense, unseen, w = _subspace_data(3)
    h, c = x.T @ x, x.T @ x_dense
    a = prepare(h, c - h).refit(w).astype(np.float64)
    damped = h + sg.DAMP * np.mean(np.diag(h)) * np.eye(len(h))
    plain = np.linalg.solve(damped, c @ w.T).T
    kept = np.linalg.norm((a - w) @ unseen)
    lost = np.linalg.norm((plain - w) @ unseen)
    assert lost > 0.5 * np.linalg.norm(w @ unseen)  # the plain refit does lose them
    assert kept < 0.25 * lost  # not zero: the shrinkage toward diag(H) couples a little into them


def test_float32_factor_prunes_like_the_float64_path():
    rng = np.random.default_rng(4)
    w, x = rng.standard_normal((10, 32)), rng.standard_normal((200, 32))
    h = x.T @ x
    u64 = sg.inverse_factor(h, shrink=sg.SHRINK)
    got = sparsegpt_prune(w, h, 2, 4, factor=prepare(h).factor)
    expected = sparsegpt_prune(w, h, 2, 4, factor=u64)
    assert got.dtype == np.float32 and is_nm(got, 1)
    np.testing.assert_array_equal(got != 0, expected != 0)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)


def test_non_finite_drift_term_is_refused():
    h = np.eye(8)
    c = np.eye(8)
    c[0, 1] = np.nan
    with pytest.raises(SparseGPTError, match="non-finite"):
        prepare(h, c)


def test_without_scipy_the_numpy_factorisation_gives_the_same_factor(monkeypatch):
    import sys

    rng = np.random.default_rng(5)
    x = rng.standard_normal((40, 24))
    h = x.T @ x
    with_scipy = sg.inverse_factor(h, shrink=0.2)
    monkeypatch.setitem(sys.modules, "scipy.linalg", None)  # `from scipy.linalg import lapack` now fails
    without = sg.inverse_factor(h, shrink=0.2)
    np.testing.assert_allclose(without, with_scipy, rtol=1e-9, atol=1e-12)


def test_a_hessian_that_needs_more_damping_still_factors():
    """Rank one, negative eigenvalues from round-off: the retry adds ten times the damping."""
    v = np.arange(1, 17, dtype=np.float64)
    h = np.outer(v, v) - 1e-3 * np.eye(16) * float(np.mean(v**2))
    u = sg.inverse_factor(h, damp=1e-6)
    assert np.all(np.isfinite(u)) and np.allclose(np.triu(u), u)


@pytest.mark.parametrize("m", [None, 4])
def test_refit_with_blas_trmm_equals_the_plain_products(monkeypatch, m):
    """The refit's H_d^-1 products run as triangular BLAS products (column order or not); the
    NumPy path without SciPy gives the same weights."""
    import sys

    x, x_dense, _, w = _subspace_data(6, k=16, rows=300)
    h, drift = x.T @ x, x.T @ (x_dense - x)
    prepared = prepare(h, drift, m)
    u = prepared.factor.astype(np.float64)
    inverse = np.linalg.inv(u.T @ u) if m is None else None
    fast = prepared.refit(w)
    if inverse is not None:  # the plain formula, written out
        plain = w + (np.linalg.solve(inverse, drift.astype(np.float32) @ w.T.astype(np.float32))).T
        np.testing.assert_allclose(fast, plain, rtol=1e-3, atol=1e-3)
    monkeypatch.setitem(sys.modules, "scipy.linalg", None)
    np.testing.assert_allclose(prepared.refit(w), fast, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("width,bad,match", [(10, None, "not divisible by 4"), (16, None, "does not match the calibration Hessian's 12"),
                                             (12, np.nan, "non-finite"), (12, np.inf, "non-finite")])
def test_weights_obs_cannot_take_are_refused_with_the_reason(width, bad, match):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((50, 12))
    h = x.T @ x
    w = rng.standard_normal((6, width)).astype(np.float32)
    if bad is not None:
        w[2, 5] = bad
    with pytest.raises(SparseGPTError, match=match):
        prepare(h, m=4).prune(w, 2, 4)
    with pytest.raises(SparseGPTError, match=match):
        sparsegpt_prune(w, h, 2, 4)


def test_dead_inputs_weights_are_zero_in_both_entry_points():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((60, 12))
    x[:, [3, 7]] = 0.0  # never active
    h = x.T @ x
    w = rng.standard_normal((5, 12)).astype(np.float32)
    for pruned in (prepare(h, m=4).prune(w, 2, 4), sparsegpt_prune(w, h, 2, 4)):
        assert not pruned[:, [3, 7]].any() and is_nm(pruned, 1, 2, 4)


@pytest.mark.parametrize("k", [1, 2, 7, 64])
@pytest.mark.parametrize("chunk", [1, 3, 1 << 20])
def test_in_place_reversal_equals_a_reversed_copy(k, chunk, monkeypatch):
    monkeypatch.setattr(sg, "REVERSE_CHUNK", chunk)
    a = np.arange(k * k, dtype=np.float32).reshape(k, k)
    expected = a[::-1, ::-1].copy()
    out = sg._reversed_in_place(a)
    assert out is a
    np.testing.assert_array_equal(a, expected)


@pytest.mark.parametrize("rows", [1, 5, 256])
def test_the_permuted_damped_copy_equals_fancy_indexing(rows, monkeypatch):
    """H with rows and columns in OBS's order (then reversed), built block by block of rows."""
    monkeypatch.setattr(sg, "PERMUTE_ROWS", rows)
    rng = np.random.default_rng(rows)
    x = rng.standard_normal((50, 24))
    h = x.T @ x
    index = sg.group_order(h, 4)
    got = sg._damped(h, 0.0, 0.0, 0, np.float32, index)
    backwards = index[::-1]
    np.testing.assert_array_equal(got, h[np.ix_(backwards, backwards)].astype(np.float32))


@pytest.mark.parametrize("rows", [6, 40])
def test_without_scipy_the_whole_prune_gives_the_same_weights(monkeypatch, rows):
    """Without SciPy the fit's first residual is a product with H_d (not a triangular solve from
    OBS's errors) and the refit's solves are NumPy products: the same weights, to round-off."""
    import sys

    rng = np.random.default_rng(rows)
    x = rng.standard_normal((200, 16)) * rng.uniform(0.3, 2.0, 16)
    x_dense = x + 0.1 * rng.standard_normal((200, 16))
    h, drift = x.T @ x, x.T @ (x_dense - x)
    w = rng.standard_normal((rows, 16)).astype(np.float32)
    with_scipy = prepare(h, drift, m=4).prune(w, 2, 4)
    monkeypatch.setitem(sys.modules, "scipy.linalg", None)
    assert sg._upper_solve(np.eye(4, dtype=np.float32), np.ones((4, 2), np.float32)) is None
    without = prepare(h, drift, m=4).prune(w, 2, 4)
    assert np.array_equal(with_scipy != 0, without != 0)
    np.testing.assert_allclose(without, with_scipy, rtol=1e-3, atol=1e-4)
