"""One Report object -> the terminal table and the versioned JSON report."""

from __future__ import annotations

import functools
import json
import math
import os
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from sparsify.analysis.targets import SPARSE_STATUSES, LayerRow, Status
from sparsify.errors import OutputError
from sparsify.io.jsonsafe import json_safe
from sparsify.io.publish import Publication
from sparsify.pattern import NMPattern
from sparsify.table import format_table

if TYPE_CHECKING:
    from sparsify.verify.metrics import ParityResult

__all__ = ["SCHEMA_PATH", "SCHEMA_VERSION", "Report", "library_versions", "validate_report"]

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("schema") / "report.schema.json"


def validate_report(data: dict) -> None:
    """Raise if ``data`` does not follow the report's JSON Schema (needs ``jsonschema``)."""
    _validator().validate(data)


@functools.cache
def _validator():
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text())
    return jsonschema.validators.validator_for(schema)(schema)


def library_versions() -> dict[str, str]:
    from sparsify import __version__

    versions = {"sparsify": __version__, "python": platform.python_version()}
    for package in ("numpy", "onnx", "onnxruntime"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _row(row: LayerRow) -> dict:
    t, o = row.target, row.outcome
    return {
        "layer": t.layer, "op_type": t.op_type, "input_index": t.input_index,
        "weight": t.weight, "weight_shape": list(t.weight_shape), "dtype": t.dtype,
        "reduction_axis": t.axis, "op_reduction_axis": t.op_axis, "path": list(t.path),
        "status": o.status.value, "reason": o.reason,
        "density_before": o.density_before, "density_after": o.density_after,
        "reduction_length": t.reduction_length, "kernel_positions": t.kernel_positions,
        "output_features": t.output_features, "method": o.method or None, "method_fallback": o.method_fallback,
        "sensitivity": o.sensitivity, "permutation_gain": o.permutation_gain, "predicted_profitable": t.profitable,
        "profitability": t.profitability, "notes": o.notes,
    }


@dataclass
class Report:
    command: str
    input_path: str | None  # the dense model, or None when it lived only in memory / a temporary file
    pattern: NMPattern
    rows: list[LayerRow] = field(default_factory=list)  # one per target, in graph order
    output_path: str | None = None
    output_data_file: str | None = None
    arguments: dict = field(default_factory=dict)
    parity: ParityResult | None = None  # noqa: F821 (imported lazily)
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    zeroed: dict[str, int] = field(default_factory=dict)  # weight name -> newly zeroed entries
    report_path: str | None = None
    budget: dict | None = None  # accuracy budget outcome (see calibrate/budget.py)
    calibration: dict | None = None  # how calibration ran (wanda/sparsegpt/budgets with data); see calibrate/pipeline.py

    @property
    def gates_passed(self) -> bool:
        return self.parity is None or self.parity.gates_passed

    def count(self, status: Status | str) -> int:
        return sum(1 for r in self.rows if r.outcome.status == status)

    def totals(self) -> dict:
        unique: dict[str, LayerRow] = {}
        for r in self.rows:
            if r.outcome.status in SPARSE_STATUSES:
                unique.setdefault(r.target.weight, r)
        params = sum(math.prod(r.target.weight_shape) for r in unique.values())
        dense_fp16 = 2 * params
        # Kept values plus their index metadata (2 bits per kept value for 2:4).
        sparse_fp16 = dense_fp16 * self.pattern.density * (16 + self.pattern.metadata_bits) / 16
        statuses = sorted({r.outcome.status.value for r in self.rows})
        return {
            "targets": len(self.rows),
            **{status: self.count(status) for status in statuses},
            "sparse_weights": len(unique),
            "parameters_in_sparse_weights": params,
            "parameters_zeroed": sum(self.zeroed.values()),
            "weight_bytes_dense_fp16": dense_fp16,
            "weight_bytes_sparse_fp16_estimate": int(round(sparse_fp16)),
            "weight_bytes_saved_fraction": (1 - sparse_fp16 / dense_fp16) if dense_fp16 else 0.0,
        }

    def to_dict(self) -> dict:
        return {
            "schema": "sparsify.report", "schema_version": SCHEMA_VERSION,
            "command": self.command, "arguments": self.arguments, "versions": library_versions(),
            "input": self.input_path, "output": self.output_path, "output_data_file": self.output_data_file,
            "pattern": str(self.pattern), "pattern_hardware_supported": self.pattern.hardware_supported,
            "targets": [_row(t) for t in self.rows], "totals": self.totals(),
            "parity": self.parity.to_dict() if self.parity else None, "budget": self.budget,
            "warnings": self.warnings, "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
            **({"calibration": self.calibration} if self.calibration else {}),
        }

    def json_text(self) -> str:
        data = json_safe(self.to_dict())
        if os.environ.get("SPARSIFY_VALIDATE_REPORTS"):  # the test suite checks every report it writes
            validate_report(data)
        return json.dumps(data, indent=2, default=_json_default, allow_nan=False) + "\n"

    def stage_json(self, publication: Publication, path: Path) -> None:
        """Write the JSON into a staging file of ``publication`` (published with the model)."""
        self.report_path = str(path)
        text = self.json_text()
        try:
            staged = publication.stage(path)
            staged.write_text(text, encoding="utf-8")
        except OSError as exc:
            self.report_path = None
            raise OutputError(f"{path}: cannot write report: {exc.strerror or exc}") from None
        publication.add(staged, path)

    def format_table(self, wide: bool = False) -> str:
        """The per-layer table.  Long layer names are shortened in the middle (the distinctive
        tail stays, and no two rows look alike) unless ``wide``; reasons are never cut."""
        prune = self.command == "prune"
        header = ("layer", "op", "weight shape", "dtype", "axis", "status", *(("method",) if prune else ()), "density",
                  "2:4 gain", "reason")
        names = [t.target.layer for t in self.rows] if wide else _distinct_short_names([t.target.layer for t in self.rows], 40)
        rows = []
        for name, row in zip(names, self.rows, strict=True):
            t, o = row.target, row.outcome
            if o.density_before is None:
                density = ""
            elif not prune:
                density = f"{o.density_before:.2f}"
            else:
                density = f"{o.density_before:.2f}->{o.density_after:.2f}"
            skipped = o.status is Status.SKIPPED
            gain = "-" if t.profitable is None or skipped else ("likely" if t.profitable else "unlikely")
            method = (o.method + ("*" if o.method_fallback else "")) if o.method and not skipped else ""
            rows.append((
                name, t.op_type, "x".join(map(str, t.weight_shape)) or "-", t.dtype or "-",
                "-" if t.axis is None else str(t.axis), o.status.value, *((method,) if prune else ()), density, gain, o.reason,
            ))
        lines = [*format_table(header, rows), ""]
        lines.extend(self._summary_lines())
        return "\n".join(lines)

    def _summary_lines(self) -> list[str]:
        totals = self.totals()
        counts = ", ".join(f"{totals[s]} {s}" for s in ("pruned", "already_nm", "masked_not_nm", "compliant", "non_compliant",
                                                          "skipped") if s in totals)
        lines = [f"{totals['targets']} targets: {counts or 'none'}  (pattern {self.pattern})"]
        fallbacks = {r.target.weight: r.outcome.method_fallback for r in self.rows
                     if r.outcome.method_fallback and r.outcome.status is not Status.SKIPPED}
        if fallbacks:
            reasons = sorted(set(fallbacks.values()))
            lines.append(f"method*: {len(fallbacks)} weight(s) fell back to magnitude ({'; '.join(reasons)})")
        if totals["sparse_weights"] and self.command == "prune":
            lines.append(
                f"{totals['parameters_zeroed']:,} parameters zeroed; {self.pattern} weights "
                f"{_mb(totals['weight_bytes_dense_fp16'])} fp16 dense -> {_mb(totals['weight_bytes_sparse_fp16_estimate'])} "
                f"compressed ({totals['weight_bytes_saved_fraction']:.1%} saved)"
            )
        lines.extend(_permutation_lines(self.rows))
        if self.budget is not None:
            b = self.budget
            kind = b["kind"].replace("_", " ")
            accuracy = "" if b.get("final_accuracy") is None else \
                f" (accuracy {b['dense_value']:.4f} dense -> {b['final_accuracy']:.4f})"
            lines.append(f"budget: {kind} <= {b['budget']:g}: final {b['final_loss']:.4g}{accuracy} "
                         f"({'met' if b['met'] else 'NOT met'}); {len(b['kept_dense'])} weight(s) kept dense, "
                         f"{b['evaluations']} evaluations")
        if self.parity is not None:
            lines.extend(_parity_lines(self.parity))
        if any(r.target.profitable is not None for r in self.rows):
            lines.append("2:4 gain: predicted per layer from its size and dtype (report field 'profitability' says why)")
        lines.extend(f"warning: {w}" for w in self.warnings)
        if self.output_path:
            lines.append(f"output: {self.output_path}")
        if self.report_path:
            lines.append(f"report: {self.report_path}")
        return lines


def _permutation_lines(rows: list[LayerRow]) -> list[str]:
    """--permute's outcome: how many layers were permuted, and why the others were not."""
    gains = [r.outcome.permutation_gain for r in rows if r.outcome.permutation_gain is not None]
    reasons: dict[str, int] = {}
    for r in rows:
        for note in r.outcome.notes:
            if note.startswith("permutation: "):
                reason = note.removeprefix("permutation: ")
                reasons[reason] = reasons.get(reason, 0) + 1
    if not gains and not reasons:
        return []
    why = "; ".join(f"{count}x {reason}" for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1]))
    if not gains:
        return [f"permute: nothing was permuted ({why})"]
    mean = sum(gains) / len(gains)
    return [f"permute: {len(gains)} layer(s) permuted (mean retained-magnitude gain +{mean:.2%})"
            + (f"; not permuted: {why}" if why else "")]


def _parity_lines(parity: ParityResult) -> list[str]:
    if not parity.verified:
        lines = [f"parity: not verified ({parity.reason})"]
    else:
        inputs = {"random": "random inputs", "example inputs": "the model's example inputs"}.get(
            parity.inputs, f"inputs from {parity.inputs}")
        lines = [f"parity (ONNX Runtime, {inputs}, {parity.runs} run(s)):"]
        for o in parity.outputs:
            top1 = "" if o.top1_agreement is None else f"  top-1 agreement {o.top1_agreement:.3f}"
            lines.append(
                f"  {o.name}: max|d| {o.max_abs_diff:.4g}  rel L2 {o.rel_l2_error:.4g}  cosine {o.cosine_similarity:.5f}{top1}"
            )
            if o.nonfinite_mismatches:
                lines.append(f"  {o.name}: NON-FINITE MISMATCH: {o.nonfinite_sparse_only} NaN/inf value(s) in the sparse "
                             f"output where dense is finite, {o.nonfinite_dense_only} the reverse, "
                             f"{o.nonfinite_differing} differing (NaN vs inf)")
    for gate in parity.gates:
        verdict = "passed" if gate.passed else "FAILED"
        value = "n/a" if gate.value is None else f"{gate.value:.4g}"
        lines.append(f"gate {gate.name} {gate.threshold:g}: {value} {verdict}" + (f" ({gate.reason})" if gate.reason else ""))
    return lines


def _json_default(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialize {type(value).__name__}")


def _elide(text: str, limit: int) -> str:
    """Shorten in the middle: the head and the (usually distinctive) tail stay."""
    if len(text) <= limit:
        return text
    head = max(4, limit // 3)
    return text[:head] + "…" + text[len(text) - (limit - head - 1):]


def _distinct_short_names(names: list[str], limit: int) -> list[str]:
    """Elided names; where two different names would look alike, those get longer."""
    short = [_elide(n, limit) for n in names]
    while True:
        seen: dict[str, set[str]] = {}
        for full, s in zip(names, short, strict=True):
            seen.setdefault(s, set()).add(full)
        clashes = {s for s, fulls in seen.items() if len(fulls) > 1}
        if not clashes:
            return short
        short = [s if s not in clashes else _elide(full, len(s) + 8) for full, s in zip(names, short, strict=True)]


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"

