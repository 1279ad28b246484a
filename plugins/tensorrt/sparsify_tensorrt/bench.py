"""Latency and throughput of a Polygraphy runner (TrtRunner for engines; any runner works)."""

from __future__ import annotations

import numpy as np

__all__ = ["time_runner"]


def time_runner(runner, feed: dict[str, np.ndarray], *, warmup: int = 10, iterations: int = 100) -> dict:
    """Median / p90 / mean latency in ms from the runner's own inference timer, and throughput
    in samples per second (the first axis of the first input counts as the batch)."""
    for _ in range(warmup):
        runner.infer(feed)
    times = []
    for _ in range(iterations):
        runner.infer(feed)
        times.append(runner.last_inference_time() * 1000.0)
    times_arr = np.asarray(times)
    first = next(iter(feed.values()), None)
    batch = int(first.shape[0]) if first is not None and first.ndim else 1
    median = float(np.median(times_arr))
    return {"iterations": iterations, "median_ms": median, "p90_ms": float(np.percentile(times_arr, 90)),
            "mean_ms": float(times_arr.mean()), "batch": batch, "throughput_per_s": batch / (median / 1000.0)}
