"""Per-target activation statistics from calibration inputs (Wanda norms, SparseGPT Hessians).

Each target's activation (the op's other operand) is exposed as an extra graph output and
accumulated over every calibration run: ``sq_norm[k] = sum x_k^2`` and, where SparseGPT needs
it, ``hessian = X^T X`` with rows = every position that meets the weight.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sparsify.analysis.conv import ConvGeometry
from sparsify.analysis.index import int_attr
from sparsify.analysis.targets import Target
from sparsify.calibrate.session import InMemoryModel
from sparsify.calibrate.unfold import unfold
from sparsify.masks.stats import ActivationStats

__all__ = ["ActivationStats", "StatsKey", "Weights", "accumulate", "activation_input", "collect_stats", "finish", "projects",
           "stats_key"]


@dataclass(frozen=True)
class StatsKey:
    """What a weight's statistics are collected over: an activation along its feature axis, or,
    for a convolution that is not pointwise, that activation unfolded by the conv's geometry."""

    name: str
    axis: int
    conv: ConvGeometry | None = None


def activation_input(target: Target) -> tuple[str, int]:
    """(activation tensor name, its feature axis) for a target's op."""
    node = target.op_node()
    if node.op_type == "Conv":
        return node.input[0], 1
    other = node.input[1 - target.input_index]
    if node.op_type == "MatMul":
        return other, (-1 if target.input_index == 1 else -2)
    if target.input_index == 1:  # Gemm(X, W): X is A
        return other, (0 if int_attr(node, "transA", 0, 0, 1) else 1)
    return other, (1 if int_attr(node, "transB", 0, 0, 1) else 0)


def stats_key(target: Target) -> StatsKey:
    name, axis = activation_input(target)
    node = target.op_node()
    if node.op_type == "Conv":
        geometry = ConvGeometry.of(node, target.weight_source().op_shape)
        if not geometry.pointwise and not geometry.refusal():
            return StatsKey(name, axis, geometry)
    return StatsKey(name, axis)


def _rows(x: np.ndarray, axis: int) -> np.ndarray:
    """[positions, features] in float32 (sums over them are taken in float64)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        return x[None, :]
    return np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis])


def _new_stats(channels: int, hessian: bool, patches: np.ndarray | None) -> ActivationStats:
    matrix = None
    if hessian:
        matrix = np.zeros((channels, channels)) if patches is None else np.zeros(
            (patches.shape[0], patches.shape[2], patches.shape[2]))
    return ActivationStats(0, np.zeros(channels), matrix, np.zeros(channels))


# samples are stacked up to this many rows per Gram product, or K rows for a K-wide input when
# more: each chunk's float32 product is added into the float64 sum, a pass over K x K values that
# costs as much as the product of ~150 rows (docs/methods.md, "Speed"); K rows of float32 are
# half the float64 sum's own size, so the stacked chunk stays within the Hessian's memory
CHUNK_ROWS = 512


def _gram(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a^T b, per group when the inputs are [group, rows, K].  One chunk's product (at most
    max(CHUNK_ROWS, K) rows, or one sample) is taken in float32 (activations are float32 or narrower;
    the relative error over a few thousand rows is ~1e-6) and added to the float64
    accumulator, which is what keeps the sum over the whole calibration set exact enough for
    the factorisation."""
    a32, b32 = a.astype(np.float32, copy=False), b.astype(np.float32, copy=False)
    return np.matmul(np.swapaxes(a32, -1, -2), b32)


def _stack(blocks: list[np.ndarray]) -> np.ndarray:
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=-2)


def _sum(total: np.ndarray, part: np.ndarray, first: bool) -> np.ndarray:
    """``total + part`` for a Hessian's running sum: the first chunk's float32 product is kept as
    it is (a sum of one chunk is exact as it stands, and a whole calibration set often is one
    chunk for a wide input: no float64 pass over K x K values, nor back); from the second on,
    the sum is float64."""
    if first:
        return part
    if total.dtype != np.float64:
        total = total.astype(np.float64)
    total += part
    return total


def _plus(total: np.ndarray | None, part: np.ndarray) -> np.ndarray:
    """A float32 running sum: the first part itself, then added in place."""
    if total is None:
        return part
    total += part
    return total


def _add(total: np.ndarray | None, part: np.ndarray) -> np.ndarray:
    if total is None:
        return part.astype(np.float64)
    total += part
    return total


def _activation(values: Mapping[str, Any], key: StatsKey) -> np.ndarray:
    value = values.get(key.name)
    if not isinstance(value, np.ndarray):
        raise ValueError(f"activation {key.name!r} is not a tensor")
    return value


def projects(width: int, rows: int) -> bool:
    """Whether the drift for a ``width``-wide input is summed per weight, as X^T ((X_dense - X) W^T)
    ([K, rows] each), rather than as the K x K X^T (X_dense - X): for T calibration rows the first
    costs 4 T K R (R: the rows of all weights reading the input), the second 2 T K^2 and then a
    K^2 R product per weight at its refit; with R < K / 2 the first is cheaper for any T (an MLP's
    down projection: R = K / 4; Q, K and V together: R = 3 K, which keep the K x K term)."""
    return 0 < 2 * rows < width


class _GramChunks:
    """X^T X (and X^T (X_dense - X), or that times each weight) over row blocks stacked to about
    CHUNK_ROWS rows: fewer, larger products and fewer float64 additions than one per sample, with
    at most one chunk held."""

    def __init__(self, entry: ActivationStats, weights: Mapping[str, np.ndarray] | None = None):
        self.entry = entry
        self.weights = weights or {}
        self.mine: list[np.ndarray] = []
        self.theirs: list[np.ndarray] = []
        self.count = 0

    def add(self, mine: np.ndarray, theirs: np.ndarray | None) -> None:
        self.mine.append(mine)
        if theirs is not None:
            self.theirs.append(theirs)
        self.count += mine.shape[-2]
        if self.count >= max(CHUNK_ROWS, mine.shape[-1]):
            self.flush()

    def flush(self) -> None:
        if not self.mine:
            return
        mine = _stack(self.mine)
        if self.entry.hessian is not None:
            self.entry.hessian = _sum(self.entry.hessian, _gram(mine, mine), self.entry.summed_rows == 0)
        self.entry.summed_rows += mine.shape[-2]
        if self.theirs:
            if len(self.theirs) != len(self.mine):
                raise ValueError("the dense reference lacks an activation for some samples")
            # X^T (X_dense - X) directly: the refit needs only this difference, and a product of the
            # difference keeps its precision in float32 (C - H taken afterwards would cancel)
            # a new float32 array (one sample's rows are the caller's: copied), reduced in place
            difference = _stack(self.theirs).astype(np.float32, copy=len(self.theirs) == 1)
            difference -= mine
            if self.weights:
                projected = self.entry.projected
                for name, weight in self.weights.items():  # X^T ((X_dense - X) W^T): [K, rows]
                    projected[name] = _plus(projected.get(name), _gram(mine, difference @ weight.T))
            else:
                self.entry.drift = _plus(self.entry.drift, _gram(mine, difference))
            del difference
        self.mine, self.theirs, self.count = [], [], 0


Weights = Mapping[StatsKey, Mapping[str, np.ndarray]]


def accumulate(stats: dict[StatsKey, ActivationStats], keys: set[StatsKey], hessian_for: set[StatsKey],
               samples: Sequence[Mapping[str, Any]], dense_samples: Sequence[Mapping[str, Any]] | None = None,
               weights: Weights | None = None) -> None:
    """Add calibration samples' activations (each sample: ``{tensor name: value}``) to
    ``stats``; ``dense_samples``: the same activations in the dense model, sample for sample
    (for ``drift``); ``weights``: for a key, the weights reading it as float32 [rows, K] by name,
    whose drift is summed per weight (``projected``) instead (:func:`projects` says when)."""
    for key in sorted(keys, key=repr):
        chunks: _GramChunks | None = None
        for number, sample in enumerate(samples):
            value = _activation(sample, key)
            rows = _rows(value, key.axis)
            patches = unfold(value, key.conv) if key.conv is not None and key in hessian_for else None
            entry = stats.get(key)
            if entry is None:
                entry = stats[key] = _new_stats(rows.shape[1], key in hessian_for, patches)
            entry.rows += rows.shape[0]
            entry.total += rows.sum(axis=0)  # float32 per sample, float64 over the set
            entry.sq_norm += np.einsum("ij,ij->j", rows, rows)
            if entry.hessian is None:
                continue
            dense = dense_samples[number].get(key.name) if dense_samples is not None else None
            theirs = None
            if isinstance(dense, np.ndarray):
                theirs = _rows(dense, key.axis) if key.conv is None else unfold(dense, key.conv)
                entry.dense_total = _add(entry.dense_total, _rows(dense, key.axis).sum(axis=0))
            chunks = chunks or _GramChunks(entry, None if weights is None or key.conv is not None else weights.get(key))
            chunks.add(rows if patches is None else patches, theirs)
            _keep_few_rows(entry, rows if patches is None else None)
        if chunks is not None:
            chunks.flush()


def _keep_few_rows(entry: ActivationStats, rows: np.ndarray | None) -> None:
    """Keep the rows X while there are at most K / 4 of them (none for a conv's patches)."""
    if not isinstance(entry.few_rows, list):
        return
    if rows is None or entry.rows > rows.shape[1] // 4:
        entry.few_rows = None
        return
    entry.few_rows.append(np.array(rows, dtype=np.float32))


def finish(stats: dict[StatsKey, ActivationStats]) -> dict[StatsKey, ActivationStats]:
    """Once every sample is in: the Hessians were summed in float64 for precision; what uses
    them (SparseGPT's shrinkage, damping and factorisation) works in float32, so they are kept
    as float32 from here on: half the memory while the stage's weights are pruned."""
    for entry in stats.values():
        if entry.hessian is not None:
            entry.hessian = entry.hessian.astype(np.float32, copy=False)
        few = entry.few_rows
        entry.few_rows = np.concatenate(few) if isinstance(few, list) and few and entry.hessian is not None else None
    return stats


def collect_stats(model: InMemoryModel, keys: set[StatsKey], feeds: list[dict[str, np.ndarray]],
                  hessian_for: set[StatsKey], reference=None, weights: Weights | None = None) -> dict[StatsKey, ActivationStats]:
    """Stats per key from whole-model sessions (the fallback when the model cannot be cut into
    segments); Hessians (``X^T X``, per group for a conv's patches) only for ``hessian_for``.

    With ``reference`` (a session of the dense model that outputs these activations; it never
    changes, so the caller makes it once), also ``drift = X^T (X_dense - X)`` for those, so a layer
    can be refit toward the dense model's output rather than its own drifted input's (or that
    times each of ``weights``, as in :func:`accumulate`).
    """
    names = sorted({key.name for key in keys})
    session = model.session(extra_outputs=names, only=True)  # runs only what these need
    outputs = [o.name for o in session.get_outputs()]
    dense_names = sorted({key.name for key in hessian_for})
    dense_session = reference if dense_names else None
    stats: dict[StatsKey, ActivationStats] = {}
    for feed in feeds:
        values = dict(zip(outputs, session.run(outputs, feed), strict=True))
        dense_values = [dict(zip(dense_names, dense_session.run(dense_names, feed), strict=True))] \
            if dense_session is not None else None
        accumulate(stats, keys, hessian_for, [values], dense_values, weights)
    return finish(stats)
