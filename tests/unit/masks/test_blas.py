"""BLAS threads: one for the OBS group loop, no more than the free cores for the rest, restored after."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from sparsify.masks import blas
from sparsify.masks.sparsegpt import obs_factor, sparsegpt_prune


def _threads() -> list[int]:
    blas._controller()  # loads SciPy's LAPACK too, as the first factorisation would
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_small_ops_run_on_one_thread_and_restore_the_default():
    before = _threads()
    assert before
    with blas.small_ops():
        assert set(_threads()) == {1}
    assert _threads() == before


def test_no_limit_when_switched_off(monkeypatch):
    monkeypatch.setattr(blas, "SMALL_OPS_THREADS", None)
    before = _threads()
    with blas.small_ops(), blas.large_ops():
        assert _threads() == before


@pytest.mark.parametrize("load,expected", [(0.0, None), (1.0, None), (50.0, 1)])
def test_large_ops_use_at_most_the_free_cores(monkeypatch, load, expected):
    monkeypatch.setattr(blas.os, "getloadavg", lambda: (load, load, load))
    before = _threads()
    with blas.large_ops():
        inside = _threads()
    assert _threads() == before
    if expected is None:  # an idle machine: the library's own threads
        assert inside == before
    else:
        assert set(inside) == {expected}


def test_free_cores_is_between_one_and_the_usable_cores(monkeypatch):
    cores = len(blas.os.sched_getaffinity(0))
    for load, free in ((0.0, cores), (1.0, cores), (1.0 + cores, 1), (1000.0, 1)):
        monkeypatch.setattr(blas.os, "getloadavg", lambda load=load: (load, load, load))
        assert blas.free_cores() == free

    def unavailable():
        raise OSError("no load average")

    monkeypatch.setattr(blas.os, "getloadavg", unavailable)
    assert blas.free_cores() == cores


def test_thread_limits_do_not_change_what_sparsegpt_keeps(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 64)).astype(np.float32)
    hessian = x.T @ x
    weight = rng.standard_normal((96, 64)).astype(np.float32)
    factor = obs_factor(hessian)
    limited = sparsegpt_prune(weight, hessian, 2, 4, factor=factor)
    monkeypatch.setattr(blas, "SMALL_OPS_THREADS", None)
    free = sparsegpt_prune(weight, hessian, 2, 4, factor=factor)
    np.testing.assert_array_equal(limited != 0, free != 0)
    np.testing.assert_allclose(limited, free, rtol=1e-4, atol=1e-5)


def test_blas_libraries_name_the_library_and_its_threads():
    names = blas.blas_libraries()
    assert names and all("threads)" in name for name in names)
