"""The fit of the weights SparseGPT keeps: against an exact per-row solve, and never worse than OBS."""

import numpy as np
import pytest

from sparsify.masks import sparsegpt as sg
from sparsify.masks.kept_fit import DampedHessian, fit_kept
from sparsify.masks.sparsegpt import SparseGPTError, prepare, sparsegpt_prune
from tests.builders import is_nm


def _problem(seed: int, rows: int = 8, k: int = 32, tokens: int = 40):
    """Few calibration rows for K inputs (a noisy, nearly singular H, as with little data)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((tokens, k)) * rng.uniform(0.2, 3.0, k)
    return rng.standard_normal((rows, k)).astype(np.float32), x.T @ x


def _explicit(damped: DampedHessian) -> np.ndarray:
    return damped.explicit()


def _exact(target: np.ndarray, keep: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Row by row: a_S = w_S + H_SS^-1 H_SP w_P, zero elsewhere (an independent solve)."""
    out = np.zeros(target.shape)
    for i, (w, s) in enumerate(zip(target.astype(np.float64), keep, strict=True)):
        p = ~s
        out[i, s] = w[s] + np.linalg.solve(h[np.ix_(s, s)], h[np.ix_(s, p)] @ w[p])
    return out


def _objective(a: np.ndarray, target: np.ndarray, h: np.ndarray) -> np.ndarray:
    d = a.astype(np.float64) - target
    return np.einsum("ij,jk,ik->i", d, h, d)


def test_damped_hessian_is_the_shrunk_damped_matrix_the_factor_inverts():
    _, h = _problem(0)
    prepared = prepare(h)
    explicit = _explicit(prepared.damped)
    by_hand = (1 - sg.SHRINK) * h
    np.fill_diagonal(by_hand, prepared.damped.diagonal)
    np.testing.assert_allclose(explicit, by_hand, rtol=1e-6)
    assert np.all(prepared.damped.diagonal > np.diag(h))  # damped
    u = prepared.factor.astype(np.float64)
    np.testing.assert_allclose(u.T @ u, np.linalg.inv(explicit), rtol=3e-3, atol=1e-6)
    rows = np.random.default_rng(1).standard_normal((5, 32)).astype(np.float32)
    np.testing.assert_allclose(prepared.damped.times(rows), rows @ explicit, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("seed", range(6))
def test_fit_reaches_the_exact_least_squares_weights_for_the_mask(seed):
    target, h = _problem(seed)
    prepared = prepare(h)
    pruned = sparsegpt_prune(target, h, 2, 4, factor=prepared.factor)
    fitted = fit_kept(target, pruned, prepared.damped, iterations=200)
    explicit = _explicit(prepared.damped)
    exact = _exact(target, pruned != 0, explicit)
    assert is_nm(fitted, 1) and np.array_equal(fitted != 0, pruned != 0)
    np.testing.assert_allclose(fitted, exact, rtol=2e-3, atol=2e-3)
    # OBS alone is not that optimum (otherwise this test could not tell a fit from none)
    assert np.all(_objective(pruned, target, explicit) > _objective(exact, target, explicit) * (1 + 1e-3))


@pytest.mark.parametrize("seed", range(20))
def test_the_default_fit_never_ends_worse_than_obs_and_keeps_its_zeros(seed):
    rng = np.random.default_rng(100 + seed)
    target, h = _problem(seed + 100, rows=int(rng.integers(1, 12)), k=4 * int(rng.integers(2, 20)),
                         tokens=int(rng.integers(3, 200)))
    prepared = prepare(h)
    pruned = sparsegpt_prune(target, h, 2, 4, factor=prepared.factor)
    fitted = fit_kept(target, pruned, prepared.damped)
    explicit = _explicit(prepared.damped)
    before, after = _objective(pruned, target, explicit), _objective(fitted, target, explicit)
    assert np.all(after <= before * (1 + 1e-4) + 1e-6)
    assert np.all(fitted[pruned == 0] == 0) and fitted.dtype == pruned.dtype


def test_a_row_already_at_its_optimum_is_left_there():
    target, h = _problem(7)
    prepared = prepare(h)
    pruned = sparsegpt_prune(target, h, 2, 4, factor=prepared.factor)
    exact = _exact(target, pruned != 0, _explicit(prepared.damped)).astype(np.float32)
    again = fit_kept(target, exact, prepared.damped)
    np.testing.assert_allclose(again, exact, rtol=1e-3, atol=1e-4)


def test_dead_inputs_stay_zero_and_do_not_move_the_rest():
    """An input the calibration data never excites: OBS zeroes its weights; the fit leaves
    them zero, and the other columns fit as if it were absent."""
    target, h = _problem(8, k=16)
    h[:, 5] = h[5, :] = 0.0
    prepared = prepare(h, m=4)
    fitted = prepared.prune(target, 2, 4)
    assert is_nm(fitted, 1) and np.all(fitted[:, 5] == 0) and np.all(np.isfinite(fitted))
    explicit = _explicit(prepared.damped)
    np.testing.assert_allclose(fitted, _exact(target, fitted != 0, explicit), rtol=5e-3, atol=5e-3)


def test_without_a_damped_hessian_or_an_order_prune_is_obs_itself():
    target, h = _problem(9)
    prepared = sg.Prepared(sg.obs_factor(h))
    np.testing.assert_array_equal(prepared.prune(target, 2, 4), sparsegpt_prune(target, h, 2, 4, factor=prepared.factor))


def _permuted(h: np.ndarray, order: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(h[np.ix_(order, order)])


def test_group_order_keeps_groups_whole_and_puts_the_most_excited_first():
    rng = np.random.default_rng(10)
    h = np.diag(rng.uniform(0, 5, 24))
    order = sg.group_order(h, 4)
    groups = order.reshape(-1, 4)
    assert sorted(order.tolist()) == list(range(24))
    assert np.all(groups % 4 == np.arange(4)) and np.all(groups[:, 0] % 4 == 0)  # whole, aligned groups
    energy = np.diag(h)[groups].sum(axis=1)
    assert np.all(np.diff(energy) <= 0)


def test_ordered_prune_is_obs_on_the_permuted_problem_then_the_fit():
    """An independent composition: OBS on the columns and Hessian permuted by hand, its result
    put back in place, then the fit; the prepared prune must give the same weights."""
    target, h = _problem(11, k=32)
    prepared = prepare(h, m=4)
    order = prepared.order
    assert order is not None and not np.array_equal(order, np.arange(32))  # the order matters here
    hp = _permuted(h, order)
    factor = sg.inverse_factor(hp, sg.DAMP, sg.SHRINK, np.float32)
    np.testing.assert_allclose(prepared.factor, factor, rtol=1e-4, atol=1e-5)
    by_hand = np.empty_like(target)
    by_hand[:, order] = sparsegpt_prune(target[:, order], hp, 2, 4, factor=factor)
    expected = fit_kept(target, by_hand, prepared.damped)
    got = prepared.prune(target, 2, 4)
    assert is_nm(got, 1) and np.array_equal(got != 0, expected != 0)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def _drifted(seed, rows):
    """Calibration rows X [rows, 16] and the dense model's X_dense near them: (rng, X, X_dense, H, C - H),
    the generator left where the next draws (the weights) come from."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, 16))
    x_dense = x + 0.1 * rng.standard_normal((rows, 16))
    return rng, x, x_dense, x.T @ x, x.T @ (x_dense - x)


def test_the_refit_does_not_depend_on_the_column_order():
    rng, _, _, h, drift = _drifted(12, 60)
    w = rng.standard_normal((5, 16))
    ordered, stored = prepare(h, drift, m=4), prepare(h, drift)
    assert ordered.order is not None
    np.testing.assert_allclose(ordered.refit(w), stored.refit(w), rtol=1e-3, atol=1e-4)


def test_products_through_few_samples_equal_products_through_the_hessian():
    """H = X^T X from T << K rows: (p X^T) X is the same product at a fraction of the work."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((6, 40)).astype(np.float32)
    h = x.T.astype(np.float64) @ x
    with_rows, without = prepare(h, m=4, samples=x), prepare(h, m=4)
    assert with_rows.damped.samples is not None and without.damped.samples is None
    p = rng.standard_normal((7, 40)).astype(np.float32)
    np.testing.assert_allclose(with_rows.damped.times(p), without.damped.times(p), rtol=1e-4, atol=1e-4)
    target = rng.standard_normal((7, 40)).astype(np.float32)
    np.testing.assert_allclose(with_rows.prune(target, 2, 4), without.prune(target, 2, 4), rtol=1e-3, atol=1e-4)
    assert prepare(h, samples=x[:, :8]).damped.samples is None  # rows of another width are not used


def test_a_hessian_given_to_overwrite_becomes_the_damped_one_with_the_same_result():
    """``overwrite``: no second K x K matrix; the float32 H turns into H_d in place, and the
    prune is the same as with a copy.  A float64 H (not the fit's precision) is never written."""
    target, h = _problem(14, k=32)
    h32 = h.astype(np.float32)
    copied, owned = prepare(h32.copy(), m=4), prepare(h32, m=4, overwrite=True)
    assert owned.damped.matrix is h32 and copied.damped.matrix is not None
    np.testing.assert_array_equal(h32, copied.damped.matrix)
    np.testing.assert_array_equal(owned.prune(target, 2, 4), copied.prune(target, 2, 4))
    h64 = h.copy()
    prepare(h64, m=4, overwrite=True)
    np.testing.assert_array_equal(h64, h)


@pytest.mark.parametrize("rows", [1, 255, 256, 257, 600])
def test_the_fit_over_blocks_of_rows_equals_one_solve_per_row(rows, monkeypatch):
    """Rows are solved in blocks of BLOCK_ROWS; each row's result must not depend on which block
    it fell in (compared with every row fitted on its own)."""
    rng = np.random.default_rng(rows)
    x = rng.standard_normal((200, 16)) * rng.uniform(0.2, 3.0, 16)
    h = x.T @ x
    target = rng.standard_normal((rows, 16)).astype(np.float32)
    prepared = prepare(h, m=4)
    pruned = sparsegpt_prune(target, h, 2, 4, factor=prepared.factor)
    blocked = fit_kept(target, pruned, prepared.damped)
    alone = np.concatenate([fit_kept(target[i:i + 1], pruned[i:i + 1], prepared.damped) for i in range(rows)])
    np.testing.assert_allclose(blocked, alone, rtol=1e-4, atol=1e-4)  # round-off of other product shapes
    monkeypatch.setattr("sparsify.masks.kept_fit.BLOCK_ROWS", 7)
    np.testing.assert_allclose(fit_kept(target, pruned, prepared.damped), blocked, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("with_order", [True, False])
def test_the_refit_through_a_formed_map_equals_the_formula(with_order):
    """A weight with at least K rows forms M = H_d^-1 (C - H) once; from then on every weight
    sharing the Hessian (short ones too) is refit as W + W M^T.  Both routes must give
    W + (H_d^-1 (C - H) W^T)^T, computed here in float64 from H_d itself."""
    rng, _, _, h, drift = _drifted(15, 80)
    prepared = prepare(h, drift, m=4 if with_order else None)
    explicit = prepared.damped.explicit()

    def formula(w):
        return w + np.linalg.solve(explicit, drift @ w.T).T

    short, tall = rng.standard_normal((5, 16)), rng.standard_normal((20, 16))
    np.testing.assert_allclose(prepared.refit(short), formula(short), rtol=1e-3, atol=1e-4)
    assert prepared.refit_map is None  # a short weight alone: no K x K map
    np.testing.assert_allclose(prepared.refit(tall), formula(tall), rtol=1e-3, atol=1e-4)
    assert prepared.refit_map is not None and prepared.shift is None
    np.testing.assert_allclose(prepared.refit(short), formula(short), rtol=1e-3, atol=1e-4)


def test_the_first_residual_from_obs_errors_is_the_product_with_h_d():
    """OBS leaves ``target - U^T E``: U^-1 E (a triangular solve) must equal H_d (target - pruned),
    the residual the fit would otherwise compute with a product."""
    target, h = _problem(16, rows=6, k=32)
    prepared = prepare(h, m=4)
    order = prepared.order
    visited = np.ascontiguousarray(target.T[order])
    errors = np.zeros_like(visited)
    sg._obs_transposed(visited, prepared.factor, 2, 4, sg.BLOCK, errors)
    pruned = np.empty_like(target)
    pruned.T[order] = visited
    first = np.empty_like(target)
    first.T[order] = sg._upper_solve(prepared.factor, errors.copy())
    expected = (target.astype(np.float64) - pruned) @ prepared.damped.explicit()
    np.testing.assert_allclose(first, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())


@pytest.mark.parametrize("iterations", [1, 2])
def test_a_given_number_of_iterations_is_that_many_conjugate_gradient_steps(iterations):
    """One and two preconditioned CG steps, written out in float64 row by row."""
    target, h = _problem(17, rows=4, k=16)
    prepared = prepare(h, m=4)
    pruned = prepared.prune(target, 2, 4, fit_iterations=0)
    refit = prepared.refit(target)
    got = fit_kept(refit, pruned, prepared.damped, iterations=iterations)
    hd = prepared.damped.explicit()
    expected = pruned.astype(np.float64)
    for row in range(len(expected)):
        p = (pruned[row] != 0) / prepared.damped.diagonal.astype(np.float64)
        a = expected[row]
        r = (refit[row] - a) @ hd
        z = r * p
        d = z.copy()
        for _ in range(iterations):
            step = d @ hd
            alpha = (r @ z) / (d @ step)
            a = a + alpha * d
            r_next = r - alpha * step
            z_next = r_next * p
            d = z_next + (r_next @ z_next) / (r @ z) * d
            r, z = r_next, z_next
        expected[row] = a
    assert not np.allclose(expected, pruned, rtol=1e-3, atol=1e-4)  # the steps move the weights
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("with_order", [True, False])
def test_the_refit_from_a_measured_projection_equals_the_formula(with_order):
    """A weight whose drift was summed as X^T ((X_dense - X) W^T) during calibration is refit from
    that [K, rows] term alone: the same W + (H_d^-1 (C - H) W^T)^T, without any K x K drift."""
    rng, x, x_dense, h, drift = _drifted(16, 80)
    prepared = prepare(h, None, m=4 if with_order else None)
    explicit = prepared.damped.explicit()
    w = rng.standard_normal((5, 16))
    projected = (x.T @ ((x_dense - x) @ w.T)).astype(np.float32)
    np.testing.assert_allclose(prepared.refit(w, projected), w + np.linalg.solve(explicit, drift @ w.T).T,
                               rtol=1e-3, atol=1e-4)
    np.testing.assert_array_equal(prepared.refit(w), w.astype(np.float32))  # no drift at all: unchanged
    with pytest.raises(SparseGPTError, match="drift term"):
        prepared.refit(w, projected.T)  # [rows, K]: the wrong way round
    with pytest.raises(SparseGPTError, match="drift term"):
        prepared.refit(w, np.full_like(projected, np.nan))
