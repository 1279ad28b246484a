"""Audit stored weights for N:M without loading them: ``sparsify check``'s engine.

Each weight stored in a file is a read-only view of a memory mapping (the next one read into
the page cache ahead, see :mod:`sparsify.io.prefetch`) counted by :class:`NMAudit` in ~1M-entry
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


def _audit(bits: np.ndarray, src: WeightSource, pattern: NMPattern, model: LoadedModel) -> WeightAudit:
    storage = bits.dtype
    if src.tensor.data_type in FLOAT_TYPES:
        counter = NMAudit(abs_mask(storage), storage.type(0), pattern.n)
    else:
        zero = quant_zero(src, model.read_bits, bits.ndim)
        if zero.size != 1:  # per-channel zero points: compared whole
            nonzero = bits != zero
            bad, groups = nm_violations(nonzero, src.axis, pattern.n, pattern.m)
            return WeightAudit(int(np.count_nonzero(nonzero)), bad, groups, bits.size)
        every_bit = storage.type(-1 if storage.kind == "i" else np.iinfo(storage).max)
        counter = NMAudit(every_bit, storage.type(zero.reshape(())), pattern.n)
    counter.add(group_view(bits, src.axis, pattern.m))
    return WeightAudit(counter.nonzeros, counter.bad, counter.groups, bits.size)


def audit_weights(model: LoadedModel, sources: Sequence[WeightSource], pattern: NMPattern) -> list[WeightAudit]:
    """One :class:`WeightAudit` per source (in the order given)."""
    results: dict[int, WeightAudit] = {}
    order = storage_order(model, [src.tensor for src in sources])
    for index, bits in zip(order, mapped_bits(model, [sources[i].tensor for i in order]), strict=True):
        results[index] = _audit(bits, sources[index], pattern, model)
    return [results[index] for index in range(len(sources))]
