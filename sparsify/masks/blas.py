"""BLAS threading, chosen deliberately (docs/methods.md, "BLAS threads").

SparseGPT's OBS step works through each block of columns in groups of M: a few products of a
[rows, M] slice with a [M, block] one per group — too small to share between threads.  OpenBLAS
still wakes and synchronises its workers for each of them, and spins while it waits: on a
2-core machine with one core busy elsewhere a [1536, 1536] OBS prune took 550 ms with the
default 2 threads and 320 ms with one (``benchmarks/bench_blas_threads.py``).  So the group loop
runs with the BLAS limited to ``SMALL_OPS_THREADS``.  The large products (the trailing update of
each block, the refit, the factorisation) use the library's threads, but no more than the cores
other processes leave free (``large_ops``): with one of 2 cores busy elsewhere, one thread for
everything was 1.9x faster than the default on the same prune.  "Free" is read from the
1-minute load average less this process's own running thread — a coarse, lagging measure,
re-read for every weight.

The limit is set with threadpoolctl (it finds the OpenBLAS / MKL / BLIS that NumPy and SciPy
loaded); without it, nothing changes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

__all__ = ["SMALL_OPS_THREADS", "blas_libraries", "free_cores", "large_ops", "small_ops"]

SMALL_OPS_THREADS: int | None = 1  # None: the BLAS's default threads everywhere (no limit set at all)


@lru_cache(maxsize=1)
def _controller() -> Any:
    """One controller, made after SciPy's LAPACK (if installed) is loaded, so it sees both BLASes."""
    with contextlib.suppress(ImportError):
        import scipy.linalg  # noqa: F401 - the factorisation's LAPACK lives in SciPy's own OpenBLAS
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


@contextlib.contextmanager
def _limited(threads: Callable[[Any], int | None]) -> Iterator[None]:
    """The BLAS limited to ``threads(controller)`` threads inside (None: left as it is); nothing
    changes when switched off (``SMALL_OPS_THREADS`` None) or without threadpoolctl."""
    controller = _controller() if SMALL_OPS_THREADS is not None else None
    limit = None if controller is None else threads(controller)
    if controller is None or limit is None:
        yield
        return
    with controller.limit(limits=limit, user_api="blas"):
        yield


def small_ops() -> contextlib.AbstractContextManager[None]:
    """Run the enclosed small products with the BLAS limited to ``SMALL_OPS_THREADS`` threads."""
    return _limited(lambda _controller: SMALL_OPS_THREADS)


def free_cores() -> int:
    """Cores not taken by other processes: usable cores less (1-minute load - this process's 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        others = os.getloadavg()[0] - 1.0
    except (AttributeError, OSError):
        return cores
    return max(1, min(cores, cores - int(round(max(0.0, others)))))


def _free_cap(controller: Any) -> int | None:
    """:func:`free_cores` when some BLAS runs more threads than that, else None (no change)."""
    free = free_cores()
    over = any(lib.num_threads > free for lib in controller.lib_controllers if lib.user_api == "blas")
    return free if over else None


def large_ops() -> contextlib.AbstractContextManager[None]:
    """Run the enclosed large products with at most :func:`free_cores` BLAS threads."""
    return _limited(_free_cap)


def blas_libraries() -> list[str]:
    """The BLAS libraries in use, e.g. ``openblas 0.3.30 (2 threads)`` (empty without threadpoolctl)."""
    controller = _controller()
    if controller is None:
        return []
    return [f"{lib.internal_api} {lib.version} ({lib.num_threads} threads)"
            for lib in controller.lib_controllers if lib.user_api == "blas"]
