"""BLAS threads: one for the OBS group loop, no more than the free cores for the rest, restored after."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

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


def _no_proc_stat(monkeypatch):
    """The load-average fallback (systems without /proc/stat)."""
    monkeypatch.setattr(blas, "_busy_seconds", lambda _cpus, **_options: None)


@pytest.mark.parametrize("load,expected", [(0.0, None), (1.0, None), (50.0, 1)])
def test_large_ops_use_at_most_the_free_cores(monkeypatch, load, expected):
    _no_proc_stat(monkeypatch)
    monkeypatch.setattr(blas.os, "getloadavg", lambda: (load, load, load))
    before = _threads()
    with blas.large_ops():
        inside = _threads()
    assert _threads() == before
    if expected is None:  # an idle machine: the library's own threads
        assert inside == before
    else:
        assert set(inside) == {expected}


def _named(order: str, scipy: bool = False, **env: str) -> tuple[list[str], bool]:
    """blas_libraries() in a fresh interpreter (OPENBLAS_THREAD_TIMEOUT only as ``env`` gives it)
    that imports sparsify first or NumPy first (``order``), then SciPy's LAPACK if ``scipy``, as a
    factorisation would; and whether SciPy was loaded by then."""
    code = ("import json, sys\nif sys.argv[1] == 'numpy-first':\n    import numpy\n"
            "import sparsify\nfrom sparsify.masks.blas import blas_libraries\n"
            "if sys.argv[2] == 'scipy':\n    import scipy.linalg\n"
            "print(json.dumps([blas_libraries(), 'scipy' in sys.modules]))")
    environment = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"} | env
    out = subprocess.run([sys.executable, "-c", code, order, "scipy" if scipy else "-"], env=environment,
                         capture_output=True, text=True, check=True).stdout
    names, scipy_loaded = json.loads(out)
    return names, scipy_loaded


def _spins(names: list[str]) -> list[str]:
    return sorted(name.rpartition("idle spin ")[2] for name in names)


def test_importing_sparsify_shortens_openblas_idle_spin_unless_the_user_chose():
    """Each loaded OpenBLAS reports what it read from OPENBLAS_THREAD_TIMEOUT when it loaded."""
    if not any(lib["internal_api"] == "openblas" for lib in threadpool_info()):
        pytest.skip("the BLAS here is not OpenBLAS")
    shortened = f"2^{blas.IDLE_SPIN_EXPONENT} cycles)"
    names, scipy_loaded = _named("sparsify-first", scipy=True)
    assert scipy_loaded and names and set(_spins(names)) == {shortened}, names  # NumPy's and SciPy's
    assert set(_spins(_named("sparsify-first", scipy=True, OPENBLAS_THREAD_TIMEOUT="30")[0])) == {"2^30 cycles)"}
    # NumPy imported before sparsify: its BLAS kept OpenBLAS's default; SciPy's, loaded later, has the short spin
    assert _spins(_named("numpy-first", scipy=True)[0]) == [shortened, "OpenBLAS's default 2^28 cycles)"]


def test_naming_the_blas_loads_no_scipy():
    """The report's list is read from what is loaded: a wanda prune never needs SciPy's LAPACK."""
    names, scipy_loaded = _named("sparsify-first")
    assert names and not scipy_loaded, names


def test_free_cores_is_between_one_and_the_usable_cores(monkeypatch):
    _no_proc_stat(monkeypatch)
    cores = len(blas.os.sched_getaffinity(0))
    for load, free in ((0.0, cores), (1.0, cores), (1.0 + cores, 1), (1000.0, 1)):
        monkeypatch.setattr(blas.os, "getloadavg", lambda load=load: (load, load, load))
        assert blas.free_cores() == free

    def unavailable():
        raise OSError("no load average")

    monkeypatch.setattr(blas.os, "getloadavg", unavailable)
    assert blas.free_cores() == cores


def test_busy_seconds_sum_the_usable_cpus_busy_fields(tmp_path):
    stat = tmp_path / "stat"
    ticks = blas.os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  9 9 9 9 9 9 9 9 0 0\ncpu0 1 2 3 400 500 6 7 8 0 0\n"
                    "cpu1 10 20 30 4000 5000 60 70 80 0 0\ncpu2 100 0 0 0 0 0 0 0 0 0\nintr 5 6\n")
    assert blas._busy_seconds({0}, str(stat)) == pytest.approx(25 / ticks)  # idle, iowait and nice left out
    assert blas._busy_seconds({0, 1}, str(stat)) == pytest.approx(275 / ticks)
    assert blas._busy_seconds({0, 1}, str(stat), niced=True) == pytest.approx(297 / ticks)  # nice time too
    assert blas._busy_seconds({0, 3}, str(stat)) is None  # a usable CPU it does not list
    assert blas._busy_seconds({0}, str(tmp_path / "missing")) is None


def test_others_are_the_busy_time_less_this_process_own(monkeypatch):
    """Two cores: this process took 1.5 CPU-seconds (two threads) of the 2.0 busy ones in 1 s of
    wall time, so other processes kept 0.5 of a core busy: both cores are free (rounded)."""
    clock = iter([10.0, 11.0, 11.05, 12.05])
    busy = iter([100.0, 102.0, 102.1, 104.1])
    own = iter([5.0, 6.5, 6.55, 6.6])
    monkeypatch.setattr(blas.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(blas.time, "sleep", lambda _seconds: None)
    monkeypatch.setattr(blas, "_busy_seconds", lambda _cpus, **_options: next(busy))
    monkeypatch.setattr(blas.os, "times", lambda: blas.os.times_result((next(own), 0.0, 0.0, 0.0, 0.0)))
    meter = blas._OthersMeter()
    assert meter.read({0, 1}) == pytest.approx(0.5)  # the first reading measures an interval itself
    assert meter.read({0, 1}) == pytest.approx(0.5)  # 50 ms later: too short to count, reused
    # 1.05 s after the last counted reading: 2.1 busy seconds, 0.1 of them this process's
    assert meter.read({0, 1}) == pytest.approx(2.0 / 1.05)


def test_a_started_meter_measures_from_its_start_without_waiting(monkeypatch):
    clock = iter([10.0, 10.5, 10.55])
    busy = iter([100.0, 101.0, 101.05])
    own = iter([5.0, 5.25, 5.3])
    monkeypatch.setattr(blas.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(blas.time, "sleep", lambda _seconds: pytest.fail("a started meter does not wait"))
    monkeypatch.setattr(blas, "_busy_seconds", lambda _cpus, **_options: next(busy))
    monkeypatch.setattr(blas.os, "times", lambda: blas.os.times_result((next(own), 0.0, 0.0, 0.0, 0.0)))
    meter = blas._OthersMeter()
    meter.start({0, 1})
    meter.start({0, 1})  # started once: a second start reads nothing
    # 0.5 s since the start: 1.0 busy seconds, 0.25 of them this process's
    assert meter.read({0, 1}) == pytest.approx(0.75 / 0.5)
    assert meter.read({0, 1}) == pytest.approx(1.5)  # 50 ms later: reused


def test_free_cores_from_the_meter(monkeypatch):
    cores = len(blas._usable_cpus())
    for others, free in ((0.0, cores), (0.4, cores), (1.0, max(1, cores - 1)), (float(cores), 1)):
        monkeypatch.setattr(blas._METER, "read", lambda _cpus, others=others: others)
        assert blas.free_cores() == free


def test_a_niced_process_cpu_time_is_the_nice_time_left_out():
    """The real /proc/stat: a busy child at the lowest priority (it yields its core to this
    process) shows up in the nice time, which the meter leaves out at normal priority."""
    cpus = blas._usable_cpus()
    if blas._busy_seconds(cpus) is None or blas._niced():
        pytest.skip("needs /proc/stat and a process at normal priority")

    def nice_seconds() -> float:
        return blas._busy_seconds(cpus, niced=True) - blas._busy_seconds(cpus)

    before = nice_seconds()
    child = subprocess.Popen([sys.executable, "-c", "import os\nos.nice(19)\nsum(range(20_000_000))"])
    _, _, usage = os.wait4(child.pid, 0)
    spun = usage.ru_utime  # its user time, nearly all at nice 19 (interpreter start-up included)
    assert spun > 0.1
    # less its start-up before os.nice (at normal priority) and a few 10 ms ticks; other niced work only adds
    assert nice_seconds() - before >= spun - 0.15


def test_own_cpu_time_shows_in_the_busy_time():
    """The real /proc/stat: this process spinning shows up in its CPUs' busy time."""
    cpus = blas._usable_cpus()
    before = blas._busy_seconds(cpus)
    if before is None:
        pytest.skip("no /proc/stat here")
    own_before = sum(blas.os.times()[:2])
    end = blas.time.monotonic() + 0.3
    while blas.time.monotonic() < end:
        pass
    spun = sum(blas.os.times()[:2]) - own_before
    after = blas._busy_seconds(cpus)
    assert after is not None and spun > 0.05
    assert after - before >= spun - 0.05  # ticks: 10 ms each


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
    assert names and all(re.search(r"\(\d+ threads[,)]", name) for name in names), names
