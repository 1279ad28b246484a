"""What the tool tells a user is true and complete: options that would silently do nothing are
usage errors, shapes are checked up front, fallbacks and non-N:M masks show, long names stay
distinguishable, progress appears off a terminal, the API takes one string as one item."""

from __future__ import annotations

import io
import json
import os
import stat

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper

import sparsify
from sparsify.cli import main
from sparsify.errors import UsageError
from sparsify.progress import Progress
from tests.builders import init, make_model, rand, save, vi


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _mlp(tmp_path, names=("fc1", "fc2")):
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"], name=names[0]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "W2"], ["y"], name=names[1])]
    inits = [init(rand([16, 16]), "W1"), init(rand([16, 8], 1), "W2")]
    return save(make_model(nodes, [vi("x", ["batch", 16])], [vi("y", ["batch", 8])], inits), tmp_path / "m.onnx")


def _image_model(tmp_path):
    node = helper.make_node("Conv", ["image", "W"], ["y"], name="conv")
    return save(make_model([node], [vi("image", ["n", 8, 32, 32])], [vi("y", None)], [init(rand([8, 8, 1, 1]), "W")]),
                tmp_path / "img.onnx")


@pytest.mark.parametrize("args, words", [
    (["--calibration", "{cal}"], "--calibration is used only by --method wanda or sparsegpt"),
    (["--eval", "{cal}"], "--eval is used only by --max-accuracy-drop or --max-output-drift"),
    (["--no-bias-correction"], "--no-bias-correction applies only to --method wanda or sparsegpt"),
    (["--include", "nothing-like-this"], "--include 'nothing-like-this' matched none of the 2 layers/weights"),
])
def test_options_that_would_do_nothing_are_usage_errors(tmp_path, capsys, args, words):
    model = _mlp(tmp_path)
    np.savez(tmp_path / "cal.npz", x=rand([4, 2, 16]))
    code, _, err = run_cli(capsys, "prune", model, *[a.format(cal=tmp_path / "cal.npz") for a in args])
    assert code == 2 and words in err and err.count("\n") == 1, err
    assert not (tmp_path / "m.sparse.onnx").exists()


def test_a_fixed_dimension_changed_by_input_shape_is_refused_up_front(tmp_path, capsys):
    model = _image_model(tmp_path)
    code, _, err = run_cli(capsys, "prune", model, "--input-shape", "image:16x8x31x32")
    assert code == 2 and "--input-shape image: axis 2 is fixed at 32 in the model, got 31" in err, err
    code, _, err = run_cli(capsys, "prune", model, "--input-shape", "image:16x8x32")
    assert code == 2 and "rank 3, the model input has rank 4" in err
    code, _, err = run_cli(capsys, "prune", model, "--input-shape", "picture:1x8x32x32")
    assert code == 2 and "'picture', which is not a model input (image)" in err
    assert run_cli(capsys, "prune", model, "--input-shape", "image:16x8x32x32", "-q")[0] == 0  # the dynamic dim is free


def test_onnxruntime_errors_keep_the_informative_line(tmp_path):
    from sparsify.verify.parity import _first_line

    session = ort.InferenceSession(str(_image_model(tmp_path)), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception) as failure:  # noqa: PT011 - ORT raises its own exception types
        session.run(None, {"image": rand([1, 8, 31, 32])})
    line = _first_line(failure.value)
    assert "Got: 31" in line and "Expected: 32" in line and "\n" not in line


def test_the_table_shows_the_method_used_and_counts_fallbacks(tmp_path, capsys):
    wq = np.random.default_rng(1).integers(-100, 100, (8, 8, 3, 3)).astype(np.int8)
    nodes = [helper.make_node("Conv", ["x", "Wp"], ["a"], name="pointwise"),
             helper.make_node("DequantizeLinear", ["Wq", "s"], ["Wk"]),
             helper.make_node("Conv", ["a", "Wk"], ["y"], name="k3", pads=[1, 1, 1, 1])]
    model = save(make_model(nodes, [vi("x", [1, 8, 6, 6])], [vi("y", None)],
                            [init(rand([8, 8, 1, 1]), "Wp"), init(wq, "Wq"), init(np.array(0.01, np.float32), "s")]),
                 tmp_path / "c.onnx")
    np.savez(tmp_path / "cal.npz", x=rand([4, 1, 8, 6, 6], 2))
    code, out, err = run_cli(capsys, "prune", model, "--method", "sparsegpt", "--calibration", tmp_path / "cal.npz")
    assert code == 0, err
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("pointwise", "k3"))}
    assert "sparsegpt" in rows["pointwise"] and "magnitude*" in rows["k3"]
    assert "method*: 1 weight(s) fell back to magnitude" in out and "requantizing" in out
    report = json.loads((tmp_path / "c.sparse.report.json").read_text())
    fallback = {r["layer"]: r["method_fallback"] for r in report["targets"]}
    assert fallback["pointwise"] == "" and "requantizing" in fallback["k3"]


def test_long_layer_names_stay_distinguishable_and_reasons_whole(tmp_path, capsys):
    prefix = "/encoder/layers.0/self_attn/" + "very_long_module_path/" * 4
    model = _mlp(tmp_path, names=(prefix + "qkv_proj/MatMul", prefix + "out_proj/MatMul"))
    code, out, _ = run_cli(capsys, "prune", model, "--exclude", "out_proj", "--no-verify")
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith("/enc")]
    assert len(rows) == 2 and rows[0].split()[0] != rows[1].split()[0]
    assert "qkv_proj/MatMul" in rows[0] and "out_proj/MatMul" in rows[1]  # the distinctive tail is kept
    assert "excluded by --exclude 'out_proj'" in rows[1]  # the reason, whole
    code, out, _ = run_cli(capsys, "prune", model, "--exclude", "out_proj", "--no-verify", "--wide")
    assert prefix + "qkv_proj/MatMul" in out


def test_progress_off_a_terminal_is_one_line_per_interval_with_eta():
    now = [0.0]
    stream = io.StringIO()
    progress = Progress("pruning weight", stream=stream, tty=False, interval=10, clock=lambda: now[0])
    for step in range(1, 31):  # 30 weights, 1 s each
        now[0] = float(step)
        progress(step, 30, f"W{step}")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3  # at 10 s, 20 s, 30 s
    assert lines[0] == "pruning weight 10/30: W10 — 00:10 elapsed, ETA 00:20"
    assert lines[-1].startswith("pruning weight 30/30") and "ETA 00:00" in lines[-1]


def test_api_takes_one_string_as_one_item(tmp_path):
    model = _mlp(tmp_path)
    report = sparsify.prune(model, include="fc1", verify=False)
    status = {t.target.layer: t.outcome.status for t in report.rows}
    assert status == {"fc1": "pruned", "fc2": "skipped"}  # not the characters 'f', 'c', '1'
    np.savez(tmp_path / "cal.npz", x=rand([4, 2, 16]))
    report = sparsify.prune(model, output=tmp_path / "w.onnx", method="wanda", calibration=str(tmp_path / "cal.npz"))
    assert {t.outcome.method for t in report.rows} == {"wanda"}
    with pytest.raises(UsageError, match="matched none"):
        sparsify.prune(model, include="zzz", verify=False)


def test_reports_follow_the_umask_like_models(tmp_path):
    model = _mlp(tmp_path)
    previous = os.umask(0o022)
    try:
        sparsify.prune(model, verify=False)
    finally:
        os.umask(previous)
    for name in ("m.sparse.onnx", "m.sparse.report.json"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o644, name
