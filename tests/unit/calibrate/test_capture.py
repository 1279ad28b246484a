"""Calibration statistics against plain NumPy over all rows at once, for every chunk size."""

import numpy as np
import pytest

from sparsify.calibrate import capture
from sparsify.calibrate.capture import StatsKey, accumulate


def _samples(seed=0, k=6):
    """Samples of different lengths ([1, tokens, k]), as a segmented run hands them over."""
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, tokens, k)).astype(np.float32)} for tokens in (5, 9, 3, 12, 7)]


@pytest.mark.parametrize("chunk_rows", [1, 8, 10, 1000])
def test_sums_hessian_and_drift_equal_numpy_over_all_rows(monkeypatch, chunk_rows):
    monkeypatch.setattr(capture, "CHUNK_ROWS", chunk_rows)
    samples, dense = _samples(1), _samples(2)
    key = StatsKey("x", -1)
    stats: dict = {}
    accumulate(stats, {key}, {key}, samples[:2], dense[:2])
    accumulate(stats, {key}, {key}, samples[2:], dense[2:])  # two calls add up, as over stages' batches
    x = np.concatenate([s["x"].reshape(-1, 6) for s in samples]).astype(np.float64)
    xd = np.concatenate([s["x"].reshape(-1, 6) for s in dense]).astype(np.float64)
    entry = stats[key]
    assert entry.rows == len(x) == 36
    np.testing.assert_allclose(entry.hessian, x.T @ x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(entry.drift, x.T @ (xd - x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(entry.sq_norm, (x ** 2).sum(0), rtol=1e-5)
    np.testing.assert_allclose(entry.total, x.sum(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(entry.dense_total, xd.sum(0), rtol=1e-5, atol=1e-5)
    assert entry.hessian.dtype == np.float64 and entry.drift.dtype == np.float32
    hessian = entry.hessian.copy()
    capture.finish(stats)  # the sum is complete: kept as float32 for the float32 factorisation
    assert entry.hessian.dtype == np.float32
    np.testing.assert_allclose(entry.hessian, hessian, rtol=1e-6)


def test_without_a_hessian_only_the_norms_are_kept():
    key = StatsKey("x", -1)
    stats: dict = {}
    accumulate(stats, {key}, set(), _samples(3), _samples(4))
    assert stats[key].hessian is None and stats[key].drift is None and stats[key].rows == 36


def test_a_missing_activation_is_an_error_that_names_it():
    with pytest.raises(ValueError, match="'y'"):
        accumulate({}, {StatsKey("y", -1)}, set(), _samples())


def test_a_wide_input_is_summed_in_chunks_of_at_least_k_rows(monkeypatch):
    """Each chunk's product is added into the float64 sum (a pass over K x K values): a K-wide
    input stacks at least K rows per product, however small CHUNK_ROWS, and the sum is unchanged."""
    monkeypatch.setattr(capture, "CHUNK_ROWS", 1)
    rows_per_product = []
    real_gram = capture._gram

    def counting(a, b):
        rows_per_product.append(a.shape[-2])
        return real_gram(a, b)

    monkeypatch.setattr(capture, "_gram", counting)
    rng = np.random.default_rng(5)
    samples = [{"x": rng.standard_normal((1, 5, 16)).astype(np.float32)} for _ in range(9)]
    key = StatsKey("x", -1)
    stats: dict = {}
    accumulate(stats, {key}, {key}, samples)
    assert rows_per_product == [20, 20, 5]  # 16 rows reached after 4 samples of 5; the rest at the end
    x = np.concatenate([s["x"].reshape(-1, 16) for s in samples]).astype(np.float64)
    np.testing.assert_allclose(stats[key].hessian, x.T @ x, rtol=1e-5, atol=1e-5)


def test_one_chunk_stays_float32_more_become_a_float64_sum_and_inputs_are_not_touched():
    """A Hessian summed from one chunk is that chunk's float32 product (no float64 round trip);
    a second chunk turns the sum to float64.  The caller's activations (the dense ones too,
    from which X_dense - X is formed) are never written."""
    rng = np.random.default_rng(6)
    one = [{"x": rng.standard_normal((1, 40, 8)).astype(np.float32)}]
    dense = [{"x": one[0]["x"] + rng.standard_normal((1, 40, 8)).astype(np.float32)}]
    kept = one[0]["x"].copy(), dense[0]["x"].copy()
    key = StatsKey("x", -1)
    stats: dict = {}
    accumulate(stats, {key}, {key}, one, dense)
    x, xd = kept[0].reshape(-1, 8).astype(np.float64), kept[1].reshape(-1, 8).astype(np.float64)
    assert stats[key].hessian.dtype == np.float32 and stats[key].summed_rows == 40
    np.testing.assert_allclose(stats[key].hessian, x.T @ x, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(stats[key].drift, x.T @ (xd - x), rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(one[0]["x"], kept[0])
    np.testing.assert_array_equal(dense[0]["x"], kept[1])
    accumulate(stats, {key}, {key}, one, dense)  # the same rows again: the sum doubles
    assert stats[key].hessian.dtype == np.float64 and stats[key].summed_rows == 80
    np.testing.assert_allclose(stats[key].hessian, 2 * x.T @ x, rtol=1e-5, atol=1e-4)
    capture.finish(stats)
    assert stats[key].hessian.dtype == np.float32


@pytest.mark.parametrize("chunk_rows", [1, 8, 1000])
def test_the_drift_summed_per_weight_equals_numpy(monkeypatch, chunk_rows):
    """With the weights reading an input given, their drift is summed as X^T ((X_dense - X) W^T),
    [K, rows] per weight, and no K x K drift is kept; the Hessian is summed as before."""
    monkeypatch.setattr(capture, "CHUNK_ROWS", chunk_rows)
    samples, dense = _samples(3), _samples(4)
    key = StatsKey("x", -1)
    rng = np.random.default_rng(5)
    given = {"a": rng.standard_normal((2, 6)).astype(np.float32), "b": rng.standard_normal((1, 6)).astype(np.float32)}
    kept = {name: w.copy() for name, w in given.items()}
    stats: dict = {}
    accumulate(stats, {key}, {key}, samples[:3], dense[:3], {key: given})
    accumulate(stats, {key}, {key}, samples[3:], dense[3:], {key: given})
    x = np.concatenate([s["x"].reshape(-1, 6) for s in samples]).astype(np.float64)
    xd = np.concatenate([s["x"].reshape(-1, 6) for s in dense]).astype(np.float64)
    entry = stats[key]
    assert entry.drift is None and sorted(entry.projected) == ["a", "b"]
    for name, w in kept.items():
        np.testing.assert_allclose(entry.projected[name], x.T @ ((xd - x) @ w.T.astype(np.float64)), rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(given[name], w)  # the weights are only read
    np.testing.assert_allclose(entry.hessian, x.T @ x, rtol=1e-5, atol=1e-5)
    other = StatsKey("y", -1)  # weights for another key: this one keeps the K x K term
    stats = {}
    accumulate(stats, {key}, {key}, samples, dense, {other: given})
    assert stats[key].projected == {} and stats[key].drift is not None


@pytest.mark.parametrize(("width", "rows", "expected"), [(64, 16, True), (64, 31, True), (64, 32, False),
                                                         (64, 192, False), (64, 0, False)])
def test_the_drift_is_summed_per_weight_only_for_few_rows(width, rows, expected):
    assert capture.projects(width, rows) is expected
