"""The ``sparsify build`` subcommand: build a TensorRT engine with sparse weights, say which layers
really run sparse (build log + engine inspector), check parity against the dense model in ONNX
Runtime through Polygraphy's Comparator, and optionally time it against the dense engine."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import tempfile
from pathlib import Path

from sparsify.plugin_api import (
    GateFailed,
    MissingComponent,
    UsageError,
    check_write_paths,
    format_table,
    model_reads,
    write_report,
)

__all__ = ["build_section", "merge_build_report", "plugin"]


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
        p.add_argument("--precision", choices=["fp16", "bf16", "fp32"], default="fp16",
                       help="TensorRT 11: converted into the graph first; TensorRT 10: builder flag (default fp16)")
        p.add_argument("--dense", action="store_true", help="build the dense baseline (no sparse weights)")
        p.add_argument("--workspace", type=int, metavar="MiB", help="workspace memory limit")
        p.add_argument("--timing-cache", help="timing cache file (loaded if present, saved after the build)")
        p.add_argument("--shapes", action="append", metavar="NAME:MIN:OPT:MAX",
                       help="optimisation profile for a dynamic input, e.g. x:1x3x224x224:8x3x224x224:32x3x224x224")
        p.add_argument("--report", help="the prune report (JSON) to merge the build results into")
        p.add_argument("--reference", help="dense ONNX model for parity (default: the report's input, else MODEL)")
        p.add_argument("--inputs", help="real inputs (.npz) for parity and timing")
        p.add_argument("--input-shape", action="append", metavar="NAME:1x3x224x224", help="shape for random inputs")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--max-rel-error", type=float, help="gate: exit 3 if an output's relative L2 error exceeds this")
        p.add_argument("--min-top1-agreement", type=float, help="gate: exit 3 if top-1 agreement falls below this")
        p.add_argument("--no-verify", action="store_true", help="skip the parity check")
        p.add_argument("--benchmark", action="store_true", help="also build the dense engine and time both")
        p.add_argument("--iterations", type=int, default=100, help="timed runs per engine with --benchmark")
        p.set_defaults(run=lambda args: run(args, info.available, info.reason))


def merge_build_report(report: dict, section: dict) -> dict:
    """Add per-target build columns and the engine section to a prune report (returns it)."""
    nodes = section.get("onnx_nodes", {})
    for row in report["targets"]:
        node = nodes.get(row["layer"], {})
        row["build"] = {"has_2to4_weights": row["status"] in ("pruned", "already_nm", "compliant"),
                        "eligible_for_sparse_math": node.get("eligible"),
                        "picked_sparse_kernel": node.get("picked"),
                        "tensorrt_layer": node.get("tensorrt_layer"), "tactic": node.get("tactic"),
                        "evidence": node.get("evidence")}
    report["engine"] = {k: v for k, v in section.items() if k != "onnx_nodes"}
    return report


def build_section(node_names: list[str], log: str | None, inspector_json: str | None) -> dict:
    """Per ONNX node: eligible (log), picked a sparse kernel (inspector, else log), tactic."""
    from sparsify_tensorrt.buildlog import match_layers, parse_sparsity_log
    from sparsify_tensorrt.inspector import parse_engine_info, sparse_layers_by_onnx_node

    parsed = parse_sparsity_log(log or "")
    eligible = match_layers(node_names, parsed.eligible) if parsed.seen else {}
    picked_log = match_layers(node_names, parsed.picked) if parsed.seen else {}
    info = parse_engine_info(inspector_json) if inspector_json else None
    by_node = sparse_layers_by_onnx_node(info) if info and info.detailed else {}
    nodes = {}
    for name in node_names:
        layer = by_node.get(name)
        if layer is not None:
            picked, evidence = layer.sparse_kernel, "engine inspector"
        elif parsed.seen:
            picked, evidence = name in picked_log, "build log"
        else:
            picked, evidence = None, None
        nodes[name] = {"eligible": (name in eligible) if parsed.seen else None, "picked": picked, "evidence": evidence,
                       "tensorrt_layer": layer.name if layer else (picked_log.get(name) or eligible.get(name)),
                       "tactic": layer.tactic if layer else None}
    section = {"build_log_had_sparsity_lines": parsed.seen,
               "inspector_schema": info.schema if info else None,
               "sparse_layers": sorted({layer.name for layer in (info.layers if info else []) if layer.sparse_kernel}),
               "onnx_nodes": nodes}
    return section


def _load_report(path: Path | None) -> dict | None:
    if path is None:
        return None
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"--report {path}: not a readable sparsify report ({type(exc).__name__})") from None
    if not isinstance(report, dict) or not isinstance(report.get("targets"), list):
        raise UsageError(f"--report {path}: not a sparsify prune report (no 'targets')")
    return report


def _reference(args: argparse.Namespace, report: dict | None, model_path: Path) -> Path | None:
    """The dense model parity compares against: --reference, else the report's ``input``.
    Never the model itself, and never a guess: without one, parity is a usage error."""
    if args.reference:
        reference = Path(args.reference)
    elif report is not None and report.get("input"):
        reference = Path(report["input"])
        if not reference.is_file():
            raise UsageError(f"the report's dense input {reference} no longer exists: give --reference DENSE.onnx "
                             "(or --no-verify)")
    elif args.no_verify:
        return None
    elif report is not None:
        raise UsageError("the report's dense model lived only in memory or a temporary folder (its 'input' is null): "
                         "give --reference DENSE.onnx (or --no-verify)")
    else:
        raise UsageError("parity needs the dense model: give --reference DENSE.onnx or the prune --report "
                         "(or --no-verify)")
    if reference.exists() and model_path.exists() and os.path.samefile(reference, model_path):
        raise UsageError(f"the dense reference {reference} is the model being built: parity would compare the model "
                         "with itself; give the dense model as --reference")
    return reference


def _check_paths(args, loaded, reference_model, output: Path, report_path: Path | None) -> None:
    """Written paths never equal read ones (the report and timing cache are updated in place, atomically)."""
    reads = model_reads("input model", loaded.path, loaded.external_files)
    if reference_model is not None:
        reads += model_reads("--reference model", reference_model.path, reference_model.external_files)
    if args.inputs:
        reads.append(("--inputs file", Path(args.inputs)))
    writes = {"engine": output}
    if args.benchmark and not args.dense:
        writes["dense engine"] = output.with_name(f"{output.stem}.dense{output.suffix or '.plan'}")
    if report_path is not None:
        reads.append(("--report", report_path))
        writes["--report"] = report_path
    if args.timing_cache:
        reads.append(("--timing-cache", Path(args.timing_cache)))
        writes["--timing-cache"] = Path(args.timing_cache)
    check_write_paths(reads, writes, in_place=("--report", "--timing-cache"))


def run(args: argparse.Namespace, available: bool = True, reason: str = "") -> int:
    """Validate everything that needs no TensorRT first (bad input: exit 2), then build (exit 5
    without TensorRT)."""
    import onnx

    from sparsify.plugin_api import open_model
    from sparsify_tensorrt.options import BuildOptions, has_qdq, parse_shapes

    model_path, output = Path(args.model), Path(args.output)
    loaded = open_model(model_path)  # one-line InputError for missing/corrupt models
    report_path = Path(args.report) if args.report else None
    report = _load_report(report_path)
    if not 0 <= args.seed < 2**63:
        raise UsageError(f"--seed must be a non-negative integer below 2**63, got {args.seed}")
    if args.iterations < 1:
        raise UsageError("--iterations must be at least 1")
    options = BuildOptions(args.precision, args.dense, args.workspace,
                           Path(args.timing_cache) if args.timing_cache else None,
                           parse_shapes(args.shapes, loaded.skeleton), has_qdq(loaded.skeleton))
    reference = _reference(args, report, model_path)
    reference_model = open_model(reference) if reference is not None else None
    _check_paths(args, loaded, reference_model, output, report_path)
    if not available:
        raise MissingComponent(f"sparsify build needs TensorRT and a GPU ({reason}); install 'sparsify-tensorrt[gpu]' "
                               "on a machine with an NVIDIA GPU, or use docker/Dockerfile.tensorrt")

    from sparsify_tensorrt.build import build_engine, tensorrt_major
    from sparsify_tensorrt.options import typing_plan
    from sparsify_tensorrt.precision import convert_precision

    major = tensorrt_major()
    plan = typing_plan(major, args.precision, options.has_qdq)
    # The layers sparsity is about: the ops the pass prunes (their rows in the report).
    node_names = [n.name for n in loaded.skeleton.graph.node if n.name and n.op_type in ("Conv", "MatMul", "Gemm")]
    with tempfile.TemporaryDirectory(prefix="sparsify-build-") as workdir:
        typed = model_path
        if plan.convert_graph:
            typed = Path(workdir) / "typed.onnx"
            onnx.save(convert_precision(onnx.load(str(model_path)), args.precision), str(typed))
        result = build_engine(typed, output, options)
        dense_result = None
        if args.benchmark and not args.dense:
            dense_plan = output.with_name(f"{output.stem}.dense{output.suffix or '.plan'}")
            dense_result = build_engine(typed, dense_plan, BuildOptions(**{**vars(options), "dense": True}))
    section = build_section(node_names, result.log, result.inspector_json)
    section.update(tensorrt_major=major, precision=args.precision, strongly_typed=plan.strongly_typed,
                   sparse_weights_flag=not args.dense, plan=str(output), engine_bytes=result.engine_bytes)
    if dense_result is not None:
        section.update(dense_plan=str(dense_result.plan_path), dense_engine_bytes=dense_result.engine_bytes,
                       engine_size_ratio=result.engine_bytes / dense_result.engine_bytes)
    parity = _verify_and_time(args, section, reference, model_path, output, dense_result)
    if report is not None and report_path is not None:
        write_report(report_path, merge_build_report(report, section))
    _print_summary(section)
    if parity is not None and not parity.gates_passed:
        failed = [g for g in parity.gates if not g.passed]
        raise GateFailed(f"parity gate failed: {failed[0].name} {failed[0].value} vs {failed[0].threshold} "
                         f"({failed[0].reason or 'engine vs dense ONNX Runtime'})")
    return 0


def _verify_and_time(args: argparse.Namespace, section: dict, reference: Path | None, model_path: Path,
                     output: Path, dense_result):
    """Parity of the engine against the dense model and the benchmark, into ``section``."""
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.WARNING  # runner chatter off; the summary says what matters
    parity = None
    if not args.no_verify or args.benchmark:
        session, feeds, inputs_label = _feeds(reference or model_path, args)  # feeds only, with --no-verify
        if not args.no_verify:
            parity = _parity(session, output, feeds, inputs_label, args)
            section["parity"] = parity.to_dict()
            section["parity_reference"] = str(reference)
        if args.benchmark:
            section["benchmark"] = _benchmark(output, dense_result.plan_path if dense_result else None, feeds[0], args)
    return parity


def _feeds(model_path: Path, args: argparse.Namespace):
    """The dense model's ORT session (parity's reference runner reuses it) and the feeds."""
    import onnxruntime as ort

    from sparsify.plugin_api import load_feeds, parse_input_shapes, random_feeds

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    if args.inputs:
        return session, load_feeds(args.inputs, session), str(args.inputs)
    return session, random_feeds(session, parse_input_shapes(args.input_shape), args.seed, []), "random"


def _parity(session, plan: Path, feeds, inputs_label: str, args: argparse.Namespace):
    from polygraphy.backend.onnxrt import OnnxrtRunner

    from sparsify_tensorrt.build import trt_runner
    from sparsify_tensorrt.compare import compare_runners

    dense = OnnxrtRunner(session, name="onnxruntime-dense")  # the session the feeds came from: loaded once
    return compare_runners(dense, trt_runner(plan, "tensorrt-sparse"), feeds, max_rel_error=args.max_rel_error,
                           min_top1=args.min_top1_agreement, inputs=inputs_label)


def _benchmark(sparse_plan: Path, dense_plan: Path | None, feed, args: argparse.Namespace) -> dict:
    from sparsify_tensorrt.bench import time_runner
    from sparsify_tensorrt.build import trt_runner

    result = {}
    for label, plan in (("sparse", sparse_plan), ("dense", dense_plan)):
        if plan is None:
            continue
        with trt_runner(plan, f"tensorrt-{label}") as runner:
            result[label] = time_runner(runner, feed, iterations=args.iterations)
    if "dense" in result:
        result["speedup"] = result["dense"]["median_ms"] / result["sparse"]["median_ms"]
    return result


def _print_summary(section: dict) -> None:
    nodes = section.get("onnx_nodes", {})
    picked = [n for n, v in nodes.items() if v["picked"]]
    eligible = [n for n, v in nodes.items() if v["eligible"]]
    print(f"wrote {section['plan']} ({section['engine_bytes'] / 2**20:.1f} MiB, TensorRT {section['tensorrt_major']}, "
          f"{section['precision']}{', strongly typed' if section['strongly_typed'] else ''})")
    print(f"sparse kernels: {len(picked)} of {len(nodes)} Conv/MatMul/Gemm layer(s) run sparse; "
          f"{len(eligible)} eligible per the build log")
    if nodes:
        def mark(value) -> str:
            return "?" if value is None else ("yes" if value else "no")
        rows = [(name, mark(v["eligible"]), mark(v["picked"]), (v["tactic"] or v["tensorrt_layer"] or "")[:60])
                for name, v in nodes.items()]
        for line in format_table(("layer", "eligible", "sparse kernel", "tactic / engine layer"), rows, rule=False,
                                 indent="  "):
            print(line)
    if "engine_size_ratio" in section:
        print(f"engine size: sparse / dense = {section['engine_size_ratio']:.3f}")
    if "benchmark" in section and "speedup" in section["benchmark"]:
        b = section["benchmark"]
        print(f"latency: dense {b['dense']['median_ms']:.3f} ms, sparse {b['sparse']['median_ms']:.3f} ms "
              f"({b['speedup']:.2f}x); throughput {b['sparse']['throughput_per_s']:.0f}/s")
    if "parity" in section:
        for out in section["parity"]["outputs"]:
            print(f"  {out['name']}: rel L2 {out['rel_l2_error']:.4g}  cosine {out['cosine_similarity']:.5f}")


plugin = TensorRTPlugin()
