"""What a convolution's weight meets: its input unfolded into patches (im2col), per group.

For ``Conv(X, W[M, C/g, k...])`` each output position is ``W_g · patch``, where the patch holds
the group's ``C/g`` input channels at every kernel position.  Patches here are ordered
*kernel position major, channel minor* — ``(k1, k2, ..., c)`` — so that one N:M group of M
consecutive columns is M input channels at one kernel position: exactly the pass's axis rule
(N:M along ``C/g``, docs/sources.md#axis-rules).  ``masks/columns.py`` orders a weight's
columns the same way.
"""

from __future__ import annotations

import math

import numpy as np

from sparsify.analysis.conv import ConvGeometry

__all__ = ["unfold"]


def unfold(x: np.ndarray, geometry: ConvGeometry) -> np.ndarray:
    """``x`` [N, C, *spatial] -> patches [group, rows, prod(kernel) * C/g], float32, rows =
    every output position of every sample, columns ``(k..., c)``."""
    x = np.asarray(x, dtype=np.float32)
    batch, channels = x.shape[:2]
    rank = len(geometry.kernel)
    begins, ends = geometry.pads_for(tuple(x.shape[2:]))
    x = np.pad(x, [(0, 0), (0, 0), *zip(begins, ends, strict=True)])
    reach = tuple((k - 1) * d + 1 for k, d in zip(geometry.kernel, geometry.dilations, strict=True))
    axes = tuple(range(2, 2 + rank))
    windows = np.lib.stride_tricks.sliding_window_view(x, reach, axis=axes)  # [N, C, *O_full, *reach]
    index = (slice(None), slice(None), *(slice(None, None, s) for s in geometry.strides),
             *(slice(None, None, d) for d in geometry.dilations))
    windows = windows[index]  # [N, C, *O, *k]
    groups = geometry.group
    per_group = channels // groups
    outputs = windows.shape[2:2 + rank]
    # [N, g, Cg, *O, *k] -> [g, N, *O, *k, Cg]
    windows = windows.reshape(batch, groups, per_group, *outputs, *geometry.kernel)
    order = (1, 0, *range(3, 3 + rank), *range(3 + rank, 3 + 2 * rank), 2)
    patches = np.transpose(windows, order)
    return np.ascontiguousarray(patches).reshape(groups, batch * math.prod(outputs), math.prod(geometry.kernel) * per_group)
