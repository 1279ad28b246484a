"""Audit stored weights for N:M without loading them: ``sparsify check``'s engine.

Each weight stored in a file is a read-only view of a memory mapping (the next one announced
to the kernel ahead, see :mod:`sparsify.io.prefetch`) counted by :class:`NMAudit` in ~1M-entry
chunks, so the audit streams the model at close to the speed of reading it and allocates a few
MB, whatever the weight's size.  Weights are visited in storage order.  Quantized weights with
one zero point per channel are compared whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sparsify.analysis.lookthrough import WeightSource
from sparsify.io.dtypes import FLOAT_TYPES, abs_mask
from sparsify.io.model import LoadedModel
from sparsify.io.prefetch import mapped_bits, storage_order
from sparsify.masks.apply import quant_zero
from sparsify.masks.nm import NMAudit, group_view, nm_violations
from sparsify.pattern import NMPattern

__all__ = ["WeightAudit", "audit_weights"]


@dataclass
class WeightAudit:
    nonzeros: int
    bad_groups: int
    groups: int
    size: int

    @property
    def density(self) -> float:
        return self.nonzeros / self.size if self.size else 0.0


def _counter(src: WeightSource, storage: np.dtype, pattern: NMPattern, model: LoadedModel) -> NMAudit | None:
    """The streaming counter for this weight, or None when it needs the whole tensor."""
    if src.tensor.data_type in FLOAT_TYPES:
        return NMAudit(abs_mask(storage), storage.type(0), pattern.n)
    zero = quant_zero(src, model.read_bits, len(src.tensor.dims))
    if zero.size != 1:
        return None
    every_bit = storage.type(-1 if storage.kind == "i" else np.iinfo(storage).max)
    return NMAudit(every_bit, storage.type(zero.reshape(())), pattern.n)


def _whole(bits: np.ndarray, src: WeightSource, pattern: NMPattern, model: LoadedModel) -> WeightAudit:
    counter = _counter(src, bits.dtype, pattern, model)
    if counter is not None:
        counter.add(group_view(bits, src.axis, pattern.m))
        return WeightAudit(counter.nonzeros, counter.bad, counter.groups, bits.size)
    nonzero = bits != quant_zero(src, model.read_bits, bits.ndim)  # per-channel zero points
    bad, groups = nm_violations(nonzero, src.axis, pattern.n, pattern.m)
    return WeightAudit(int(np.count_nonzero(nonzero)), bad, groups, bits.size)


def audit_weights(model: LoadedModel, sources: Sequence[WeightSource], pattern: NMPattern) -> list[WeightAudit]:
    """One :class:`WeightAudit` per source (in the order given)."""
    results: dict[int, WeightAudit] = {}
    order = storage_order(model, [src.tensor for src in sources])
    for index, bits in zip(order, mapped_bits(model, [sources[i].tensor for i in order]), strict=True):
        results[index] = _whole(bits, sources[index], pattern, model)
    return [results[index] for index in range(len(sources))]
