"""GPU timing without host overhead: the function is captured in a CUDA graph (``reps`` calls per
graph) and the median replay time, from CUDA events, is divided by ``reps``."""

from __future__ import annotations

from collections.abc import Callable

import torch

from sparsify_torch_runtime.graphs import capture_graph

__all__ = ["graphed_time_us"]


def graphed_time_us(fn: Callable[[], object], *, reps: int = 10, iters: int = 15, warmup: int = 3) -> float:
    graph, _ = capture_graph(fn, warmup=warmup, calls=reps)
    for _ in range(2):
        graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) * 1000.0 / reps)
    del graph
    return sorted(times)[len(times) // 2]
