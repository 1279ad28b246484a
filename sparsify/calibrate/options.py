"""What the data-aware prune stage needs to know (validated beforehand by ``PruneOptions``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sparsify.io.npz import ArraySource

__all__ = ["DataAwareOptions"]


@dataclass(frozen=True)
class DataAwareOptions:
    method: str = "magnitude"
    calibration: list[ArraySource] = field(default_factory=list)
    max_accuracy_drop: float | None = None
    max_output_drift: float | None = None
    eval_data: ArraySource | None = None  # labelled set (--eval); drift also accepts --inputs
    inputs: ArraySource | None = None
    bias_correction: bool = True  # calibrated methods move each layer's output mean back
    permute: bool = False  # search input-channel permutations where a graph equivalent exists
    activation_memory: int | None = None  # bytes of calibration activations held in memory (None: a quarter of RAM)
    fit_iterations: int | None = None  # sparsegpt's fit of the kept weights (None: masks/kept_fit.py's default)

    @property
    def beyond_magnitude(self) -> bool:
        """Needs the data-aware pass (anything beyond streaming magnitude pruning)."""
        return self.method != "magnitude" or self.budget or self.permute

    @property
    def budget(self) -> bool:
        return self.max_accuracy_drop is not None or self.max_output_drift is not None
