"""A convolution weight as a matrix whose columns follow the unfolded input's order
(``calibrate/unfold.py``): one row per output channel of a group, columns ``(k..., c)``, so
M consecutive columns are M input channels at one kernel position (the N:M groups)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["columns_to_weight", "weight_columns"]


def weight_columns(weight: np.ndarray, group: int) -> np.ndarray:
    """``W`` [M, C/g, *k] -> [group, M/g, prod(k) * C/g] with the patch's column order."""
    m, per_group = weight.shape[:2]
    kernel = weight.shape[2:]
    moved = np.moveaxis(weight, 1, -1)  # [M, *k, Cg]
    return moved.reshape(group, m // group, math.prod(kernel) * per_group)


def columns_to_weight(columns: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`weight_columns` for a weight of ``shape``."""
    m, per_group = shape[:2]
    kernel = tuple(shape[2:])
    moved = columns.reshape(m, *kernel, per_group)
    return np.moveaxis(moved, -1, 1)
