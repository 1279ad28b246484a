"""What `sparsify build --precision fp16` does to a model before a strongly-typed (TensorRT 11)
build, measured in ONNX Runtime on the CPU: the converted model against the fp32 one on the
same inputs (rel L2, cosine, max |d|), conversion time, file size, and whether the 2:4 pattern
survived (zeros stay zeros in fp16).

    .venv/bin/python benchmarks/eval_fp16_conversion.py      # ~20 s; builds what it needs under benchmarks/out/
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins" / "tensorrt"))
sys.path.insert(0, str(ROOT / "benchmarks"))
import make_transformer  # noqa: E402
from sparsify_tensorrt.precision import convert_precision  # noqa: E402

import sparsify  # noqa: E402
from sparsify.verify.metrics import metrics  # noqa: E402

OUT = ROOT / "benchmarks" / "out" / "fp16"


def _run(path: Path, feed: dict) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


def measure(name: str, sparse: Path, feed: dict) -> dict:
    model = onnx.load(str(sparse))
    start = time.perf_counter()
    half = convert_precision(model, "fp16")
    seconds = time.perf_counter() - start
    half_path = sparse.with_name(sparse.stem + ".fp16.onnx")
    onnx.save(half, str(half_path))
    dense_out, half_out = _run(sparse, feed)[0], _run(half_path, feed)[0]
    parity = metrics("out", dense_out, half_out)
    audit = sparsify.check(half_path, "2:4")
    return {"model": name, "convert_s": seconds, "size_ratio": half_path.stat().st_size / sparse.stat().st_size,
            "rel_l2": parity.rel_l2_error, "cosine": parity.cosine_similarity, "max_abs": parity.max_abs_diff,
            "non_nm_after": audit.count("non_compliant"), "nm_after": audit.count("compliant"), "nm_before": sparsify.check(sparse, "2:4").count("compliant")}


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    sample = ROOT / "samples" / "build"
    if not (sample / "tiny_cnn.onnx").exists():
        subprocess.run([sys.executable, str(ROOT / "samples" / "make_sample.py")], check=True, cwd=ROOT)
    sparsify.prune(sample / "tiny_cnn.onnx", "2:4", OUT / "tiny_cnn.sparse.onnx", verify=False)
    inputs = np.load(sample / "tiny_cnn.inputs.npz")
    feed = {k: inputs[k] for k in inputs.files}
    rows.append(measure("sample tiny CNN (64 images)", OUT / "tiny_cnn.sparse.onnx", feed))
    make_transformer.build(OUT / "enc.onnx", layers=4, d=512, ff=2048, external=False)
    sparsify.prune(OUT / "enc.onnx", "2:4", OUT / "enc.sparse.onnx", verify=False)
    session = ort.InferenceSession(str(OUT / "enc.sparse.onnx"), providers=["CPUExecutionProvider"])
    x = session.get_inputs()[0]
    shape = [d if isinstance(d, int) else 8 for d in x.shape]
    rows.append(measure("4 x d512/ff2048 encoder (random weights)", OUT / "enc.sparse.onnx",
                        {x.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}))
    print("| model | convert s | fp16 file / fp32 | rel L2 | cosine | max abs diff | 2:4 weights before | 2:4 after | not 2:4 after |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['convert_s']:.2f} | {r['size_ratio']:.3f} | {r['rel_l2']:.2e} | {r['cosine']:.6f} | "
              f"{r['max_abs']:.2e} | {r['nm_before']} | {r['nm_after']} | {r['non_nm_after']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
