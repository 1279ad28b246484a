"""The pipeline behind ``sparsify prune`` and ``sparsify check``, as a Python API.

load (skeleton) -> find targets -> select -> prune + write (one weight at a time)
-> verify parity in ONNX Runtime -> report.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from sparsify.analysis.index import GraphIndex
from sparsify.analysis.lookthrough import WeightSource
from sparsify.analysis.select import compile_patterns, select_targets
from sparsify.analysis.targets import LayerRow, Status, find_targets, group_by_weight
from sparsify.errors import UsageError
from sparsify.io.model import LoadedModel, open_model
from sparsify.io.npz import input_byte_limit, scan_arrays
from sparsify.io.paths import check_name_lengths, check_write_paths, model_reads
from sparsify.io.prefetch import mapped_bits, storage_order, writable_copy
from sparsify.io.publish import Publication, remove_stale_staging
from sparsify.io.writer import ModelWriter, superseded_data_files
from sparsify.masks.apply import prune_weight
from sparsify.masks.audit import audit_weights
from sparsify.masks.given import apply_given_mask, load_masks
from sparsify.options import Interface, PruneOptions, as_list
from sparsify.pattern import NMPattern, parse_pattern
from sparsify.report import Report

__all__ = ["check", "default_output_path", "default_report_path", "prune"]

ModelLike = str | Path | onnx.ModelProto
Progress = Callable[[int, int, str], None]


def default_output_path(model_path: Path) -> Path:
    stem = model_path.name[:-5] if model_path.name.endswith(".onnx") else model_path.name
    return model_path.with_name(f"{stem}.sparse.onnx")


def default_report_path(output: Path) -> Path:
    stem = output.name[:-5] if output.name.endswith(".onnx") else output.name
    return output.with_name(f"{stem}.report.json")


def _pattern(pattern: str | NMPattern) -> NMPattern:
    return pattern if isinstance(pattern, NMPattern) else parse_pattern(pattern)


def _materialize(model: ModelLike, workdir: str) -> Path:
    if isinstance(model, onnx.ModelProto):
        path = Path(workdir) / "model.onnx"
        onnx.save(model, path)
        return path
    return Path(model)


def _prune_weights(model: LoadedModel, targets: list[LayerRow], pattern: NMPattern,
                   writer: ModelWriter, report: Report, progress: Progress | None,
                   masks: dict | None = None) -> None:
    groups = group_by_weight(targets)
    sources = [rows[0].target.weight_source() for rows in groups]
    order = storage_order(model, [src.tensor for src in sources])
    # Two buffers in turn: the writer may still be writing the previous weight from the other.
    buffers: list[np.ndarray | None] = [None, None]
    with contextlib.closing(mapped_bits(model, [sources[i].tensor for i in order])) as stored:
        for done, (index, view) in enumerate(zip(order, stored, strict=True), 1):
            _prune_one(model, groups[index], sources[index], view, buffers, done % 2, pattern, writer, report, masks)
            if progress:
                progress(done, len(groups), groups[index][0].target.weight)


def _prune_one(model: LoadedModel, rows: list[LayerRow], src: WeightSource, view: np.ndarray, buffers: list[np.ndarray | None],
               slot: int, pattern: NMPattern, writer: ModelWriter, report: Report, masks: dict | None) -> None:
    bits, buffers[slot] = writable_copy(view, buffers[slot])
    note = ""
    if masks is not None:
        result, note = apply_given_mask(bits, src, masks[src.name], pattern, model.read_bits)
    else:
        result = prune_weight(bits, src, pattern, model.read_bits, in_place=True)
    del bits
    if result.new_bits is not None:
        writer.replace(src.tensor, result.new_bits)
        if model.location(src.tensor).kind == "inline" and not model.uses_external_data:
            rows[0].outcome.notes.append("stored in typed fields; written back as raw_data")
    report.zeroed[src.name] = result.zeroed
    for row in rows:
        row.outcome.status = Status.PRUNED if result.new_bits is not None else Status.ALREADY_NM
        if note:  # a given mask that is not N:M: applied, but no sparse weight
            row.outcome.status, row.outcome.reason = Status.MASKED_NOT_NM, note
        row.outcome.density_before, row.outcome.density_after = result.density_before, result.density_after
        row.outcome.method = "given mask" if masks is not None else "magnitude"


def _warnings(targets: list[LayerRow], pattern: NMPattern) -> list[str]:
    warnings = []
    fp32 = [t for t in targets if t.outcome.status in (Status.PRUNED, Status.ALREADY_NM) and t.target.dtype == "float"]
    if fp32:
        warnings.append(
            f"{len(fp32)} sparse weight(s) are float32: TensorRT runs fp32 as TF32 with 1:2, not 2:4 "
            "sparsity; convert to fp16/bf16 (the build step does) to use the 2:4 kernels"
        )
    not_nm = {t.target.weight for t in targets if t.outcome.status is Status.MASKED_NOT_NM}
    if not_nm:
        warnings.append(f"{len(not_nm)} given mask(s) are not {pattern} along the reduction axis: applied, but those "
                        f"weights are not counted as sparse ({', '.join(sorted(not_nm)[:3])}{' ...' if len(not_nm) > 3 else ''})")
    if not pattern.hardware_supported:
        warnings.append(f"pattern {pattern} is not accelerated by Sparse Tensor Cores (they run 2:4)")
    return warnings


def _read_paths(loaded: LoadedModel, options: PruneOptions | None = None,
                interface: Interface = "api") -> list[tuple[str, Path]]:
    """Every file the run reads: the model, its external data, and the npz files given (labelled
    ``--inputs file`` on the command line, ``inputs= file`` in the API)."""
    reads = model_reads("input model", loaded.path, loaded.external_files)
    if options is not None:
        for field_name, paths in options.read_files().items():
            reads += [(f"{options.name(field_name, interface)} file", path) for path in paths]
    return reads


def _check_data_files(loaded: LoadedModel, options: PruneOptions) -> None:
    """Every npz the run will read, checked from its headers before any work: readable,
    numeric, within --max-input-bytes, and (model inputs) fitting the graph's inputs."""
    if options.masks is not None:
        scan_arrays(options.masks, "masks")
    data = [options.inputs, *options.calibration, options.eval_data]
    if all(d is None for d in data):
        return
    from sparsify.verify.feeds import check_npz_inputs  # imports onnxruntime

    graph = loaded.skeleton.graph
    for source in data:
        if source is not None:
            labels = ("labels",) if source is options.eval_data else ()
            check_npz_inputs(source, graph, extra_keys=labels)


def _input_shapes(options: PruneOptions, interface: Interface) -> dict[str, list[int]]:
    if isinstance(options.input_shapes, Mapping):
        return {str(k): list(v) for k, v in options.input_shapes.items()}
    if not options.input_shapes:
        return {}
    from sparsify.verify.feeds import parse_input_shapes

    return parse_input_shapes(list(options.input_shapes), options.name("input_shapes", interface))


def prune(model: ModelLike, pattern: str | NMPattern = "2:4", output: str | Path | None = None, *,
          options: PruneOptions | None = None, progress: Progress | None = None, record_input: bool = True,
          inputs_label: str | None = None, interface: Interface = "api", **keywords: Any) -> Report:
    """Prune every eligible Conv/MatMul/Gemm weight to N:M and write the sparse model.

    Every option is a field of :class:`sparsify.PruneOptions` (docs/cli.md lists them with
    their flags): pass them as keywords, or as ``options=``.  Files can be given as paths or,
    for ``inputs``, ``calibration``, ``eval_data`` and ``masks``, as ``{name: array}``.

    ``method``: magnitude (default), wanda or sparsegpt (these need ``calibration``).
    ``max_accuracy_drop`` (with ``eval_data``: inputs + ``labels``) or ``max_output_drift``
    keep the most sensitive layers dense until the budget holds.  ``masks``: 0/1 masks keyed by
    stored weight name, applied instead of computing masks (validated in full before anything
    is written; weights without one stay dense).
    ``inputs_label``: what the report and table call ``inputs`` (front ends: "example inputs").
    ``record_input``: False when ``model`` is a temporary file (the report's ``input`` is then
    null: it names only a dense model that outlives the run, as ``sparsify build`` relies on).

    Returns the Report (also written as JSON).  Gate results are in ``report.parity``;
    ``report.gates_passed`` is False when a requested gate failed or could not be evaluated.
    A ModelProto input needs ``output`` (the result is written there).
    """
    started = time.perf_counter()
    if options is None:
        options = PruneOptions.from_keywords({"pattern": pattern, "output": output, **keywords})
    elif keywords or pattern != "2:4" or output is not None:
        given = sorted([*keywords, *(["pattern"] if pattern != "2:4" else []), *(["output"] if output is not None else [])])
        raise UsageError(f"give options= or keywords, not both (got {', '.join(given)})")
    options.validate(interface)
    nm = options.nm()
    includes = compile_patterns(options.include, options.name("include", interface))
    excludes = compile_patterns(options.exclude, options.name("exclude", interface))
    shapes = _input_shapes(options, interface)
    if isinstance(model, onnx.ModelProto) and options.output is None:
        raise UsageError("prune(ModelProto) needs output=PATH")
    run = _Run(options, nm, includes, excludes, shapes, progress, record_input, inputs_label, started, interface)
    publication = Publication()
    try:
        with tempfile.TemporaryDirectory(prefix="sparsify-") as workdir, input_byte_limit(options.max_input_bytes):
            return _prune_into(publication, model, workdir, run)
    finally:
        publication.discard()


@dataclass
class _Run:
    """One prune run's settled inputs (options validated, patterns compiled)."""

    options: PruneOptions
    nm: NMPattern
    includes: list[re.Pattern]
    excludes: list[re.Pattern]
    shapes: dict[str, list[int]]
    progress: Progress | None
    record_input: bool
    inputs_label: str | None
    started: float
    interface: Interface = "api"
    timings: dict[str, float] = field(default_factory=dict)


def _open_checked(path: Path, run: _Run) -> tuple[LoadedModel, Path, Path]:
    """Open the model and settle the output paths; every input checked before any work."""
    options = run.options
    loaded = open_model(path)
    out = Path(options.output) if options.output is not None else default_output_path(path)
    check_name_lengths(out, "output")
    json_path = Path(options.report_path) if options.report_path is not None else default_report_path(out)
    check_write_paths(_read_paths(loaded, options, run.interface), {"output model": out, "report": json_path})
    for folder in {out.parent, json_path.parent}:
        remove_stale_staging(folder if str(folder) else Path("."))
    _check_data_files(loaded, options)
    if run.shapes:
        from sparsify.verify.feeds import check_input_shapes  # imports onnxruntime

        check_input_shapes(run.shapes, loaded.skeleton.graph, run.options.name("input_shapes", run.interface))
    return loaded, out, json_path


def _prune_into(publication: Publication, model: ModelLike, workdir: str, run: _Run) -> Report:
    options, timings = run.options, run.timings
    path = _materialize(model, workdir)
    t0 = time.perf_counter()
    loaded, out, json_path = _open_checked(path, run)
    timings["load"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = GraphIndex(loaded.skeleton)
    rows = find_targets(index, run.nm)
    select_targets(rows, run.includes, run.excludes, options.only_profitable, options.min_channels)
    given = load_masks(options.masks, rows) if options.masks is not None else None
    timings["analyse"] = time.perf_counter() - t0
    dense_input = str(path) if run.record_input and not isinstance(model, onnx.ModelProto) else None
    report = Report("prune", dense_input, run.nm, rows, output_path=str(out), arguments=options.arguments())
    # Nothing the user had changes until the pruned model is verified: the writer keeps it
    # in staging files, parity runs on those, then model, data and report publish together.
    with ModelWriter(loaded, out, publication) as writer:
        _prune_and_verify(loaded, index, path, rows, writer, report, run, given)
    if writer.data_file is not None:
        report.output_data_file = str(writer.data_file)
    timings["total"] = time.perf_counter() - run.started
    report.timings = timings
    report.stage_json(publication, json_path)
    protected = {p.resolve() for _, p in _read_paths(loaded)}
    data_file = writer.data_file
    publication.publish(remove_after=lambda: superseded_data_files(out, data_file, protected))
    return report


def _prune_and_verify(loaded: LoadedModel, index: GraphIndex, path: Path, rows: list[LayerRow], writer: ModelWriter,
                      report: Report, run: _Run, given: dict | None) -> None:
    options, timings, data_aware = run.options, run.timings, run.options.data_aware()
    t0 = time.perf_counter()
    if not data_aware.beyond_magnitude:
        _prune_weights(loaded, rows, run.nm, writer, report, run.progress, given)
    else:
        from sparsify.calibrate.pipeline import prune_data_aware  # imports onnxruntime

        calibration: dict = {}
        budget = prune_data_aware(loaded, index, rows, run.nm, writer, data_aware, report.zeroed, run.progress,
                                  calibration)
        report.calibration = calibration or None
        report.budget = asdict(budget) if budget is not None else None
    candidate = writer.finish()
    timings["prune_and_write"] = time.perf_counter() - t0
    report.warnings = _warnings(rows, run.nm)
    if options.verify:
        from sparsify.verify.parity import check_parity  # imports onnxruntime: only when verifying

        t0 = time.perf_counter()
        report.parity = check_parity(path, candidate, input_shapes=run.shapes, inputs_npz=options.inputs,
                                     seed=options.seed, max_rel_error=options.max_rel_error,
                                     min_top1=options.min_top1_agreement, inputs_label=run.inputs_label)
        timings["verify"] = time.perf_counter() - t0
    writer.stage_final()


def check(model: ModelLike, pattern: str | NMPattern = "2:4", *, report_path: str | Path | None = None,
          include: str | Sequence[str] | None = None, exclude: str | Sequence[str] | None = None,
          arguments: dict | None = None) -> Report:
    """Audit which eligible weights already are N:M along their reduction axis."""
    started = time.perf_counter()
    nm = _pattern(pattern)
    includes, excludes = compile_patterns(as_list(include), "--include"), compile_patterns(as_list(exclude), "--exclude")
    with tempfile.TemporaryDirectory(prefix="sparsify-") as workdir:
        path = _materialize(model, workdir)
        loaded = open_model(path)
        if report_path is not None:
            check_write_paths(_read_paths(loaded), {"report": Path(report_path)})
            folder = Path(report_path).parent
            remove_stale_staging(folder if str(folder) else Path("."))
        targets = find_targets(GraphIndex(loaded.skeleton), nm)
        select_targets(targets, includes, excludes, only_profitable=False)
        weights = group_by_weight(targets)
        sources = [rows[0].target.weight_source() for rows in weights]
        for rows, src, audit in zip(weights, sources, audit_weights(loaded, sources, nm), strict=True):
            for row in rows:
                row.outcome.density_before = row.outcome.density_after = audit.density
                if audit.bad_groups:
                    row.outcome.status = Status.NON_COMPLIANT
                    row.outcome.reason = (f"{audit.bad_groups} of {audit.groups} groups hold more than {nm.n} "
                                          f"non-zeros along axis {src.axis}")
                else:
                    row.outcome.status = Status.COMPLIANT
        report = Report("check", None if isinstance(model, onnx.ModelProto) else str(path), nm, targets,
                        arguments=arguments or {})
        report.timings = {"total": time.perf_counter() - started}
        if report_path is not None:
            publication = Publication()
            try:
                report.stage_json(publication, Path(report_path))
                publication.publish()
            finally:
                publication.discard()
        return report
