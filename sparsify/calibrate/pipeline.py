"""The data-aware prune stage: calibration statistics in one forward pass (segments), a mask
method per weight, and an optional accuracy budget (whole-model sessions of the file, the
changed weights passed in memory: calibrate/file_session.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
from onnx import TensorProto

from sparsify.analysis.index import GraphIndex
from sparsify.analysis.lookthrough import WeightSource
from sparsify.analysis.targets import LayerRow, Status, group_by_weight
from sparsify.calibrate.activation_store import ActivationStore, default_activation_memory
from sparsify.calibrate.bias_correction import corrected_bias, find_bias
from sparsify.calibrate.budget import BudgetResult, accuracy, accuracy_loss, choose_dense, drift_loss, load_eval
from sparsify.calibrate.capture import (
    StatsKey,
    accumulate,
    activation_input,
    collect_stats,
    finish,
    projects,
    stats_key,
)
from sparsify.calibrate.file_session import FileModel, release_memory
from sparsify.calibrate.options import DataAwareOptions
from sparsify.calibrate.permutation import permute_channels
from sparsify.calibrate.segments import SegmentedRun
from sparsify.calibrate.session import InMemoryModel
from sparsify.calibrate.streamed import StreamedModel
from sparsify.errors import UsageError
from sparsify.io.model import LoadedModel
from sparsify.io.writer import ModelWriter
from sparsify.masks.apply import PruneResult
from sparsify.masks.blas import blas_libraries, start_meter
from sparsify.masks.methods import NEEDS_CALIBRATION, drift_shape, drift_weight, needs_hessian, prune_with_method
from sparsify.pattern import NMPattern
from sparsify.verify.feeds import load_feeds_for_graph

__all__ = ["prune_data_aware"]


def _apply_budget(memory: FileModel | InMemoryModel, options: DataAwareOptions, results: dict[str, PruneResult],
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
        try:
            return loss(memory.session())
        finally:
            release_memory()  # one session at a time: its memory goes back before the next

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


def prune_data_aware(loaded: LoadedModel, index: GraphIndex, targets: list[LayerRow], pattern: NMPattern,
                     writer: ModelWriter, options: DataAwareOptions, zeroed: dict[str, int],
                     progress=None, calibration_summary: dict | None = None) -> BudgetResult | None:
    """Prune the active targets with ``options.method``; calibrated methods run sequentially
    (as in SparseGPT): each stage's activations are measured on the model whose earlier
    layers are already pruned, so later layers compensate for earlier error.
    ``calibration_summary`` (when given) receives how the calibration ran (report ``calibration``)."""
    if calibration_summary is None:
        calibration_summary = {}
    start_meter()  # the load beside this process, measured from now (masks/blas.py): no wait at the first weight
    run = _DataAwarePass(loaded, index, group_by_weight(targets), pattern, options, writer)
    try:
        run.prune(progress)
    finally:
        run.close_segments()  # also on an error or an interrupt: no activation file is left behind
    calibration_summary.update(run.calibration_summary())
    budget = _apply_budget(run.memory.for_sessions(), options, run.results, run.bias_updates) if options.budget else None
    run.write(writer, budget, zeroed)
    return budget


class _DataAwarePass:
    """One data-aware run: the in-memory model(s), calibration feeds, and what each weight became."""

    def __init__(self, loaded: LoadedModel, index: GraphIndex, groups: list[list[LayerRow]], pattern: NMPattern,
                 options: DataAwareOptions, writer: ModelWriter):
        self.loaded, self.groups, self.pattern, self.options = loaded, groups, pattern, options
        # Without a budget every pruned weight is final when made: written at once and read back
        # from the output when a later segment needs it, so memory holds one weight at a time.
        self.writer = None if options.budget else writer
        self.output_folder = writer.output.parent  # activation files go beside the output
        self.streamed: set[str] = set()  # weights already written by _prune_weight
        self.memory = StreamedModel(loaded)  # weights stay in the file; changes are kept by name
        self.dense = StreamedModel(loaded) if options.method == "sparsegpt" else None
        self.feeds: list = []
        if options.method in NEEDS_CALIBRATION:
            graph = loaded.skeleton.graph
            self.feeds = [feed for source in options.calibration for feed in load_feeds_for_graph(source, graph)]
        self.index = index  # the one find_targets used: the targets' nodes are its nodes
        self.bias_updates: dict[str, tuple] = {}
        self.overrides: dict[str, np.ndarray] = {}  # permuted bits, by tensor name
        self.extra_writes: dict[str, TensorProto] = {}
        self.results: dict[str, PruneResult] = {}
        self.stages = 0
        self.segmented = False
        self.stores: list[ActivationStore] = []
        self.live: SegmentedRun | None = None
        self.dense_live: SegmentedRun | None = None
        self.dense_session = None
        self._whole_model_note = ""

    def read(self, name: str, tensor: TensorProto) -> np.ndarray:
        return self.overrides[name] if name in self.overrides else np.array(self.loaded.read_bits(tensor))

    def _hessian_inputs(self, groups: list[list[LayerRow]]) -> set[StatsKey]:
        return {stats_key(rows[0].target) for rows in groups
                if needs_hessian(self.options.method, rows[0].target.op_node())}

    def prune(self, progress) -> None:
        if self.options.permute:
            models = [m for m in (self.memory, self.dense) if m is not None]
            permute_channels(self.index, self.groups, self.read, models, self.pattern, self.overrides,
                             self.extra_writes)
        stages = _stages(self.groups, self.index) if self.feeds else [self.groups]
        self.stages = len(stages)
        if self.feeds:
            self._start_segments(stages)
        for number, stage in enumerate(stages, 1):
            stats = self._stage_stats(stage) if self.feeds else {}
            where = f"stage {number}/{len(stages)}, " if len(stages) > 1 else ""
            for rows in stage:
                self._prune_weight(rows, stats, progress, where)

    def _start_segments(self, stages: list[list[list[LayerRow]]]) -> None:
        """One forward pass in all: the graph cut where each stage starts (calibrate/segments.py)."""
        cuts = [min(self.index.ordinal(r.target.op_node()) for rows in stage for r in rows) for stage in stages]
        needs_dense = self.dense is not None and bool(self._hessian_inputs(self.groups))
        limit = self.options.activation_memory
        limit = default_activation_memory() if limit is None else limit
        runs = 2 if needs_dense else 1  # the pruned and the dense run share the limit
        self.stores = [ActivationStore(limit // runs, self.output_folder) for _ in range(runs)]
        self.live = SegmentedRun(self.memory, cuts, self.feeds, self.stores[0])
        self.dense_live = SegmentedRun(self.dense, cuts, self.feeds, self.stores[1]) \
            if needs_dense and self.dense else None
        self.segmented = True
        self.dense_session = None

    def close_segments(self) -> None:
        """Each run closes its store (removing its activation files); a store whose run was
        never made has written nothing."""
        for run in (self.live, self.dense_live):
            if run is not None:
                run.close()
        self.live = self.dense_live = None

    def calibration_summary(self) -> dict:
        """How calibration ran, for the report (empty when no calibration data was used)."""
        if not self.feeds:
            return {}
        segmented = self.segmented and not self._whole_model_note
        return {"samples": len(self.feeds), "stages": self.stages, "segmented": segmented,
                "activation_memory_limit_bytes": sum(s.limit for s in self.stores) if self.stores else None,
                "activation_bytes_peak": sum(s.peak_bytes for s in self.stores),
                "activation_bytes_on_disk": sum(s.spilled_bytes for s in self.stores),
                "blas": blas_libraries()}

    def _stage_stats(self, stage: list[list[LayerRow]]) -> dict:
        keys = {stats_key(rows[0].target) for rows in stage}
        hessian_for = self._hessian_inputs(stage)
        weights = self._drift_weights(stage)
        if self.live is not None:
            try:
                values = self.live.advance()
                dense = self.dense_live.advance() if self.dense_live is not None else None
                stats: dict = {}
                accumulate(stats, keys, hessian_for, values, dense, weights)
                return finish(stats)
            except Exception as exc:  # noqa: BLE001 - ORT raises many types; any of them: use whole-model runs
                self._whole_model_note = f"calibration ran the whole model per stage (segments failed: {str(exc)[:120]})"
                self.close_segments()
        if self.dense_session is None and self.dense is not None:  # the dense reference never changes: one session
            wanted = sorted({key.name for key in self._hessian_inputs(self.groups)})
            self.dense_session = self.dense.in_memory().session(extra_outputs=wanted, only=True) if wanted else None
        stats = collect_stats(self.memory.in_memory(), keys, self.feeds, hessian_for, reference=self.dense_session,
                              weights=weights)
        for rows in stage:
            rows[0].outcome.notes.append(self._whole_model_note)
        return stats

    def _drift_weights(self, stage: list[list[LayerRow]]) -> dict[StatsKey, dict[str, np.ndarray]]:
        """For each input of the stage whose readers have few rows together (capture.projects), those
        weights as [rows, K]: their drift (sparsegpt's, against the dense model) is summed per weight,
        not as a K x K matrix.  Decided from the shapes; only those weights are read."""
        if self.dense is None:
            return {}
        readers: dict[StatsKey, list[tuple[WeightSource, int, int]] | None] = {}
        for rows in stage:
            target = rows[0].target
            key = stats_key(target)
            if key.conv is not None or not needs_hessian(self.options.method, target.op_node()):
                continue
            known = readers.setdefault(key, [])
            shape = drift_shape(target.weight_source(), target.op_node())
            if known is not None and shape is not None:
                known.append((target.weight_source(), *shape))
            else:
                readers[key] = None  # one weight the per-weight sum cannot serve: the K x K term for all
        chosen: dict[StatsKey, dict[str, np.ndarray]] = {}
        for key, found in readers.items():
            if found and len({k for _, _, k in found}) == 1 and projects(found[0][2], sum(r for _, r, _ in found)):
                chosen[key] = {src.name: drift_weight(self.read(src.name, src.tensor), src) for src, _, _ in found}
        return chosen

    def _prune_weight(self, rows: list[LayerRow], stats: dict, progress, where: str = "") -> None:
        src = rows[0].target.weight_source()
        if progress:
            progress(len(self.results) + 1, len(self.groups), f"{where}{src.name}")
        bits = self.read(src.name, src.tensor)
        activation = stats.get(stats_key(rows[0].target)) if stats else None
        result, note = prune_with_method(self.options.method, bits, src, rows[0].target.op_node(), self.pattern,
                                         self.loaded.read_bits, activation, fit_iterations=self.options.fit_iterations)
        if result.new_bits is not None and self.feeds:
            self.memory.set_bits(src.name, result.new_bits)
            if self.options.bias_correction and activation is not None and len(rows) == 1:
                _correct_bias(self.index, rows[0], bits, result, activation, self.read, self.memory, self.bias_updates)
        writer = self.writer
        if writer is not None and result.new_bits is not None:
            writer.replace(src.tensor, result.new_bits)
            self.memory.set_written(src.name, lambda: writer.read_back(src.tensor))
            self.streamed.add(src.name)
            result = dataclasses.replace(result, new_bits=None)  # the bits live in the output now
        self.results[src.name] = result
        for row in rows:
            row.outcome.method = self.options.method if not note else "magnitude"
            if note:
                row.outcome.notes.append(note)
                row.outcome.method_fallback = note

    def write(self, writer: ModelWriter, budget: BudgetResult | None, zeroed: dict[str, int]) -> None:
        """Every pruned weight (and corrected bias, permuted tensor) into the writer; rows updated."""
        written: set[str] = set()
        for rows in self.groups:
            name = rows[0].target.weight
            result = self.results[name]
            if budget is not None and name in budget.kept_dense:
                for row in rows:
                    row.outcome.skip(f"kept dense for the {budget.kind.replace('_', ' ')} budget "
                                     f"(sensitivity {budget.sensitivity[name]:.4g})")
                    row.outcome.sensitivity = budget.sensitivity[name]
                continue
            pruned = result.new_bits is not None or name in self.streamed
            if pruned:
                if result.new_bits is not None:
                    writer.replace(rows[0].target.weight_source().tensor, result.new_bits)
                written.add(name)
                if name in self.bias_updates:
                    writer.replace(self.bias_updates[name][1], self.bias_updates[name][2])
                    written.add(self.bias_updates[name][0])
            zeroed[name] = result.zeroed
            for row in rows:
                row.outcome.status = Status.PRUNED if pruned else Status.ALREADY_NM
                row.outcome.density_before, row.outcome.density_after = result.density_before, result.density_after
                if budget is not None:
                    row.outcome.sensitivity = budget.sensitivity.get(name)
        for name, tensor in self.extra_writes.items():  # permuted tensors that were not rewritten above
            if name not in written:
                writer.replace(tensor, self.overrides[name])
