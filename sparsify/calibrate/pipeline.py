"""The data-aware prune stage: calibration statistics, a mask method per weight, and an
optional accuracy budget, for models that fit in memory (< 2 GB)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from sparsify.analysis.index import GraphIndex
from sparsify.analysis.targets import LayerRow, Status, group_by_weight
from sparsify.calibrate.bias_correction import corrected_bias, find_bias
from sparsify.calibrate.budget import BudgetResult, accuracy, accuracy_loss, choose_dense, drift_loss, load_eval
from sparsify.calibrate.capture import activation_input, collect_stats
from sparsify.calibrate.options import DataAwareOptions
from sparsify.calibrate.permutation import permute_channels
from sparsify.calibrate.session import InMemoryModel
from sparsify.errors import UsageError
from sparsify.io.model import LoadedModel
from sparsify.io.writer import ModelWriter
from sparsify.masks.apply import PruneResult
from sparsify.masks.methods import NEEDS_CALIBRATION, needs_hessian, prune_with_method
from sparsify.pattern import NMPattern
from sparsify.verify.feeds import load_feeds

__all__ = ["prune_data_aware"]


def _apply_budget(memory: InMemoryModel, options: DataAwareOptions, results: dict[str, PruneResult],
                  bias_updates: dict[str, tuple]) -> BudgetResult:
    # Sequential calibration left the in-memory model pruned: restore every weight and bias
    # first, so the reference (dense accuracy, dense outputs) really is the dense model.
    for name in results:
        memory.set_bits(name, None)
    for bias_name, _, _ in bias_updates.values():
        memory.set_bits(bias_name, None)
    session = memory.session()
    dense: float | None = None
    if options.max_accuracy_drop is not None:
        if options.eval_data is None:
            raise UsageError("--max-accuracy-drop needs --eval FILE.npz (inputs plus 'labels')")
        data = load_eval(options.eval_data, session, need_labels=True)
        dense = accuracy(session, data)
        loss, budget, kind = accuracy_loss(dense, data), options.max_accuracy_drop, "accuracy_drop"
    else:
        source = options.eval_data if options.eval_data is not None else options.inputs
        if source is None or options.max_output_drift is None:
            raise UsageError("--max-output-drift needs --eval or --inputs data")
        data = load_eval(source, session, need_labels=False)
        loss, budget, kind = drift_loss(session, data), options.max_output_drift, "output_drift"
    candidates = [w for w, r in results.items() if r.new_bits is not None]

    def evaluate(pruned: set[str]) -> float:
        for name in candidates:
            memory.set_bits(name, results[name].new_bits if name in pruned else None)
            if name in bias_updates:
                bias_name, _, bias_bits = bias_updates[name]
                memory.set_bits(bias_name, bias_bits if name in pruned else None)
        return loss(memory.session())

    return choose_dense(candidates, evaluate, float(budget), kind, dense)


def _correct_bias(index, row, dense_bits, result, stats, read, memory, bias_updates) -> None:
    found = find_bias(index, row.target)
    if found is None or stats.total is None:
        return
    name, tensor = found
    new_bias = corrected_bias(read(name, tensor), tensor.data_type, dense_bits, result.new_bits,
                              row.target.weight_source().tensor.data_type, row.target.axis, stats)
    memory.set_bits(name, new_bias)
    bias_updates[row.target.weight] = (name, tensor, new_bias)
    row.outcome.notes.append(f"bias {name!r} corrected for the mean output shift")


def _stages(groups: list[list[LayerRow]], index: GraphIndex) -> list[list[list[LayerRow]]]:
    """Weights grouped by the activation they read, in graph order (Q, K, V share one)."""
    stages: dict[str, list[list[LayerRow]]] = {}
    for rows in sorted(groups, key=lambda r: min(index.ordinal(t.target.op_node()) for t in r)):
        stages.setdefault(activation_input(rows[0].target)[0], []).append(rows)
    return list(stages.values())


def prune_data_aware(loaded: LoadedModel, targets: list[LayerRow], pattern: NMPattern,
                     writer: ModelWriter, options: DataAwareOptions, zeroed: dict[str, int],
                     progress=None) -> BudgetResult | None:
    """Prune the active targets with ``options.method``; calibrated methods run sequentially
    (as in SparseGPT): each stage's activations are measured on the model whose earlier
    layers are already pruned, so later layers compensate for earlier error."""
    memory = InMemoryModel(loaded.path)
    dense = InMemoryModel(loaded.path) if options.method == "sparsegpt" else None
    groups = group_by_weight(targets)
    feeds: list = []
    if options.method in NEEDS_CALIBRATION:
        session = memory.session()
        feeds = [feed for path in options.calibration for feed in load_feeds(path, session)]
    index = GraphIndex(loaded.skeleton)
    bias_updates: dict[str, tuple] = {}
    overrides: dict[str, np.ndarray] = {}  # permuted bits, by tensor name
    extra_writes: dict[str, TensorProto] = {}

    def read(name, tensor):
        return overrides[name] if name in overrides else np.array(loaded.read_bits(tensor))

    if options.permute:
        permute_channels(index, groups, read, [m for m in (memory, dense) if m is not None], pattern, overrides,
                         extra_writes)
    results: dict[str, PruneResult] = {}
    dense_session = None
    if dense is not None and feeds:  # the dense reference never changes: one session for every stage
        wanted = sorted({activation_input(rows[0].target)[0] for rows in groups
                         if needs_hessian(options.method, rows[0].target.op_node())})
        dense_session = dense.session(extra_outputs=wanted, only=True) if wanted else None
    for stage in _stages(groups, index) if feeds else [groups]:
        stats = {}
        if feeds:
            hessian_for = {activation_input(rows[0].target)[0] for rows in stage
                           if needs_hessian(options.method, rows[0].target.op_node())}
            stats = collect_stats(memory, [rows[0].target for rows in stage], feeds, hessian_for, reference=dense_session)
        for rows in stage:
            src = rows[0].target.weight_source()
            if progress:
                progress(len(results) + 1, len(groups), src.name)
            bits = read(src.name, src.tensor)
            activation = stats.get(activation_input(rows[0].target)[0]) if stats else None
            result, note = prune_with_method(options.method, bits, src, rows[0].target.op_node(), pattern, loaded.read_bits,
                                             activation)
            results[src.name] = result
            if result.new_bits is not None and feeds:
                memory.set_bits(src.name, result.new_bits)
                if options.bias_correction and activation is not None and len(rows) == 1:
                    _correct_bias(index, rows[0], bits, result, activation, read, memory, bias_updates)
            for row in rows:
                row.outcome.method = options.method if not note else "magnitude"
                if note:
                    row.outcome.notes.append(note)
                    row.outcome.method_fallback = note
    budget = _apply_budget(memory, options, results, bias_updates) if options.budget else None
    written: set[str] = set()
    for rows in groups:
        name = rows[0].target.weight
        result = results[name]
        if budget is not None and name in budget.kept_dense:
            for row in rows:
                row.outcome.skip(f"kept dense for the {budget.kind.replace('_', ' ')} budget "
                         f"(sensitivity {budget.sensitivity[name]:.4g})")
                row.outcome.sensitivity = budget.sensitivity[name]
            continue
        if result.new_bits is not None:
            writer.replace(rows[0].target.weight_source().tensor, result.new_bits)
            written.add(name)
            if name in bias_updates:
                writer.replace(bias_updates[name][1], bias_updates[name][2])
                written.add(bias_updates[name][0])
        zeroed[name] = result.zeroed
        for row in rows:
            row.outcome.status = Status.PRUNED if result.new_bits is not None else Status.ALREADY_NM
            row.outcome.density_before, row.outcome.density_after = result.density_before, result.density_after
            if budget is not None:
                row.outcome.sensitivity = budget.sensitivity.get(name)
    for name, tensor in extra_writes.items():  # permuted tensors that were not rewritten above
        if name not in written:
            writer.replace(tensor, overrides[name])
    return budget
