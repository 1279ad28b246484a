"""The ``--permute`` pre-pass: for every layer with an exact graph equivalent (see
``graph/channel_chain.py``), search an input-channel permutation that raises the magnitude
N:M keeps, and permute the weight, its producer and the channel-wise constants between them.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from sparsify.analysis.channel_chain import find_chain
from sparsify.analysis.index import GraphIndex
from sparsify.analysis.skip import Skip
from sparsify.analysis.targets import LayerRow
from sparsify.calibrate.session import InMemoryModel
from sparsify.calibrate.streamed import StreamedModel
from sparsify.io.dtypes import FLOAT_TYPES, to_float32
from sparsify.masks.permute import retained, search_permutation
from sparsify.pattern import NMPattern

__all__ = ["permute_channels"]


def permute_channels(index: GraphIndex, groups: list[list[LayerRow]], read,
                     memories: list[InMemoryModel] | list[StreamedModel],
                     pattern: NMPattern, overrides: dict[str, np.ndarray],
                     extra_writes: dict[str, TensorProto]) -> None:
    """Fill ``overrides`` (tensor name -> permuted bits) and ``extra_writes`` (name -> stored
    tensor to rewrite even if not pruned).  ``read(name, tensor)`` gives current bits.

    Every in-memory model in ``memories`` gets the permutation too: the working model and
    the dense reference must see activations in the same channel order."""
    by_weight = {rows[0].target.weight: rows for rows in groups}
    for rows in groups:
        row = rows[0]
        if len(rows) != 1 or row.target.source is None or row.target.source.tensor.data_type not in FLOAT_TYPES:
            continue
        chain = find_chain(index, row.target)
        if isinstance(chain, Skip):
            row.outcome.notes.append(chain.reason)
            continue
        if chain.producer_tensor.data_type not in FLOAT_TYPES:
            row.outcome.notes.append("permutation: producer weight is not float")
            continue
        bits = read(row.target.weight, row.target.source.tensor)
        magnitude = np.abs(to_float32(bits, row.target.source.tensor.data_type)).astype(np.float64)
        axis = row.target.source.axis
        scores = np.moveaxis(magnitude, axis, 0).reshape(bits.shape[axis], -1)
        perm = search_permutation(np.nan_to_num(scores, nan=np.inf), pattern.n, pattern.m)
        before, after = retained(scores, pattern.n, pattern.m), retained(scores[perm], pattern.n, pattern.m)
        if not after > before:
            row.outcome.notes.append("permutation: no gain found")
            continue
        changes = [(row.target.weight, row.target.source.tensor, axis),
                   (chain.producer_weight, chain.producer_tensor, chain.producer_axis)]
        changes += [(name, tensor, -1) for name, tensor in chain.channel_constants]
        for name, tensor, axis in changes:
            permuted = np.take(read(name, tensor), perm, axis=axis)
            overrides[name] = permuted
            extra_writes[name] = tensor
            for memory in memories:
                memory.rebase(name, permuted)
        gain = after / before - 1
        row.outcome.permutation_gain = gain
        row.outcome.notes.append(f"input channels permuted: retained magnitude +{gain:.2%}")
        for producer_row in by_weight.get(chain.producer_weight, []):
            producer_row.outcome.notes.append(f"output channels permuted to match {row.target.layer}")
