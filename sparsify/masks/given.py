"""``--masks FILE.npz``: apply masks computed elsewhere (a lottery ticket, another tool).

Keys are stored weight names (the report's ``weight`` column: an initializer or a
``Constant`` output); values are 0/1 arrays of the stored weight's shape.  Everything is
validated before anything is written: a mask that names no prunable weight, has the wrong
shape or holds values other than 0/1 is an error (exit 2), never a partial apply.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sparsify.analysis.lookthrough import WeightSource
from sparsify.analysis.targets import LayerRow
from sparsify.errors import UsageError
from sparsify.io.dtypes import FLOAT_TYPES
from sparsify.io.npz import ArraySource, is_path, read_arrays, source_name
from sparsify.masks.apply import PruneResult, ReadBits, nonzero_mask, quant_zero
from sparsify.masks.nm import nm_violations
from sparsify.pattern import NMPattern

__all__ = ["apply_given_mask", "load_masks"]


def load_masks(source: ArraySource, targets: list[LayerRow]) -> dict[str, np.ndarray]:
    """Masks by weight name (an .npz or {name: array}), validated against the model's
    targets; marks targets without a mask as skipped."""
    path = source_name(source, "masks")
    masks = read_arrays(source, "masks")
    by_weight: dict[str, list[LayerRow]] = {}
    for target in targets:
        by_weight.setdefault(target.target.weight, []).append(target)
    for name, mask in masks.items():
        rows = by_weight.get(name)
        if not rows:
            raise UsageError(f"{path}: mask {name!r} names no Conv/MatMul/Gemm weight of this model")
        blocked = next((r for r in rows if not r.outcome.active), None)
        if blocked is not None:
            raise UsageError(f"{path}: mask {name!r}: {blocked.target.layer} cannot be pruned ({blocked.outcome.reason})")
        shape = rows[0].target.weight_shape
        if tuple(mask.shape) != tuple(shape):
            raise UsageError(f"{path}: mask {name!r} has shape {list(mask.shape)}, the weight {list(shape)}")
        if not (mask.dtype == bool or np.isin(mask, (0, 1)).all()):
            raise UsageError(f"{path}: mask {name!r} holds values other than 0 and 1")
        masks[name] = mask.astype(bool)
    for target in targets:
        if target.outcome.active and target.target.weight not in masks:
            target.outcome.skip(f"no mask for it in {Path(path).name if is_path(source) else 'the masks given'}")
    return masks


def apply_given_mask(bits: np.ndarray, src: WeightSource, mask: np.ndarray, pattern: NMPattern,
                     read_bits: ReadBits) -> tuple[PruneResult, str]:
    """Zero (or set to the zero point) every entry the mask drops; (result, note).  A note
    means the masked weight is not N:M along its axis (it is then no sparse weight)."""
    nonzero = nonzero_mask(bits, src, read_bits)
    if src.tensor.data_type in FLOAT_TYPES:
        new_bits = np.where(mask, bits, bits.dtype.type(0))
    else:
        new_bits = np.where(mask, bits, quant_zero(src, read_bits, bits.ndim)).astype(bits.dtype)
    after = nonzero & mask
    total = max(1, bits.size)
    note = ""
    if bits.shape[src.axis] % pattern.m == 0:
        bad, groups = nm_violations(after, src.axis, pattern.n, pattern.m)
        if bad:
            note = f"given mask is not {pattern} along axis {src.axis} ({bad} of {groups} groups)"
    else:
        note = f"given mask applied; reduction length is not divisible by {pattern.m}"
    changed = bool((nonzero & ~mask).any())
    before_count, after_count = int(nonzero.sum()), int(after.sum())
    result = PruneResult(new_bits if changed else None, before_count / total, after_count / total,
                         before_count - after_count)
    return result, note
