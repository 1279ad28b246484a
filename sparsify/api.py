"""The pipeline behind ``sparsify prune`` and ``sparsify check``, as a Python API.

load (skeleton) -> find targets -> select -> prune + write (one weight at a time)
-> verify parity in ONNX Runtime -> report.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import onnx

from sparsify.analysis.index import GraphIndex
from sparsify.analysis.select import DEFAULT_MIN_CHANNELS, compile_patterns, select_targets
from sparsify.analysis.targets import PruneTarget, find_targets, group_by_weight
from sparsify.calibrate.options import DataAwareOptions
from sparsify.errors import UsageError
from sparsify.io.model import LoadedModel, open_model
from sparsify.io.npz import input_byte_limit
from sparsify.io.paths import check_name_lengths, check_write_paths, model_reads
from sparsify.io.publish import Publication, remove_stale_staging
from sparsify.io.writer import ModelWriter, superseded_data_files
from sparsify.masks.apply import nonzero_mask, prune_weight
from sparsify.masks.given import apply_given_mask, load_masks
from sparsify.masks.nm import nm_violations
from sparsify.masks.registry import METHODS
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


def _prune_weights(model: LoadedModel, targets: list[PruneTarget], pattern: NMPattern,
                   writer: ModelWriter, report: Report, progress: Progress | None,
                   masks: dict | None = None) -> None:
    groups = group_by_weight(targets)
    for done, rows in enumerate(groups, 1):
        src = rows[0].weight_source()
        bits = model.read_bits_scratch(src.tensor)
        note = ""
        if masks is not None:
            result, note = apply_given_mask(bits, src, masks[src.name], pattern, model.read_bits)
        else:
            result = prune_weight(bits, src, pattern, model.read_bits, in_place=True)
        del bits
        if result.new_bits is not None:
            writer.replace(src.tensor, result.new_bits)
            if model.location(src.tensor).kind == "inline" and not model.uses_external_data:
                rows[0].notes.append("stored in typed fields; written back as raw_data")
        report.zeroed[src.name] = result.zeroed
        for row in rows:
            row.status = "pruned" if result.new_bits is not None else "already_nm"
            if note:  # a given mask that is not N:M: applied, but no sparse weight
                row.status, row.skip_reason = "masked_not_nm", note
            row.density_before, row.density_after = result.density_before, result.density_after
            row.method = "given mask" if masks is not None else "magnitude"
        if progress:
            progress(done, len(groups), rows[0].weight)


def _warnings(targets: list[PruneTarget], pattern: NMPattern) -> list[str]:
    warnings = []
    fp32 = [t for t in targets if t.status in ("pruned", "already_nm") and t.dtype == "float"]
    if fp32:
        warnings.append(
            f"{len(fp32)} sparse weight(s) are float32: TensorRT runs fp32 as TF32 with 1:2, not 2:4 "
            "sparsity; convert to fp16/bf16 (the build step does) to use the 2:4 kernels"
        )
    not_nm = {t.weight for t in targets if t.status == "masked_not_nm"}
    if not_nm:
        warnings.append(f"{len(not_nm)} given mask(s) are not {pattern} along the reduction axis: applied, but those "
                        f"weights are not counted as sparse ({', '.join(sorted(not_nm)[:3])}{' ...' if len(not_nm) > 3 else ''})")
    if not pattern.hardware_supported:
        warnings.append(f"pattern {pattern} is not accelerated by Sparse Tensor Cores (they run 2:4)")
    return warnings


def _parse_input_shapes(specs: list[str] | None) -> dict[str, list[int]]:
    from sparsify.verify.feeds import parse_input_shapes

    return parse_input_shapes(specs)


def _read_paths(loaded: LoadedModel, **files: str | list[str] | None) -> list[tuple[str, Path]]:
    """Every file the run reads: the model, its external data, and the npz files given."""
    reads = model_reads("input model", loaded.path, loaded.external_files)
    for label, value in files.items():
        reads += [(f"--{label.replace('_', '-')} file", Path(item)) for item in _as_list(value)]
    return reads


def _check_data_files(loaded: LoadedModel, inputs: str | None, data_aware: DataAwareOptions, masks: str | None) -> None:
    """Every npz the run will read, checked from its headers before any work: readable,
    numeric, within --max-input-bytes, and (model inputs) fitting the graph's inputs."""
    from sparsify.io.npz import scan_npz

    if masks is not None:
        scan_npz(masks)
    data = [inputs, *data_aware.calibration, data_aware.eval_data]
    if not any(data):
        return
    from sparsify.verify.feeds import check_npz_inputs  # imports onnxruntime

    graph, ir_version = loaded.skeleton.graph, loaded.skeleton.ir_version
    for path in data:
        if path:
            check_npz_inputs(path, graph, ir_version, extra_keys=("labels",) if path == data_aware.eval_data else ())


def _as_list(value) -> list:
    """A repeatable option: one string (or path) is one item, never its characters."""
    if value is None:
        return []
    if isinstance(value, str | Path):
        return [value]
    return list(value)


def _check_seed(seed: int) -> None:
    if not 0 <= seed < 2**63:
        raise UsageError(f"--seed must be a non-negative integer below 2**63, got {seed}")


def _check_gate_values(max_rel_error: float | None, min_top1: float | None) -> None:
    if max_rel_error is not None and not max_rel_error >= 0:
        raise UsageError(f"--max-rel-error must be >= 0, got {max_rel_error}")
    if min_top1 is not None and not 0 <= min_top1 <= 1:
        raise UsageError(f"--min-top1-agreement must be in [0, 1], got {min_top1}")


def prune(model: ModelLike, pattern: str | NMPattern = "2:4", output: str | Path | None = None, *,
          report_path: str | Path | None = None, include: str | Sequence[str] | None = None,
          exclude: str | Sequence[str] | None = None, only_profitable: bool = False,
          min_channels: int = DEFAULT_MIN_CHANNELS, verify: bool = True,
          input_shapes: list[str] | dict[str, list[int]] | None = None, inputs: str | None = None,
          seed: int = 0, max_rel_error: float | None = None, min_top1_agreement: float | None = None,
          progress: Progress | None = None, arguments: dict | None = None, method: str = "magnitude",
          calibration: str | Path | Sequence[str | Path] | None = None, max_accuracy_drop: float | None = None,
          max_output_drift: float | None = None, eval_data: str | None = None,
          bias_correction: bool = True, permute: bool = False, masks: str | None = None,
          record_input: bool = True, max_input_bytes: int | None = None, inputs_label: str | None = None) -> Report:
    """Prune every eligible Conv/MatMul/Gemm weight to N:M and write the sparse model.

    ``method``: magnitude (default), wanda or sparsegpt (these need ``calibration`` .npz
    files).  ``max_accuracy_drop`` (with ``eval_data``: inputs + ``labels``) or
    ``max_output_drift`` keep the most sensitive layers dense until the budget holds.
    ``bias_correction``: calibrated methods also move each layer's bias so its output mean
    matches the dense model's (the rows' notes name every changed bias).  ``permute``:
    channel permutation where an exact graph equivalent exists (rows' notes give the gain).
    ``masks``: an .npz of 0/1 masks keyed by stored weight name, applied instead of computing
    masks (validated in full before anything is written; weights without one stay dense).
    ``max_input_bytes``: cap on what each npz file may declare (default 8 GiB).
    ``inputs_label``: what the report and table call ``inputs`` (front ends: "example inputs").
    ``record_input``: False when ``model`` is a temporary file (the report's ``input`` is then
    null: it names only a dense model that outlives the run, as ``sparsify build`` relies on).

    Returns the Report (also written as JSON).  Gate results are in ``report.parity``;
    ``report.gates_passed`` is False when a requested gate failed or could not be evaluated.
    A ModelProto input needs ``output`` (the result is written there).
    """
    started = time.perf_counter()
    nm = _pattern(pattern)
    max_rel_error = None if max_rel_error is None else float(max_rel_error)
    min_top1_agreement = None if min_top1_agreement is None else float(min_top1_agreement)
    _check_gate_values(max_rel_error, min_top1_agreement)
    if not verify and (max_rel_error is not None or min_top1_agreement is not None):
        raise UsageError("--no-verify cannot be combined with a parity gate")
    if method not in METHODS:
        raise UsageError(f"unknown --method {method!r}: choose from {', '.join(METHODS)}")
    data_aware = DataAwareOptions(method, [str(c) for c in _as_list(calibration)], max_accuracy_drop, max_output_drift, eval_data, inputs,
                                  bias_correction, permute)
    data_aware.validate()
    if masks is not None and data_aware.in_memory:
        raise UsageError("--masks applies given masks: it cannot be combined with --method, --permute or a budget")
    includes, excludes = compile_patterns(_as_list(include), "--include"), compile_patterns(_as_list(exclude), "--exclude")
    shapes = input_shapes if isinstance(input_shapes, dict) else _parse_input_shapes(input_shapes)
    if isinstance(model, onnx.ModelProto) and output is None:
        raise UsageError("prune(ModelProto) needs output=PATH")
    _check_seed(seed)
    publication = Publication()
    try:
        with tempfile.TemporaryDirectory(prefix="sparsify-") as workdir, input_byte_limit(max_input_bytes):
            return _prune_into(publication, model, workdir, output, report_path, nm, includes, excludes,
                               only_profitable, min_channels, verify, shapes, inputs, seed, max_rel_error,
                               min_top1_agreement, progress, arguments, data_aware, masks, record_input, started,
                               inputs_label)
    finally:
        publication.discard()


def _prune_into(publication, model, workdir, output, report_path, nm, includes, excludes, only_profitable,
                min_channels, verify, shapes, inputs, seed, max_rel_error, min_top1_agreement, progress,
                arguments, data_aware, masks, record_input, started, inputs_label=None) -> Report:
    path = _materialize(model, workdir)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    loaded = open_model(path)
    out = Path(output) if output is not None else default_output_path(path)
    check_name_lengths(out, "output")
    json_path = Path(report_path) if report_path is not None else default_report_path(out)
    check_write_paths(_read_paths(loaded, inputs=inputs, calibration=data_aware.calibration,
                                  eval=data_aware.eval_data, masks=masks),
                      {"output model": out, "report": json_path})
    for folder in {out.parent, json_path.parent}:
        remove_stale_staging(folder if str(folder) else Path("."))
    _check_data_files(loaded, inputs, data_aware, masks)
    if shapes:
        from sparsify.verify.feeds import check_input_shapes  # imports onnxruntime

        check_input_shapes(shapes, loaded.skeleton.graph, loaded.skeleton.ir_version)
    timings["load"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    targets = find_targets(GraphIndex(loaded.skeleton), nm)
    select_targets(targets, includes, excludes, only_profitable, min_channels)
    given = load_masks(masks, targets) if masks is not None else None
    timings["analyse"] = time.perf_counter() - t0
    dense_input = str(path) if record_input and not isinstance(model, onnx.ModelProto) else None
    report = Report("prune", dense_input, nm, targets, output_path=str(out), arguments=arguments or {})
    t0 = time.perf_counter()
    # Nothing the user had changes until the pruned model is verified: the writer keeps it
    # in staging files, parity runs on those, then model, data and report publish together.
    with ModelWriter(loaded, out, publication) as writer:
        if not data_aware.in_memory:
            _prune_weights(loaded, targets, nm, writer, report, progress, given)
        else:
            from sparsify.calibrate.pipeline import prune_data_aware  # imports onnxruntime

            budget = prune_data_aware(loaded, targets, nm, writer, data_aware, report.zeroed, progress)
            report.budget = asdict(budget) if budget is not None else None
        candidate = writer.finish()
        timings["prune_and_write"] = time.perf_counter() - t0
        report.warnings = _warnings(targets, nm)
        if verify:
            from sparsify.verify.parity import check_parity  # imports onnxruntime: only when verifying

            t0 = time.perf_counter()
            report.parity = check_parity(path, candidate, input_shapes=shapes, inputs_npz=inputs, seed=seed,
                                         max_rel_error=max_rel_error, min_top1=min_top1_agreement,
                                         inputs_label=inputs_label)
            timings["verify"] = time.perf_counter() - t0
        writer.stage_final()
    if writer.data_file is not None:
        report.output_data_file = str(writer.data_file)
    timings["total"] = time.perf_counter() - started
    report.timings = timings
    report.stage_json(publication, json_path)
    protected = {p.resolve() for _, p in _read_paths(loaded)}
    data_file = writer.data_file
    publication.publish(remove_after=lambda: superseded_data_files(out, data_file, protected))
    return report


def check(model: ModelLike, pattern: str | NMPattern = "2:4", *, report_path: str | Path | None = None,
          include: str | Sequence[str] | None = None, exclude: str | Sequence[str] | None = None,
          arguments: dict | None = None) -> Report:
    """Audit which eligible weights already are N:M along their reduction axis."""
    started = time.perf_counter()
    nm = _pattern(pattern)
    includes, excludes = compile_patterns(_as_list(include), "--include"), compile_patterns(_as_list(exclude), "--exclude")
    with tempfile.TemporaryDirectory(prefix="sparsify-") as workdir:
        path = _materialize(model, workdir)
        loaded = open_model(path)
        if report_path is not None:
            check_write_paths(_read_paths(loaded), {"report": Path(report_path)})
            folder = Path(report_path).parent
            remove_stale_staging(folder if str(folder) else Path("."))
        targets = find_targets(GraphIndex(loaded.skeleton), nm)
        select_targets(targets, includes, excludes, only_profitable=False)
        for rows in group_by_weight(targets):
            src = rows[0].weight_source()
            nonzero = nonzero_mask(loaded.read_bits(src.tensor), src, loaded.read_bits)
            bad, groups = nm_violations(nonzero, src.axis, nm.n, nm.m)
            density = float(nonzero.mean()) if nonzero.size else 0.0
            for row in rows:
                row.density_before = row.density_after = density
                if bad:
                    row.status = "non_compliant"
                    row.skip_reason = f"{bad} of {groups} groups hold more than {nm.n} non-zeros along axis {src.axis}"
                else:
                    row.status = "compliant"
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
