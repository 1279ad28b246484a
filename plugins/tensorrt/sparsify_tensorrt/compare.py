"""Parity of an engine against the dense model in ONNX Runtime, through Polygraphy's Comparator:
both runners see the same feeds; the metrics and gates are the pass's own (``sparsify.verify``),
so ``--max-rel-error`` / ``--min-top1-agreement`` mean the same and fail with the same exit code."""

from __future__ import annotations

import numpy as np

from sparsify.plugin_api import ParityResult, apply_gates, compare_runs

__all__ = ["compare_runners"]


def compare_runners(reference, candidate, feeds: list[dict[str, np.ndarray]], *, max_rel_error: float | None = None,
                    min_top1: float | None = None, inputs: str = "random") -> ParityResult:
    """``reference`` / ``candidate``: Polygraphy runners (OnnxrtRunner, TrtRunner ...)."""
    from polygraphy.comparator import Comparator

    result = ParityResult(verified=False, inputs=inputs, provider=f"{reference.name} vs {candidate.name}")
    results = Comparator.run([reference, candidate], data_loader=feeds)
    (_, ref_runs), (_, cand_runs) = results
    names = list(ref_runs[0].keys())
    missing = [n for n in names if n not in cand_runs[0]]
    if missing:
        result.reason = f"{candidate.name} has no output {missing[0]!r}"
        apply_gates(result, max_rel_error, min_top1)
        return result
    compare_runs(result, names, ref_runs, cand_runs)
    apply_gates(result, max_rel_error, min_top1)
    return result
