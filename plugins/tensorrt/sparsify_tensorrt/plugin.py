"""The ``sparsify build`` subcommand."""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
from pathlib import Path

import onnx

from sparsify.errors import MissingComponent, UsageError

__all__ = ["plugin"]


class TensorRTPlugin:
    name = "tensorrt"
    commands = ["build"]
    description = "build a TensorRT engine with sparse weights and report which layers run sparse"

    def requires(self) -> list[str]:
        # A bare namespace (tensorrt-stubs installs one for type-checking) is not TensorRT.
        def present(name: str) -> bool:
            spec = importlib.util.find_spec(name)
            return spec is not None and spec.origin is not None
        return [name for name in ("tensorrt", "polygraphy") if not present(name)]

    def add_parser(self, sub, info) -> None:
        p = sub.add_parser("build", help=self.description, description=self.description)
        p.add_argument("model", help="the (sparse) ONNX model")
        p.add_argument("-o", "--output", required=True, help="engine (.plan) to write")
        p.add_argument("--precision", choices=["fp16", "bf16", "fp32"], default="fp16")
        p.add_argument("--dense", action="store_true", help="build the dense baseline (no sparse weights)")
        p.add_argument("--workspace", type=int, metavar="MiB", help="workspace memory limit")
        p.add_argument("--timing-cache", help="timing cache file to load")
        p.add_argument("--report", help="JSON report to merge the build results into")
        if info.available:
            p.set_defaults(run=run)
        else:
            p.set_defaults(run=lambda args: _missing(info.reason))


def _missing(reason: str) -> int:
    raise MissingComponent(f"sparsify build needs TensorRT ({reason}); install 'sparsify-tensorrt[gpu]' "
                           "on a machine with an NVIDIA GPU, or use docker/Dockerfile.tensorrt")


def merge_build_report(report_path: Path, eligible: dict[str, str], picked: dict[str, str], log_seen: bool) -> dict:
    """Add per-layer 'eligible for sparse math' / 'picked a sparse kernel' to a prune report."""
    report = json.loads(report_path.read_text())
    for row in report["targets"]:
        has_nm = row["status"] in ("pruned", "already_nm", "compliant")
        row["build"] = {"has_2to4_weights": has_nm,
                        "eligible_for_sparse_math": row["layer"] in eligible if log_seen else None,
                        "picked_sparse_kernel": row["layer"] in picked if log_seen else None,
                        "tensorrt_layer": picked.get(row["layer"]) or eligible.get(row["layer"])}
    report["build_log_had_sparsity_lines"] = log_seen
    return report


def run(args: argparse.Namespace) -> int:
    from sparsify_tensorrt.build import BuildOptions, build_engine
    from sparsify_tensorrt.buildlog import match_layers, parse_sparsity_log
    from sparsify_tensorrt.precision import convert_precision

    model_path = Path(args.model)
    if not model_path.is_file():
        raise UsageError(f"{model_path}: no such file")
    model = onnx.load(str(model_path))
    with tempfile.TemporaryDirectory(prefix="sparsify-build-") as workdir:
        typed = Path(workdir) / "typed.onnx"
        onnx.save(convert_precision(model, args.precision), str(typed))
        options = BuildOptions(args.precision, args.dense, args.workspace, Path(args.timing_cache) if args.timing_cache else None)
        log = build_engine(typed, Path(args.output), options)
    parsed = parse_sparsity_log(log)
    names = [n.name for n in model.graph.node if n.name]
    if args.report:
        merged = merge_build_report(Path(args.report), match_layers(names, parsed.eligible),
                                    match_layers(names, parsed.picked), parsed.seen)
        Path(args.report).write_text(json.dumps(merged, indent=2))
    print(f"wrote {args.output}: {len(parsed.picked)} layer(s) run sparse, {len(parsed.eligible)} eligible")
    return 0


plugin = TensorRTPlugin()
