"""Start-up time of the CLI against the import floor, in one run (ratios, not absolute times).

The floor is ``python -c "import onnx, onnxruntime, numpy"`` — what any ONNX tool pays.
Goal: ``sparsify --version`` and ``sparsify check`` on a small model within 1.5x of it.

    .venv/bin/python benchmarks/bench_startup.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

GOAL = 1.5


def _small_model(folder: Path) -> Path:
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 64])],
                              [numpy_helper.from_array(np.ones([64, 64], np.float32), "W")])
    path = folder / "small.onnx"
    onnx.save(helper.make_model(graph), str(path))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = _small_model(Path(tmp))
        commands = {
            "import floor (onnx, onnxruntime, numpy)": [sys.executable, "-c", "import onnx, onnxruntime, numpy"],
            "sparsify --version": [sys.executable, "-m", "sparsify", "--version"],
            "sparsify check small.onnx": [sys.executable, "-m", "sparsify", "check", str(model), "-q"],
            "sparsify small.onnx (prune + parity)": [sys.executable, "-m", "sparsify", str(model), "-q"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.repeat):  # interleaved, so machine load hits every command alike
            for name, command in commands.items():
                started = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True, cwd=tmp)
                times[name].append(time.perf_counter() - started)
    floor = statistics.median(times["import floor (onnx, onnxruntime, numpy)"])
    print(f"| command | median s ({args.repeat} runs) | / import floor |")
    print("|---|---:|---:|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.3f} | {statistics.median(values) / floor:.2f} |")
    worst = max(statistics.median(times[n]) / floor for n in ("sparsify --version", "sparsify check small.onnx"))
    print(f"\ngoal: --version and check within {GOAL}x of the import floor: {worst:.2f}x "
          f"({'met' if worst <= GOAL else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
