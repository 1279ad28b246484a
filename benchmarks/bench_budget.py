"""Memory and time of an accuracy budget: sessions of the file vs the whole model in memory.

    python benchmarks/bench_budget.py [--layers 3]

Builds a ViT-shaped model in code (``make_transformer.py --vit``: d1024/ff4096, random weights),
then prunes it with ``--method wanda --max-output-drift 0.3`` (8 calibration and 8 evaluation
images) twice in one run, each in its own process: as sparsify does it (``FileModel``: every
evaluation is a session of the model file with the changed weights passed in memory) and with
the whole-model path it falls back to (``InMemoryModel``: the model loaded as a protobuf and
re-serialised per session), forced for the comparison.  Wall time and peak RSS per run.
Results: Markdown on stdout and in ``benchmarks/out/budget/results.md`` (+ ``.json``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from _common import ROOT, measure, write_results

HERE = Path(__file__).resolve().parent
CODE = ("import json, sys, sparsify; from sparsify.calibrate import streamed; a = json.loads(sys.argv[1]); "
        "streamed.file_model_or_none = (lambda *_: None) if a.pop('in_memory') else streamed.file_model_or_none; "
        "sparsify.prune(a.pop('model'), **a)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "out" / "budget")
    args = parser.parse_args()
    work = args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    model = work / "vit.onnx"
    subprocess.run([sys.executable, str(HERE / "make_transformer.py"), str(model), "--vit", "--layers", str(args.layers)],
                   check=True, stdout=subprocess.DEVNULL)
    rng = np.random.default_rng(0)
    np.savez(work / "cal.npz", pixels=rng.random((8, 1, 3, 224, 224), np.float32))
    np.savez(work / "eval.npz", pixels=rng.random((8, 1, 3, 224, 224), np.float32))
    size_mb = model.stat().st_size / 2**20
    rows = []
    for label, in_memory in (("whole model in memory (fallback)", True), ("sessions of the file (sparsify)", False)):
        out = work / f"out.{int(in_memory)}.onnx"
        arguments = {"model": str(model), "output": str(out), "method": "wanda", "calibration": [str(work / "cal.npz")],
                     "max_output_drift": 0.3, "inputs": str(work / "eval.npz"), "verify": False, "in_memory": in_memory}
        result = measure([sys.executable, "-c", CODE, json.dumps(arguments)], cwd=ROOT, env={"PYTHONPATH": str(ROOT)})
        report = json.loads(out.with_name(out.stem + ".report.json").read_text())["budget"]
        rows.append({"path": label, **result, "evaluations": report["evaluations"], "kept_dense": len(report["kept_dense"])})
    lines = [f"accuracy budget (wanda, --max-output-drift 0.3) on a ViT shape, {args.layers} x d1024/ff4096, "
             f"{size_mb:.0f} MB", "",
             "| path | seconds | peak RSS (MB) | RSS / model | evaluations | kept dense |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['path']} | {r['seconds']} | {r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] / size_mb:.1f} | "
                     f"{r['evaluations']} | {r['kept_dense']} |")
    write_results(args.out, "\n".join(lines), {"model_mb": size_mb, "rows": rows})


if __name__ == "__main__":
    main()
