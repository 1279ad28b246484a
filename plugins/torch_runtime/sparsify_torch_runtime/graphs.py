"""``GraphedModel``: replay a model's forward as a CUDA graph, one graph per input shape.

Per-call host work (Python, dispatch, cuSPARSELt plan setup: 300-800 us per sparse call in
torch's eager path, docs/sources.md#kernel-ratios) is paid once at capture; a replay launches the recorded kernels.
Inputs are copied into static buffers; outputs live in the graph's memory and are overwritten by
the next call with the same shape (``clone_outputs=True`` returns copies).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = ["GraphedModel", "capture_graph"]


def capture_graph(fn: Callable[[], object], *, warmup: int = 3, calls: int = 1,
                  pool=None) -> tuple[torch.cuda.CUDAGraph, object]:
    """Run ``fn`` ``warmup`` times on a side stream (lazy cuBLAS/cuSPARSELt handles and allocator
    growth happen off the graph), then capture ``calls`` calls; returns the graph and the last
    call's output."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.inference_mode(), torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph, pool=pool):
        for _ in range(calls):
            out = fn()
    return graph, out


def _as_tuple(inputs) -> tuple:
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


class GraphedModel:
    def __init__(self, model: Callable, example_inputs=None, *, warmup: int = 3, max_graphs: int = 8,
                 clone_outputs: bool = False) -> None:
        if not torch.cuda.is_available():
            raise RuntimeError("GraphedModel needs a CUDA device (CUDA graphs)")
        self.model, self.warmup, self.max_graphs, self.clone_outputs = model, warmup, max_graphs, clone_outputs
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, tuple, object]] = {}
        self._pool = torch.cuda.graph_pool_handle()  # graphs share one memory pool
        if example_inputs is not None:
            self.capture(_as_tuple(example_inputs))

    @staticmethod
    def _key(inputs: Sequence[torch.Tensor]) -> tuple:
        return tuple((tuple(t.shape), t.dtype, t.device) for t in inputs)

    def capture(self, inputs: Sequence[torch.Tensor]) -> None:
        if len(self._graphs) >= self.max_graphs:
            raise RuntimeError(f"GraphedModel: more than {self.max_graphs} input shapes; pad or bucket the inputs")
        static = tuple(t.detach().clone() for t in inputs)
        graph, out = capture_graph(lambda: self.model(*static), warmup=self.warmup, pool=self._pool)
        self._graphs[self._key(static)] = (graph, static, out)

    def __call__(self, *inputs: torch.Tensor):
        key = self._key(inputs)
        if key not in self._graphs:
            self.capture(inputs)
        graph, static, out = self._graphs[key]
        for buffer, value in zip(static, inputs, strict=True):
            buffer.copy_(value)
        graph.replay()
        if self.clone_outputs:
            return torch.utils._pytree.tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, out)
        return out
