"""What a data-aware method knows about a weight's input: activation statistics from calibration.

``sq_norm[k] = sum x_k^2`` (Wanda) and ``hessian = X^T X`` (SparseGPT) over every position
that meets the weight; ``calibrate/capture.py`` fills them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sparsify.masks.sparsegpt import Prepared

__all__ = ["ActivationStats"]


@dataclass
class ActivationStats:
    rows: int
    sq_norm: np.ndarray  # [K]
    hessian: np.ndarray | None = None  # [K, K]: one chunk's float32 product, a float64 sum over more, float32 once complete
    total: np.ndarray | None = None  # [K] sum of rows (for the mean, bias correction)
    drift: np.ndarray | None = None  # [K, K] float32 X^T (X_dense - X): this input vs the dense model's
    # or, per weight name, that drift times the weight: [K, rows] float32 X^T ((X_dense - X) W^T),
    # when the weights reading this input have few rows (calibrate/capture.py, ``projects``)
    projected: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    dense_total: np.ndarray | None = None  # [K] sum of the dense model's rows
    summed_rows: int = 0  # rows already in ``hessian``'s sum (0: it is still the zero placeholder)
    # the rows X themselves (float32 [rows, K]) while there are few of them (at most K / 4): then
    # products with H = X^T X are cheaper as (p X^T) X (sparsegpt's fit of the kept weights)
    few_rows: list[np.ndarray] | np.ndarray | None = field(default_factory=list, repr=False)
    # SparseGPT's factors per (conv) group: weights reading one activation (Q, K, V)
    # share one factorisation
    factors: dict[int, Prepared] = field(default_factory=dict, repr=False)

    @property
    def dense_mean(self) -> np.ndarray:
        total = self.total if self.dense_total is None else self.dense_total
        if total is None:
            raise ValueError("no rows were collected")
        return np.asarray(total / max(1, self.rows))

    @property
    def mean(self) -> np.ndarray:
        if self.total is None:
            raise ValueError("no rows were collected")
        return np.asarray(self.total / max(1, self.rows))

    @property
    def feature_norm(self) -> np.ndarray:
        return np.sqrt(self.sq_norm)
