"""BLAS threading, chosen deliberately (docs/methods.md, "BLAS threads").

SparseGPT's OBS step works through each block of columns in groups of M: a few products of a
[rows, M] slice with a [M, block] one per group — too small to share between threads.  OpenBLAS
still wakes and synchronises its workers for each of them, and spins while it waits: on a
2-core machine with one core busy elsewhere a [1536, 1536] OBS prune took 550 ms with the
default 2 threads and 320 ms with one (``benchmarks/bench_blas_threads.py``).  So the group loop
runs with the BLAS limited to ``SMALL_OPS_THREADS``.  The large products (the trailing update of
each block, the refit, the factorisation) use the library's threads, but no more than the cores
other processes leave free (``large_ops``): with one of 2 cores busy elsewhere, one thread for
everything was 1.9x faster than the default on the same prune.  "Free" is the usable cores
less the CPU time other processes took on them since the previous reading (Linux: the usable
CPUs' busy time in ``/proc/stat`` less this process's own CPU time, all its threads; niced
processes, which yield the cores, do not count), re-read for every weight.  Elsewhere, the
1-minute load average less one (this process) stands in: it lags, and it counts this process's
own threads beyond one as other work.

The limit is set with threadpoolctl (it finds the OpenBLAS / MKL / BLIS that NumPy and SciPy
loaded); without it, nothing changes.

After each multi-threaded call OpenBLAS's idle workers spin for about 2^28 cycles (~0.1 s)
before they sleep, holding a core that ONNX Runtime's next run or the next one-thread OBS loop
needs.  ``shorten_idle_spin`` (run when sparsify is imported, before NumPy) sets
``OPENBLAS_THREAD_TIMEOUT``, which OpenBLAS reads when it loads, unless the user set it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import time
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

__all__ = ["IDLE_SPIN_EXPONENT", "SMALL_OPS_THREADS", "blas_libraries", "free_cores", "large_ops",
           "shorten_idle_spin", "small_ops", "start_meter"]

SMALL_OPS_THREADS: int | None = 1  # None: the BLAS's default threads everywhere (no limit set at all)

# OpenBLAS's idle workers spin 2**n cycles before sleeping (n in 4..30; its default 28, ~0.1 s):
# 2**12 cycles is about a microsecond (docs/methods.md, "BLAS threads"; docs/sources.md#openblas-timeout)
IDLE_SPIN_EXPONENT = 12


def shorten_idle_spin() -> None:
    """Set ``OPENBLAS_THREAD_TIMEOUT`` unless it is set already.  OpenBLAS reads it when the library
    loads: this must run before NumPy (or SciPy) is first imported to reach their BLAS."""
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", str(IDLE_SPIN_EXPONENT))


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


MIN_INTERVAL = 0.1  # seconds: a shorter interval reuses the previous reading (the kernel counts 10 ms ticks)


class _OthersMeter:
    """Cores other processes kept busy, measured over the interval since the previous reading."""

    def __init__(self) -> None:
        self.last: tuple[float, float, float] | None = None  # wall, usable CPUs' busy seconds, own CPU seconds
        self.others = 0.0

    def start(self, cpus: set[int]) -> None:
        """Take the first reading now, without waiting: the first :meth:`read` then measures the
        interval since (a calibrated prune starts the meter before its first stage runs)."""
        if self.last is None:
            self.last = _reading(cpus)

    def read(self, cpus: set[int]) -> float | None:
        """Other processes' busy cores (0.0 ... len(cpus)) or None where ``/proc/stat`` is unreadable."""
        now = _reading(cpus)
        if now is None:
            return None
        if self.last is None:  # the first reading: measure a short interval now
            self.last = now
            time.sleep(MIN_INTERVAL)
            return self.read(cpus)
        wall = now[0] - self.last[0]
        if wall >= MIN_INTERVAL:
            others = (now[1] - self.last[1]) - (now[2] - self.last[2])
            self.others = min(float(len(cpus)), max(0.0, others / wall))
            self.last = now
        return self.others


def _reading(cpus: set[int]) -> tuple[float, float, float] | None:
    """(wall clock, the usable CPUs' busy seconds, this process's CPU seconds), or None."""
    busy = _busy_seconds(cpus, niced=_niced())
    if busy is None:
        return None
    own = os.times()
    return time.monotonic(), busy, own.user + own.system


def _busy_seconds(cpus: set[int], stat: str = "/proc/stat", niced: bool = False) -> float | None:
    """Busy seconds (not idle, not waiting for I/O; stolen time counts as busy) summed over the
    CPUs in ``cpus``, from ``stat``; None where it cannot be read or lacks one of them.  Time of
    niced (low-priority) processes counts only with ``niced``: they yield the cores to a process
    at normal priority, so they take none from it."""
    try:
        with open(stat, encoding="ascii") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    ticks = 0
    seen = 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus):
            continue
        fields = [int(value) for value in rest.split()]
        if len(fields) < 8:
            return None
        # user, nice, system, idle, iowait, irq, softirq, steal: all but idle and iowait (and nice)
        ticks += sum(fields[:8]) - fields[3] - fields[4] - (0 if niced else fields[1])
        seen += 1
    return ticks / os.sysconf("SC_CLK_TCK") if seen == len(cpus) else None


def _niced() -> bool:
    """Whether this process runs niced (its own CPU time is then counted as nice time)."""
    try:
        return os.getpriority(os.PRIO_PROCESS, 0) > 0
    except (AttributeError, OSError):
        return False


_METER = _OthersMeter()


def _usable_cpus() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def start_meter() -> None:
    """Start measuring other processes' load now, so the first :func:`free_cores` need not wait."""
    _METER.start(_usable_cpus())


def free_cores() -> int:
    """Usable cores less those other processes kept busy since the last reading (at least 1)."""
    cpus = _usable_cpus()
    cores = len(cpus)
    others = _METER.read(cpus)
    if others is None:
        try:
            others = max(0.0, os.getloadavg()[0] - 1.0)
        except (AttributeError, OSError):
            return cores
    return max(1, min(cores, cores - int(round(others))))


def _free_cap(controller: Any) -> int | None:
    """:func:`free_cores` when some BLAS runs more threads than that, else None (no change)."""
    free = free_cores()
    over = any(lib.num_threads > free for lib in controller.lib_controllers if lib.user_api == "blas")
    return free if over else None


def large_ops() -> contextlib.AbstractContextManager[None]:
    """Run the enclosed products with at most :func:`free_cores` BLAS threads.  Every weight's: with
    OpenBLAS's idle spin shortened, a second thread no longer costs a small weight's prune its
    time (MiniLM, 384-1,536 wide: 5.8 -> 5.3 s in-process; docs/methods.md, "BLAS threads")."""
    return _limited(_free_cap)


def blas_libraries() -> list[str]:
    """The BLAS libraries this process has loaded, e.g. ``openblas 0.3.30 (2 threads, idle spin
    2^12 cycles)`` (empty without threadpoolctl).  Read afresh, loading nothing: a prune that
    never factorised (wanda) did not load SciPy's LAPACK, and importing it for the report alone
    took 0.16 s."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return []
    controller = ThreadpoolController()
    return [f"{lib.internal_api} {lib.version} ({lib.num_threads} threads{_idle_spin(lib)})"
            for lib in controller.lib_controllers if lib.user_api == "blas"]


def _idle_spin(lib: Any) -> str:
    """How long this OpenBLAS's idle workers spin, as it read ``OPENBLAS_THREAD_TIMEOUT`` when it
    loaded (its exported ``openblas_thread_timeout``; 0: not set, OpenBLAS's default); empty for
    another BLAS or where the library does not say."""
    if lib.internal_api != "openblas":
        return ""
    try:
        read = ctypes.CDLL(lib.filepath).openblas_thread_timeout
    except (OSError, AttributeError, TypeError):
        return ""
    read.restype = ctypes.c_int
    exponent = int(read())
    if exponent <= 0:
        return ", idle spin OpenBLAS's default 2^28 cycles"
    return f", idle spin 2^{min(30, max(4, exponent))} cycles"
