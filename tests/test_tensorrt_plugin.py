"""The TensorRT build plugin's CPU-side parts.  TensorRT itself is not installable here: the
builder is type-checked against tensorrt-stubs, and everything around it runs for real."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import sparsify
from tests.builders import init, is_nm, make_model, rand, run, save, vi

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("sparsify_tensorrt")
from sparsify_tensorrt.buildlog import match_layers, parse_sparsity_log  # noqa: E402
from sparsify_tensorrt.plugin import merge_build_report  # noqa: E402
from sparsify_tensorrt.precision import convert_precision  # noqa: E402

HAS_TRT = (spec := importlib.util.find_spec("tensorrt")) is not None and spec.origin is not None

# Verbatim lines from public TensorRT build logs (NVIDIA/TensorRT issues #2169 and #4056).
LOG = """[07/19/2022-11:58:20] [I] [TRT] (Sparsity) Layers eligible for sparse math: Conv_22, MatMul_51, MatMul_69
[07/19/2022-11:58:20] [I] [TRT] (Sparsity) TRT inference plan picked sparse implementation for layers:
[08/05/2024-12:06:54] [I] [TRT] (Sparsity) Layers eligible for sparse math: MatMul_401, Conv_619 + Relu_620, Conv_622 + Relu_623
[08/05/2024-12:06:54] [I] [TRT] (Sparsity) TRT inference plan picked sparse implementation for layers: Conv_619 + Relu_620
"""


def test_sparsity_log_parsing_and_layer_matching():
    parsed = parse_sparsity_log(LOG)
    assert parsed.seen and parsed.eligible[:3] == ["Conv_22", "MatMul_51", "MatMul_69"]
    assert "Conv_619 + Relu_620" in parsed.eligible and parsed.picked == ["Conv_619 + Relu_620"]
    matched = match_layers(["Conv_619", "Relu_620", "Conv_22", "Gemm_9"], parsed.eligible)
    assert matched == {"Conv_619": "Conv_619 + Relu_620", "Relu_620": "Conv_619 + Relu_620", "Conv_22": "Conv_22"}
    assert not parse_sparsity_log("[I] [TRT] some other line").seen


def test_merge_into_prune_report(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"], name="Conv_619"), helper.make_node("Relu", ["h"], ["r"], name="Relu_620"),
             helper.make_node("MatMul", ["r", "W2"], ["y"], name="MatMul_51")]
    model = save(make_model(nodes, [vi("x", [2, 16])], [vi("y", None)], [init(rand([16, 16]), "W1"), init(rand([16, 8]), "W2")]),
                 tmp_path / "m.onnx")
    sparsify.prune(model, verify=False)
    report_path = tmp_path / "m.sparse.report.json"
    parsed = parse_sparsity_log(LOG)
    names = ["Conv_619", "Relu_620", "MatMul_51"]
    merged = merge_build_report(report_path, match_layers(names, parsed.eligible), match_layers(names, parsed.picked), True)
    rows = {r["layer"]: r["build"] for r in merged["targets"]}
    assert rows["Conv_619"] == {"has_2to4_weights": True, "eligible_for_sparse_math": True, "picked_sparse_kernel": True,
                                "tensorrt_layer": "Conv_619 + Relu_620"}
    assert rows["MatMul_51"]["eligible_for_sparse_math"] and not rows["MatMul_51"]["picked_sparse_kernel"]
    json.dumps(merged)


def test_fp16_conversion_keeps_pattern_and_io_types(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
             helper.make_node("LayerNormalization", ["h", "g", "b"], ["y"], axis=-1)]
    inits = [init(rand([16, 8]), "W"), init(np.ones(8, np.float32), "g"), init(np.zeros(8, np.float32), "b")]
    path = save(make_model(nodes, [vi("x", [2, 16])], [vi("y", [2, 8])], inits), tmp_path / "m.onnx")
    sparsify.prune(path, verify=False)
    sparse = onnx.load(str(tmp_path / "m.sparse.onnx"))
    half = convert_precision(sparse, "fp16")
    weights = {t.name: t for t in half.graph.initializer}
    assert weights["W"].data_type == TensorProto.FLOAT16
    assert is_nm(onnx.numpy_helper.to_array(weights["W"]).astype(np.float32), 0)  # zeros stay zeros in fp16
    assert half.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT  # keep_io_types
    assert half.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    onnx.save(half, str(tmp_path / "half.onnx"))
    x = rand([2, 16], 3)
    np.testing.assert_allclose(run(tmp_path / "half.onnx", {"x": x})[0], run(tmp_path / "m.sparse.onnx", {"x": x})[0],
                               rtol=2e-2, atol=2e-2)
    assert convert_precision(sparse, "fp32") is sparse


def test_bf16_without_modelopt_is_missing_component():
    from sparsify.errors import MissingComponent

    if importlib.util.find_spec("modelopt"):
        pytest.skip("ModelOpt is installed")
    with pytest.raises(MissingComponent, match="ModelOpt"):
        convert_precision(onnx.ModelProto(), "bf16")


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed: the build would run")
def test_build_without_tensorrt_exits_5(tmp_path):
    result = subprocess.run([sys.executable, "-m", "sparsify", "build", "model.onnx", "-o", str(tmp_path / "m.plan")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 5 and result.stderr.count("\n") == 1 and "needs TensorRT" in result.stderr
    listing = subprocess.run([sys.executable, "-m", "sparsify", "plugins"], capture_output=True, text=True).stdout
    assert "tensorrt     unavailable (missing: tensorrt" in listing


def test_builder_typechecks_against_tensorrt_stubs():
    pytest.importorskip("mypy")
    stubs = importlib.util.find_spec("tensorrt")
    if stubs is None:
        pytest.skip("tensorrt-stubs not installed")
    result = subprocess.run([sys.executable, "-m", "mypy", "--ignore-missing-imports", "--follow-imports=silent",
                             str(ROOT / "plugins" / "tensorrt" / "sparsify_tensorrt" / "build.py")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout
