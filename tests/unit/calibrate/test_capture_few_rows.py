"""Calibration keeps the activation rows themselves only while they are few (T <= K / 4)."""

import numpy as np

from sparsify.calibrate.capture import StatsKey, accumulate, finish


def _stats(rows_per_sample: int, samples: int, k: int = 64):
    rng = np.random.default_rng(rows_per_sample)
    key = StatsKey("x", -1)
    values = [{"x": rng.standard_normal((rows_per_sample, k)).astype(np.float32)} for _ in range(samples)]
    stats: dict = {}
    accumulate(stats, {key}, {key}, values)
    return finish(stats)[key], np.concatenate([v["x"] for v in values])


def test_few_rows_are_kept_and_reproduce_the_hessian():
    entry, x = _stats(4, 4)  # 16 rows, K = 64: 16 <= 64 / 4
    assert isinstance(entry.few_rows, np.ndarray) and entry.few_rows.shape == (16, 64)
    np.testing.assert_allclose(entry.few_rows.T.astype(np.float64) @ entry.few_rows, entry.hessian, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(entry.few_rows, x)


def test_many_rows_are_not_kept():
    entry, _ = _stats(4, 5)  # 20 rows > 16
    assert entry.few_rows is None and entry.hessian is not None


def test_without_a_hessian_no_rows_are_kept():
    rng = np.random.default_rng(0)
    key = StatsKey("x", -1)
    stats: dict = {}
    accumulate(stats, {key}, set(), [{"x": rng.standard_normal((2, 64)).astype(np.float32)}])
    assert finish(stats)[key].few_rows is None
