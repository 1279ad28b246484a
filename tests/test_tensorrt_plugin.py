"""The TensorRT build plugin's CPU-side parts.  These tests run without TensorRT: the builder is
type-checked against tensorrt-stubs, and everything around it runs for real."""

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
    # The normalisation stays fp32 and its result reaches the fp32 output without an fp16 round trip.
    typed = onnx.shape_inference.infer_shapes(half)
    types = {v.name: v.type.tensor_type.elem_type for v in [*typed.graph.value_info, *typed.graph.input, *typed.graph.output]}
    types.update({t.name: t.data_type for t in typed.graph.initializer})
    (norm,) = [n for n in typed.graph.node if n.op_type == "LayerNormalization"]
    assert {types[i] for i in norm.input} == {TensorProto.FLOAT}
    producer = {o: n for n in typed.graph.node for o in n.output}
    value = "y"
    while producer[value].op_type == "Cast":
        assert types[value] == TensorProto.FLOAT, "the output passes through fp16"
        value = producer[value].input[0]
    assert value == norm.output[0]


def test_fp16_conversion_with_unnamed_kept_fp32_nodes_is_a_valid_model(tmp_path):
    """onnxconverter-common names its Casts after the op: two unnamed Softmax nodes collided
    (found by benchmarks/eval_fp16_conversion.py on the BERT-shaped encoder)."""
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"), helper.make_node("Softmax", ["h"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "W2"], ["h2"], name="mm2"), helper.make_node("Softmax", ["h2"], ["y"], axis=-1)]
    model = make_model(nodes, [vi("x", [2, 16])], [vi("y", [2, 16])], [init(rand([16, 16]), "W"), init(rand([16, 16], 1), "W2")])
    before = model.SerializeToString()
    half = convert_precision(model, "fp16")
    assert model.SerializeToString() == before  # the caller's model is not modified
    onnx.checker.check_model(half, full_check=True)
    onnx.save(half, str(tmp_path / "half.onnx"))
    save(model, tmp_path / "m.onnx")
    x = rand([2, 16], 3)
    np.testing.assert_allclose(run(tmp_path / "half.onnx", {"x": x})[0], run(tmp_path / "m.onnx", {"x": x})[0], rtol=2e-2, atol=2e-3)
    assert [n.name for n in half.graph.node if n.op_type == "MatMul"] == ["mm", "mm2"]


def test_bf16_without_modelopt_is_missing_component():
    from sparsify.errors import MissingComponent

    if importlib.util.find_spec("modelopt"):
        pytest.skip("ModelOpt is installed")
    with pytest.raises(MissingComponent, match="ModelOpt"):
        convert_precision(onnx.ModelProto(), "bf16")


DATA = ROOT / "tests" / "data"


# ---------------------------------------------------------------- engine inspector (recorded samples)

def test_inspector_tensorrt10_schema():
    from sparsify_tensorrt.inspector import parse_engine_info, sparse_layers_by_onnx_node

    info = parse_engine_info((DATA / "inspector_trt10.json").read_text())
    assert info.schema == "tensorrt10" and info.detailed and [t["Name"] for t in info.io_tensors] == ["data", "resnetv15_dense0_fwd"]
    reformat, sparse, dense = info.layers
    assert sparse.sparse_kernel and sparse.has_sparse_weights and "sparse" in sparse.tactic and sparse.dtype == "Int8"
    assert sparse.onnx_nodes == ["resnetv15_stage3_conv4_fwd", "resnetv15_stage3_batchnorm4_fwd", "resnetv15_stage3__plus1",
                                 "resnetv15_stage3_activation1"]  # from Metadata (U+001E separated)
    assert not dense.sparse_kernel and dense.has_sparse_weights is False and dense.dtype == "Half"
    assert dense.onnx_nodes == ["Conv_276", "Add_277", "Relu_278"]  # empty Metadata: the fused name
    by_node = sparse_layers_by_onnx_node(info)
    assert by_node["resnetv15_stage3_conv4_fwd"] is sparse and by_node["Conv_276"] is dense
    assert not any(layer.layer_type == "Reformat" for layer in by_node.values())
    data = json.loads((DATA / "inspector_trt10.json").read_text())
    del data["Layers"][1]["HasSparseWeights"]  # layer types without the flag: the tactic name decides
    layer = parse_engine_info(json.dumps(data)).layers[1]
    assert layer.has_sparse_weights is None and layer.sparse_kernel


def test_inspector_tensorrt11_schema_gives_the_same_answers():
    from sparsify_tensorrt.inspector import parse_engine_info

    old = parse_engine_info((DATA / "inspector_trt10.json").read_text())
    new = parse_engine_info((DATA / "inspector_trt11.json").read_text())
    assert new.schema == "tensorrt11" and new.io_tensors[0]["IOMode"] == "Input"
    assert [(a.name, a.sparse_kernel, a.onnx_nodes, a.dtype) for a in old.layers] == \
           [(b.name, b.sparse_kernel, b.onnx_nodes, b.dtype) for b in new.layers]


def test_inspector_names_only_and_bad_json():
    from sparsify_tensorrt.inspector import parse_engine_info

    info = parse_engine_info((DATA / "inspector_names_only.json").read_text())
    assert info.schema == "names-only" and not info.detailed and info.layers[0].onnx_nodes == ["Conv__25", "Relu"]
    for bad in ("not json", "[]", '{"Bindings": []}'):
        with pytest.raises(ValueError):
            parse_engine_info(bad)


def _pruned_report(tmp_path) -> Path:
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"], name="Conv_619"), helper.make_node("Relu", ["h"], ["r"], name="Relu_620"),
             helper.make_node("MatMul", ["r", "W2"], ["y"], name="MatMul_51"),
             helper.make_node("MatMul", ["y", "W3"], ["z"], name="resnetv15_stage3_conv4_fwd")]
    model = save(make_model(nodes, [vi("x", [2, 16])], [vi("z", None)],
                            [init(rand([16, 16]), "W1"), init(rand([16, 8]), "W2"), init(rand([8, 8]), "W3")]), tmp_path / "m.onnx")
    sparsify.prune(model, verify=False)
    return tmp_path / "m.sparse.report.json"


def test_build_section_prefers_the_inspector_and_falls_back_to_the_log(tmp_path):
    from sparsify_tensorrt.plugin import build_section, merge_build_report

    report_path = _pruned_report(tmp_path)
    names = ["Conv_619", "Relu_620", "MatMul_51", "resnetv15_stage3_conv4_fwd"]
    section = build_section(names, LOG, (DATA / "inspector_trt10.json").read_text())
    nodes = section["onnx_nodes"]
    assert nodes["resnetv15_stage3_conv4_fwd"]["picked"] and nodes["resnetv15_stage3_conv4_fwd"]["evidence"] == "engine inspector"
    assert nodes["resnetv15_stage3_conv4_fwd"]["tactic"].startswith("sm80_xmma_fprop_avdt_sparse")
    assert nodes["Conv_619"] == {"eligible": True, "picked": True, "evidence": "build log", "tensorrt_layer": "Conv_619 + Relu_620",
                                 "tactic": None}
    assert nodes["MatMul_51"]["eligible"] and nodes["MatMul_51"]["picked"] is False
    assert section["inspector_schema"] == "tensorrt10" and len(section["sparse_layers"]) == 1
    merged = merge_build_report(json.loads(report_path.read_text()), {**section, "engine_bytes": 123})
    rows = {r["layer"]: r["build"] for r in merged["targets"]}
    assert rows["Conv_619"]["has_2to4_weights"] and rows["Conv_619"]["picked_sparse_kernel"]
    assert rows["MatMul_51"]["eligible_for_sparse_math"] and rows["MatMul_51"]["picked_sparse_kernel"] is False
    assert merged["engine"]["engine_bytes"] == 123 and "onnx_nodes" not in merged["engine"]
    json.dumps(merged)
    nothing = build_section(names, "", None)["onnx_nodes"]["MatMul_51"]
    assert nothing["eligible"] is None and nothing["picked"] is None  # unknown, never a guessed False


# ---------------------------------------------------------------- typing, profiles

def test_typing_plan_per_tensorrt_version():
    from sparsify_tensorrt.options import typing_plan

    assert typing_plan(11, "fp16").__dict__ == {"convert_graph": True, "strongly_typed": True, "flags": {}}
    assert typing_plan(11, "fp32").convert_graph is False
    assert typing_plan(10, "fp16").__dict__ == {"convert_graph": False, "strongly_typed": False, "flags": {"fp16": True}}
    assert typing_plan(10, "bf16").flags == {"bf16": True} and typing_plan(10, "fp32").flags == {}
    from sparsify.errors import UsageError
    with pytest.raises(UsageError):
        typing_plan(10, "int4")


def _dynamic_model(tmp_path) -> Path:
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])
    return save(make_model(nodes, [x], [vi("y", None)], [init(rand([16, 8]), "W")]), tmp_path / "dyn.onnx")


def test_shapes_parse_into_a_polygraphy_profile(tmp_path):
    from sparsify_tensorrt.options import parse_shapes, polygraphy_profiles

    from sparsify.errors import UsageError

    model = onnx.load(str(_dynamic_model(tmp_path)))
    shapes = parse_shapes(["x:1x16:8x16:32x16"], model)
    assert shapes == {"x": ([1, 16], [8, 16], [32, 16])}
    (profile,) = polygraphy_profiles(shapes)
    assert list(profile["x"].min) == [1, 16] and list(profile["x"].opt) == [8, 16] and list(profile["x"].max) == [32, 16]
    assert polygraphy_profiles({}) is None
    for bad, message in [("x:1x16:8x16", "expected NAME"), ("y:1x16:8x16:32x16", "not a model input"),
                         ("x:1x16x1:8x16x1:32x16x1", "ranks"), ("x:8x16:1x16:32x16", "min <= opt"),
                         ("x:1x8:1x8:1x8", "fixed at 16"), ("x:1x16:8x16:32xa", "expected NAME")]:
        with pytest.raises(UsageError, match=message):
            parse_shapes([bad], model)


# ---------------------------------------------------------------- parity and timing through Polygraphy runners

def test_comparator_parity_matches_the_pass_and_gates(tmp_path):
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from sparsify_tensorrt.compare import compare_runners

    from sparsify.verify.parity import check_parity

    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"), helper.make_node("Relu", ["h"], ["y"])]
    dense = save(make_model(nodes, [vi("x", [4, 32])], [vi("y", [4, 16])], [init(rand([32, 16]), "W")]), tmp_path / "d.onnx")
    sparsify.prune(dense, verify=False)
    sparse = tmp_path / "d.sparse.onnx"
    feeds = [{"x": rand([4, 32], 5)}]

    def runners():
        return (OnnxrtRunner(SessionFromOnnx(str(dense), providers=["CPUExecutionProvider"]), name="dense"),
                OnnxrtRunner(SessionFromOnnx(str(sparse), providers=["CPUExecutionProvider"]), name="sparse"))

    result = compare_runners(*runners(), feeds)
    np.savez(tmp_path / "in.npz", x=feeds[0]["x"])
    want = check_parity(dense, sparse, input_shapes={}, inputs_npz=str(tmp_path / "in.npz"), seed=0)
    assert result.verified and result.runs == 1
    assert result.outputs[0].rel_l2_error == pytest.approx(want.outputs[0].rel_l2_error, rel=1e-9)
    assert result.outputs[0].rel_l2_error > 0.05
    assert compare_runners(*runners(), feeds, max_rel_error=1.0).gates_passed
    failed = compare_runners(*runners(), feeds, max_rel_error=0.01)
    assert not failed.gates_passed and failed.gates[0].value == pytest.approx(result.outputs[0].rel_l2_error)


def test_time_runner_reports_latency_and_throughput(tmp_path):
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from sparsify_tensorrt.bench import time_runner

    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
    path = save(make_model(nodes, [vi("x", [8, 64])], [vi("y", [8, 64])], [init(rand([64, 64]), "W")]), tmp_path / "t.onnx")
    with OnnxrtRunner(SessionFromOnnx(str(path), providers=["CPUExecutionProvider"])) as runner:
        stats = time_runner(runner, {"x": rand([8, 64])}, warmup=2, iterations=20)
    assert stats["iterations"] == 20 and stats["batch"] == 8 and 0 < stats["median_ms"] <= stats["p90_ms"]
    assert stats["throughput_per_s"] == pytest.approx(8 / (stats["median_ms"] / 1000))


# ---------------------------------------------------------------- CLI contract without TensorRT

def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "sparsify", *map(str, args)], capture_output=True, text=True, timeout=120, **kw)


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed: the build would run")
def test_build_validates_input_first_then_exits_5_without_tensorrt(tmp_path):
    model = _dynamic_model(tmp_path)
    bad_shapes = cli("build", model, "-o", tmp_path / "m.plan", "--shapes", "x:8x16:1x16:32x16")
    assert bad_shapes.returncode == 2 and "min <= opt" in bad_shapes.stderr and bad_shapes.stderr.count("\n") == 1
    (tmp_path / "junk.onnx").write_bytes(b"\x00garbage")
    assert cli("build", tmp_path / "junk.onnx", "-o", tmp_path / "m.plan", "--no-verify").returncode == 2
    assert "does not exist" in cli("build", model, "-o", tmp_path / "missing" / "m.plan", "--no-verify").stderr
    assert "refusing to overwrite" in cli("build", model, "-o", model, "--no-verify").stderr
    (tmp_path / "r.json").write_text('{"not": "a report"}')
    assert cli("build", model, "-o", tmp_path / "m.plan", "--report", tmp_path / "r.json").returncode == 2
    ok = cli("build", model, "-o", tmp_path / "m.plan", "--shapes", "x:1x16:8x16:32x16", "--benchmark", "--no-verify")
    assert ok.returncode == 5 and ok.stderr.count("\n") == 1 and "needs TensorRT" in ok.stderr and "Traceback" not in ok.stderr
    assert not (tmp_path / "m.plan").exists() and (tmp_path / "r.json").read_text() == '{"not": "a report"}'
    listing = cli("plugins").stdout
    assert "tensorrt     unavailable (missing: tensorrt" in listing


# ---------------------------------------------------------------- type-check of the TensorRT-touching code

def _stub_dir(tmp_path) -> Path | None:
    """tensorrt-stubs installs `tensorrt/__init__.pyi` without a py.typed marker, so mypy ignores
    it (every trt name would be Any), and a few of its lines are not valid Python (`in` as a
    parameter name).  Copy the stubs, mend those lines, and hand them to mypy via MYPYPATH."""
    import re
    import shutil
    import site

    for base in site.getsitepackages():
        if (Path(base) / "tensorrt_bindings" / "tensorrt.pyi").is_file():
            stubs = tmp_path / "stubs"
            for name in ("tensorrt", "tensorrt_bindings"):
                shutil.copytree(Path(base) / name, stubs / name, ignore=shutil.ignore_patterns("*.so", "*.py"))
            pyi = stubs / "tensorrt_bindings" / "tensorrt.pyi"
            text = re.sub(r"(?<=[(,] )in: ", "in_: ", pyi.read_text())
            pyi.write_text(text.replace("power: Weights = None, channel_axis: int)", "power: Weights = None, channel_axis: int = ...)"))
            (tmp_path / "mypy.ini").write_text("[mypy]\nignore_missing_imports = True\nfollow_imports = silent\n"
                                               "[mypy-tensorrt_bindings.*]\nignore_errors = True\n[mypy-tensorrt.*]\nignore_errors = True\n")
            return stubs
    return None


def _mypy(tmp_path, stubs: Path, *files):
    import os

    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(tmp_path / "mypy.ini"), *map(str, files)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "MYPYPATH": str(stubs)})


def test_builder_typechecks_against_tensorrt_stubs(tmp_path):
    pytest.importorskip("mypy")
    stubs = _stub_dir(tmp_path)
    if stubs is None:
        pytest.skip("tensorrt-stubs not installed")
    build = ROOT / "plugins" / "tensorrt" / "sparsify_tensorrt" / "build.py"
    result = _mypy(tmp_path, stubs, build)
    assert result.returncode == 0, result.stdout
    # The stubs are really in force: a misspelt TensorRT name in the same code fails.
    broken = tmp_path / "broken_build.py"
    broken.write_text(build.read_text().replace("trt.LayerInformationFormat.JSON", "trt.LayerInformationFormat.JSN"))
    result = _mypy(tmp_path, stubs, broken)
    assert result.returncode == 1 and 'has no attribute "JSN"' in result.stdout


# ---------------------------------------------------------------- the whole `build` command around a stand-in builder

class StandInTensorRT:
    """A stand-in for the machine without TensorRT.  To run `sparsify build`'s own orchestration (typing,
    conversion, report merge, parity gates, benchmark, summary) end to end, the two TensorRT
    touch points are replaced: the "engine" written is the typed ONNX file itself, its "build
    log" and "inspector JSON" name the model's real nodes, and the "engine runner" is ONNX
    Runtime on that file.  What this cannot show is anything TensorRT itself does."""

    def __init__(self, major: int):
        self.major, self.builds = major, []

    def build_engine(self, onnx_path, plan_path, options):
        from sparsify_tensorrt.build import BuildResult

        data = Path(onnx_path).read_bytes()
        Path(plan_path).write_bytes(data)
        self.builds.append((onnx.load(str(onnx_path)), options))
        layer = {"Name": "mm1 + relu", "LayerType": "CaskGemmMatrixMultiply", "Inputs": [{"Format/Datatype": "Row major linear FP16 format"}],
                 "HasSparseWeights": 0 if options.dense else 1, "TacticName": "sm90_xmma_sparse_gemm_f16f16" if not options.dense else "sm90_xmma_gemm_f16f16",
                 "Metadata": "[ONNX Layer: mm1]\u001e[ONNX Layer: relu]"}
        log = "" if options.dense else "[I] [TRT] (Sparsity) Layers eligible for sparse math: mm1 + relu, mm2\n" \
                                       "[I] [TRT] (Sparsity) TRT inference plan picked sparse implementation for layers: mm1 + relu\n"
        return BuildResult(Path(plan_path), len(data), log, json.dumps({"Layers": [layer], "Bindings": ["x", "y"]}))

    def runner(self, plan_path, name):
        from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

        return OnnxrtRunner(SessionFromOnnx(Path(plan_path).read_bytes(), providers=["CPUExecutionProvider"]), name=name)

    def install(self, monkeypatch):
        import sparsify_tensorrt.build as build

        monkeypatch.setattr(build, "tensorrt_major", lambda: self.major)
        monkeypatch.setattr(build, "build_engine", self.build_engine)
        monkeypatch.setattr(build, "trt_runner", self.runner)


def _build_args(*argv):
    import argparse

    from sparsify_tensorrt.plugin import plugin as trt_plugin

    parser = argparse.ArgumentParser()
    trt_plugin.add_parser(parser.add_subparsers(), type("Info", (), {"available": True, "reason": ""})())
    return parser.parse_args(["build", *map(str, argv)])


def _mlp(tmp_path) -> tuple[Path, Path]:
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"], name="mm1"), helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "W2"], ["y"], name="mm2")]
    dense = save(make_model(nodes, [vi("x", [4, 32])], [vi("y", [4, 8])], [init(rand([32, 32]), "W1"), init(rand([32, 8], 1), "W2")]),
                 tmp_path / "mlp.onnx")
    sparsify.prune(dense, verify=False)
    return tmp_path / "mlp.sparse.onnx", tmp_path / "mlp.sparse.report.json"


@pytest.mark.parametrize("major", [10, 11])
def test_build_command_end_to_end_around_a_stand_in_builder(tmp_path, monkeypatch, capsys, major):
    from sparsify_tensorrt.plugin import run as build_run

    sparse, report = _mlp(tmp_path)
    trt = StandInTensorRT(major)
    trt.install(monkeypatch)
    args = _build_args(sparse, "-o", tmp_path / "mlp.plan", "--report", report, "--benchmark", "--iterations", "5")
    assert build_run(args) == 0
    (typed, options), (_, dense_options) = trt.builds
    w1 = {t.name: t for t in typed.graph.initializer}["W1"]
    # TensorRT 11: the precision is in the graph (fp16 weights, fp32 I/O); TensorRT 10: fp32 graph + builder flag.
    assert w1.data_type == (TensorProto.FLOAT16 if major >= 11 else TensorProto.FLOAT)
    assert typed.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert not options.dense and dense_options.dense and (tmp_path / "mlp.dense.plan").exists()
    merged = json.loads(report.read_text())
    rows = {r["layer"]: r["build"] for r in merged["targets"]}
    assert rows["mm1"]["picked_sparse_kernel"] and rows["mm1"]["evidence"] == "engine inspector"
    assert rows["mm2"]["eligible_for_sparse_math"] and rows["mm2"]["picked_sparse_kernel"] is False
    engine = merged["engine"]
    assert engine["tensorrt_major"] == major and engine["strongly_typed"] == (major >= 11)
    assert engine["parity"]["verified"] and engine["parity_reference"].endswith("mlp.onnx")  # the dense model, from the report
    rel = engine["parity"]["outputs"][0]["rel_l2_error"]
    assert rel > 0.01  # sparse engine vs DENSE reference: the pruning shows
    assert engine["benchmark"]["sparse"]["iterations"] == 5 and engine["benchmark"]["speedup"] > 0
    assert engine["engine_size_ratio"] == pytest.approx(1.0)
    out = capsys.readouterr().out
    table = {line.split()[0]: line.split()[1:3] for line in out.splitlines() if line.startswith("  mm")}
    assert table == {"mm1": ["yes", "yes"], "mm2": ["yes", "no"]}
    assert "1 of 2 Conv/MatMul/Gemm layer(s) run sparse" in out and "latency: dense" in out and "Activating" not in out


def test_build_command_gate_fails_with_exit_3_and_keeps_the_report(tmp_path, monkeypatch):
    from sparsify_tensorrt.plugin import run as build_run

    from sparsify.errors import GateFailed

    sparse, report = _mlp(tmp_path)
    StandInTensorRT(11).install(monkeypatch)
    with pytest.raises(GateFailed) as failure:
        build_run(_build_args(sparse, "-o", tmp_path / "mlp.plan", "--report", report, "--max-rel-error", "1e-6"))
    assert failure.value.exit_code == 3 and "max_rel_error" in str(failure.value)
    gates = json.loads(report.read_text())["engine"]["parity"]["gates"]
    assert gates[0]["name"] == "max_rel_error" and not gates[0]["passed"]


def test_typing_plan_int8_flag_for_qdq_graphs_on_tensorrt10():
    from sparsify_tensorrt.options import has_qdq, typing_plan

    assert typing_plan(10, "fp16", has_qdq=True).flags == {"fp16": True, "int8": True}
    assert typing_plan(11, "fp16", has_qdq=True).flags == {}  # strongly typed: Q/DQ carry the types
    qdq = helper.make_model(helper.make_graph([helper.make_node("DequantizeLinear", ["q", "s"], ["w"])], "g", [], []))
    assert has_qdq(qdq) and not has_qdq(helper.make_model(helper.make_graph([], "g", [], [])))


def test_config_arguments_build_a_real_polygraphy_config(tmp_path):
    """The CreateConfig the builder makes, minus the two TensorRT enums it adds itself."""
    from polygraphy.backend.trt import CreateConfig
    from sparsify_tensorrt.options import BuildOptions, config_arguments, typing_plan

    cache = tmp_path / "timing.cache"
    options = BuildOptions("fp16", False, 512, cache, {"x": ([1, 16], [8, 16], [32, 16])})
    kwargs = config_arguments(options, typing_plan(10, "fp16"))
    assert kwargs["load_timing_cache"] is None  # not there yet: nothing to load (the build saves it)
    cache.write_bytes(b"cache")
    config = CreateConfig(**config_arguments(options, typing_plan(10, "fp16")))
    assert config.sparse_weights and config.fp16 and not config.bf16 and config.timing_cache_path == str(cache)
    assert list(config.profiles[0]["x"].max) == [32, 16]
    dense = CreateConfig(**config_arguments(BuildOptions("fp16", True), typing_plan(11, "fp16")))
    assert not dense.sparse_weights and not dense.fp16 and all(len(p) == 0 for p in dense.profiles)


@pytest.mark.parametrize("message, log, code, words", [
    ("[TRT] [E] 6: CUDA initialization failure with error: 35", "", 5, "usable NVIDIA GPU"),
    ("Failed to parse ONNX model. Does the model file exist and contain a valid ONNX model?",
     "[E] [TRT] ModelImporter.cpp:949: While parsing node number 3 [NonMaxSuppression]: unsupported", 2, "cannot build this model"),
    ("Invalid Engine. Please ensure the engine was built correctly", "[E] 4: [network.cpp::validate] Error Code 4: out of memory", 1,
     "build failed"),
])
def test_build_errors_become_one_line_with_the_exit_code(message, log, code, words):
    from sparsify_tensorrt.errors import translate_build_error

    error = translate_build_error(RuntimeError(message), log)
    assert error.exit_code == code and words in str(error) and "\n" not in str(error)
    if code == 5:
        assert "--gpus all" in str(error)  # says how to get what is missing
