"""Options of the data-aware prune stage (no heavy imports: the CLI validates them early)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sparsify.errors import UsageError
from sparsify.masks.registry import NEEDS_CALIBRATION

__all__ = ["DataAwareOptions"]


@dataclass
class DataAwareOptions:
    method: str = "magnitude"
    calibration: list[str] = field(default_factory=list)
    max_accuracy_drop: float | None = None
    max_output_drift: float | None = None
    eval_data: str | None = None  # labelled set (--eval); drift also accepts --inputs
    inputs: str | None = None
    bias_correction: bool = True  # calibrated methods move each layer's output mean back
    permute: bool = False  # search input-channel permutations where a graph equivalent exists

    @property
    def in_memory(self) -> bool:
        """Needs the in-memory pipeline (anything beyond streaming magnitude)."""
        return self.method != "magnitude" or self.budget or self.permute

    @property
    def budget(self) -> bool:
        return self.max_accuracy_drop is not None or self.max_output_drift is not None

    def validate(self) -> None:
        if self.method in NEEDS_CALIBRATION and not self.calibration:
            raise UsageError(f"--method {self.method} needs --calibration FILE.npz (inputs it learns activations from)")
        if self.calibration and self.method not in NEEDS_CALIBRATION:
            raise UsageError("--calibration is used only by --method wanda or sparsegpt (give one, or drop --calibration)")
        if not self.bias_correction and self.method not in NEEDS_CALIBRATION:
            raise UsageError("--no-bias-correction applies only to --method wanda or sparsegpt")
        if self.eval_data and not self.budget:
            raise UsageError("--eval is used only by --max-accuracy-drop or --max-output-drift")
        if self.max_accuracy_drop is not None and self.max_output_drift is not None:
            raise UsageError("give --max-accuracy-drop or --max-output-drift, not both")
        if self.max_accuracy_drop is not None and not self.eval_data:
            raise UsageError("--max-accuracy-drop needs --eval FILE.npz (inputs plus 'labels')")
        if self.max_output_drift is not None and not (self.eval_data or self.inputs):
            raise UsageError("--max-output-drift needs --eval or --inputs data")
        for name in ("max_accuracy_drop", "max_output_drift"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 0")
