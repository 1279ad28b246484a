"""SparseGPT's linear algebra with the BLAS's default threads against one thread, idle and under load.

    python benchmarks/bench_blas_threads.py              # idle machine, then 2 busy processes beside it
    python benchmarks/bench_blas_threads.py --load 0 4   # the loads to measure under

OpenBLAS spins its worker threads while it waits for them: when other processes hold the cores,
a small factorisation can wait far longer than it computes.  For each Hessian size this times
the factorisation (``obs_factor``: shrink, damp, Cholesky, triangular inverse) and one OBS prune
of a [K, K] weight (``sparsegpt_prune``), with the BLAS libraries' default threads and limited
to one (``threadpoolctl``), in the same run; ``--load N`` runs N busy Python processes beside
it.  ``sparsify`` is what the library does (``sparsify.masks.blas``): one thread for the OBS group
loop's small products, at most the cores other processes leave free for the rest.
Results: Markdown on stdout and in ``benchmarks/out/blas/results.md`` (+ ``.json``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import scipy.linalg  # noqa: F401 - loaded before threadpoolctl looks for BLAS libraries
from _common import ROOT, write_results
from threadpoolctl import threadpool_info, threadpool_limits

sys.path.insert(0, str(ROOT))
from sparsify.masks import blas  # noqa: E402
from sparsify.masks.sparsegpt import obs_factor, sparsegpt_prune  # noqa: E402


def _busy() -> None:
    while True:
        pass


def _best(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times) if repeats < 3 else float(np.median(times))


def _case(k: int, repeats: int) -> dict:
    rng = np.random.default_rng(k)
    x = rng.standard_normal((4 * k, k)).astype(np.float32)
    hessian = (x.T @ x).astype(np.float32)
    weight = rng.standard_normal((k, k)).astype(np.float32)
    result = {}
    # default: the BLAS's threads everywhere; one: one thread everywhere; sparsify: what the library
    # does (masks/blas.py): one thread for the OBS group loop, at most the free cores for the rest
    for label, limit, small in (("default", None, None), ("one", 1, None), ("sparsify", None, 1)):
        blas.SMALL_OPS_THREADS = small
        with threadpool_limits(limits=limit, user_api="blas"):
            factor = obs_factor(hessian)
            result[f"factor_{label}_ms"] = 1000 * _best(lambda: obs_factor(hessian), repeats)
            with blas.large_ops():
                result[f"prune_{label}_ms"] = 1000 * _best(
                    lambda f=factor: sparsegpt_prune(weight, hessian, 2, 4, factor=f), repeats)
    blas.SMALL_OPS_THREADS = 1
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="128,384,768,1536,3072")
    parser.add_argument("--load", type=int, nargs="+", default=[0, 2], help="busy processes beside the run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "blas")
    args = parser.parse_args()
    blas = [f"{i['internal_api']} {i['version']} ({i['num_threads']} threads, {Path(i['filepath']).name})"
            for i in threadpool_info() if i["user_api"] == "blas"]
    rows = []
    load_before = os.getloadavg()[0]
    for load in args.load:
        workers = [multiprocessing.Process(target=_busy, daemon=True) for _ in range(load)]
        for worker in workers:
            worker.start()
        try:
            for k in (int(s) for s in args.sizes.split(",")):
                rows.append({"load": load, "k": k, **_case(k, args.repeats)})
        finally:
            for worker in workers:
                worker.terminate()
    lines = [f"BLAS threads: default vs one ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
             f"Python {platform.python_version()}, numpy {np.__version__}, 1-min load before {load_before:.2f}); "
             f"BLAS: {'; '.join(blas)}", "",
             "| busy processes | K | factor: default / 1 thread ms | OBS prune: default / 1 thread / sparsify ms | "
             "default ÷ sparsify |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['load']} | {r['k']} | {r['factor_default_ms']:.1f} / {r['factor_one_ms']:.1f} | "
                     f"{r['prune_default_ms']:.1f} / {r['prune_one_ms']:.1f} / {r['prune_sparsify_ms']:.1f} | "
                     f"{r['prune_default_ms'] / r['prune_sparsify_ms']:.2f} |")
    write_results(args.out, "\n".join(lines), {"blas": blas, "load_before": load_before, "rows": rows})


if __name__ == "__main__":
    main()
