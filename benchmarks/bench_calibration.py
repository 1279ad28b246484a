"""Speed and memory of the data-aware methods against their floor, measured in the same run.

    python benchmarks/bench_calibration.py                      # ViT-B/16 shape, 8 calibration images
    python benchmarks/bench_calibration.py --today REV          # also the code of git revision REV
    python benchmarks/bench_calibration.py --decoder --layers 30 --d-model 4096 --d-ff 11008 \\
        --methods wanda,sparsegpt --samples 4 --tokens 16       # larger than RAM (manual: ~50 GB of disk)

The model is built in code with random weights (``make_transformer.py``: ``--vit`` by default,
``--decoder``: LLaMA-shaped gated MLP blocks with external data).  Every prune runs in its own
process; wall time and peak RSS (``ru_maxrss`` of that child) are recorded (``--repeat N``: the
current code's median of N runs).  The floor is the
magnitude pass plus one dense ONNX Runtime forward over the same calibration set.  After each
run ``sparsify check --strict`` confirms every eligible weight is 2:4.
Results: Markdown on stdout and in ``benchmarks/out/calibration/results.md`` (+ ``.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import ROOT, measure, remove_worktree, worktree, write_results

HERE = Path(__file__).resolve().parent
PY = sys.executable
PRUNE = ("import json, sys, sparsify; a = json.loads(sys.argv[1]); "
         "sparsify.prune(a.pop('model'), output=a.pop('output'), **a)")
FORWARD = ("import sys, numpy as np, onnxruntime as ort; s = ort.InferenceSession(sys.argv[1], "
           "providers=['CPUExecutionProvider']); name = s.get_inputs()[0].name; x = np.load(sys.argv[2])[name]; "
           "[s.run(None, {name: x[i]}) for i in range(x.shape[0])]")


def model_bytes(path: Path) -> int:
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def remove_model(path: Path) -> None:
    for candidate in path.parent.glob(path.name + "*"):
        candidate.unlink()


def prune_run(root: Path, model: Path, out: Path, method: str, calibration: Path | None,
              activation_memory: int | None = None, fit_iterations: int | None = None) -> dict:
    arguments = {"model": str(model), "output": str(out), "method": method, "verify": False,
                 "calibration": [str(calibration)] if calibration and method != "magnitude" else None}
    if activation_memory is not None:
        arguments["activation_memory"] = activation_memory
    if fit_iterations is not None and method == "sparsegpt":
        arguments["fit_iterations"] = fit_iterations
    result = measure([PY, "-c", PRUNE, json.dumps(arguments)], cwd=root, env={"PYTHONPATH": str(root)})
    report_file = out.with_name(out.stem + ".report.json")
    calibrated = json.loads(report_file.read_text()).get("calibration") if report_file.exists() else None
    if calibrated:
        result["activation_mb_peak"] = round(calibrated["activation_bytes_peak"] / 2**20, 1)
        result["activation_mb_on_disk"] = round(calibrated["activation_bytes_on_disk"] / 2**20, 1)
    check = subprocess.run([PY, "-m", "sparsify", "check", str(out), "--strict", "-q"], cwd=ROOT,
                           capture_output=True, text=True)
    result["every_eligible_weight_2to4"] = check.returncode == 0
    remove_model(out)
    return result


def median_run(runs: list[dict]) -> dict:
    """The run with the median time (of an even count, the slower middle one), with every run's
    seconds and the largest peak RSS of them all."""
    ordered = sorted(runs, key=lambda run: run["seconds"])
    chosen = dict(ordered[len(ordered) // 2])
    chosen["seconds_runs"] = [run["seconds"] for run in runs]
    chosen["peak_rss_mb"] = max(run["peak_rss_mb"] for run in runs)
    chosen["every_eligible_weight_2to4"] = all(run["every_eligible_weight_2to4"] for run in runs)
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decoder", action="store_true", help="gated-MLP decoder with external data (not ViT)")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--d-ff", type=int, default=3072)
    parser.add_argument("--samples", type=int, default=8, help="calibration samples (images, or sequences)")
    parser.add_argument("--tokens", type=int, default=16, help="decoder: tokens per calibration sequence")
    parser.add_argument("--methods", default="magnitude,wanda,sparsegpt")
    parser.add_argument("--today", metavar="REV", help="also run every method with the code of git revision REV")
    parser.add_argument("--fit-iterations", type=int, metavar="N",
                        help="sparsegpt's --fit-iterations for the current code (default: its own default)")
    parser.add_argument("--activation-memory", type=int, metavar="BYTES",
                        help="also run each data-aware method with this --activation-memory (0: every activation on disk)")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="run each method of the current code N times: the median time, every time in the "
                             "results, the largest peak RSS (this machine's run-to-run spread is ~10%%)")
    parser.add_argument("--workdir", type=Path, default=HERE / "out" / "calibration" / "work")
    args = parser.parse_args()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    model = work / "model.onnx"
    shape_flags = ["--layers", str(args.layers), "--d-model", str(args.d_model), "--d-ff", str(args.d_ff)]
    kind = ["--gated", "--external"] if args.decoder else ["--vit"]
    subprocess.run([PY, str(HERE / "make_transformer.py"), str(model), *shape_flags, *kind], check=True,
                   stdout=subprocess.DEVNULL)
    rng = np.random.default_rng(0)
    calibration = work / "calibration.npz"
    if args.decoder:
        np.savez(calibration, hidden=rng.standard_normal((args.samples, 1, args.tokens, args.d_model), np.float32))
    else:
        np.savez(calibration, pixels=rng.random((args.samples, 1, 3, 224, 224), np.float32))
    size_mb = model_bytes(model) / 2**20
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    # a whole-model ONNX Runtime session loads every weight: past half the RAM it cannot be the floor
    forward = None if model_bytes(model) > ram / 2 else measure([PY, "-c", FORWARD, str(model), str(calibration)], cwd=ROOT)
    today = worktree(args.today, work / "today") if args.today else None
    results: dict = {"machine": f"{platform.node()} {os.cpu_count()} CPUs", "python": platform.python_version(),
                     "date": time.strftime("%Y-%m-%d"), "model_mb": round(size_mb, 1), "dense_forward": forward,
                     "shape": f"{'decoder' if args.decoder else 'ViT'} {args.layers} x d{args.d_model}/ff{args.d_ff}",
                     "samples": args.samples, "tokens": args.tokens if args.decoder else None, "today": args.today,
                     "activation_memory": args.activation_memory, "fit_iterations": args.fit_iterations,
                     "methods": {}}
    for method in args.methods.split(","):
        entry = {"now": median_run([prune_run(ROOT, model, work / f"out.{method}.onnx", method, calibration,
                                              fit_iterations=args.fit_iterations) for _ in range(max(1, args.repeat))])}
        if today is not None:
            entry["before"] = prune_run(today, model, work / f"before.{method}.onnx", method, calibration)
        if args.activation_memory is not None and method != "magnitude":
            entry["limited"] = prune_run(ROOT, model, work / f"limited.{method}.onnx", method, calibration,
                                         args.activation_memory)
        results["methods"][method] = entry
        print(method, json.dumps(entry), flush=True)
    if today is not None:
        remove_worktree(today)
    text = report(results)
    write_results(HERE / "out" / "calibration", text, results)
    shutil.rmtree(work, ignore_errors=True)


def report(results: dict) -> str:
    size = results["model_mb"]
    magnitude = results["methods"].get("magnitude", {}).get("now")
    forward = results["dense_forward"]
    if forward is None:  # larger than RAM: no whole-model session; the floor is the magnitude pass alone
        floor = magnitude["seconds"] if magnitude else None
        floor_line = (f"dense forward: not run (the model is larger than half the RAM); floor = the magnitude pass "
                      f"= {'-' if floor is None else f'{floor:.1f} s'}")
    else:
        floor = magnitude["seconds"] + forward["seconds"] if magnitude else None
        floor_line = (f"dense forward over the calibration set: {forward['seconds']} s; floor = magnitude + "
                      f"that = {'-' if floor is None else f'{floor:.1f} s'}")
    tokens = f" x {results['tokens']} tokens" if results.get("tokens") else ""
    fit = results.get("fit_iterations")
    fit_line = [] if fit is None else [f"sparsegpt with --fit-iterations {fit}"]
    lines = [f"{results['shape']}, {size:.0f} MB fp32, {results['samples']}{tokens} calibration samples; "
             f"{results['machine']}, Python {results['python']}, {results['date']}", floor_line, *fit_line, "",
             "| method | seconds | / floor | peak RSS (MB) | RSS / model | 2:4 by check | seconds before | speedup |",
             "|---|---:|---:|---:|---:|---|---:|---:|"]
    for method, entry in results["methods"].items():
        now, before = entry["now"], entry.get("before")
        ratio = "-" if floor is None else f"{now['seconds'] / floor:.2f}"
        speed = f"{before['seconds'] / now['seconds']:.1f}x" if before else "-"
        lines.append(f"| {method} | {now['seconds']} | {ratio} | {now['peak_rss_mb']:.0f} | "
                     f"{now['peak_rss_mb'] / size:.2f} | {'yes' if now['every_eligible_weight_2to4'] else 'NO'} | "
                     f"{before['seconds'] if before else '-'} | {speed} |")
    repeated = {m: e["now"]["seconds_runs"] for m, e in results["methods"].items() if len(e["now"]["seconds_runs"]) > 1}
    if repeated:
        lines += ["", "Seconds: the median of " + "; ".join(f"{m}: {', '.join(map(str, runs))} s"
                                                          for m, runs in repeated.items()) + "."]
    limited = {m: e for m, e in results["methods"].items() if "limited" in e}
    if limited:
        lines += ["", f"Activations held in memory (default limit) vs `--activation-memory "
                      f"{results['activation_memory']}`, same run:", "",
                  "| method | activations (peak MB) | on disk (MB) | seconds: memory / disk | ratio | "
                  "peak RSS MB: memory / disk | same 2:4 check |", "|---|---:|---:|---:|---:|---:|---|"]
        for method, entry in limited.items():
            now, disk = entry["now"], entry["limited"]
            lines.append(f"| {method} | {now.get('activation_mb_peak', '-')} | {disk.get('activation_mb_on_disk', '-')} | "
                         f"{now['seconds']} / {disk['seconds']} | {disk['seconds'] / now['seconds']:.2f} | "
                         f"{now['peak_rss_mb']:.0f} / {disk['peak_rss_mb']:.0f} | "
                         f"{'yes' if disk['every_eligible_weight_2to4'] else 'NO'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
