"""The CLI through a subprocess: every exit code, one-line errors, nothing half-written."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
from onnx import helper

import sparsify
from tests.builders import init, make_model, rand, save, vi

EXE = [sys.executable, "-m", "sparsify"]


def cli(*args, cwd=None):
    return subprocess.run([*EXE, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


def _model(tmp_path, k=16):
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
    model = make_model([node], [vi("x", [4, k])], [vi("y", [4, 8])], [init(rand([k, 8]), "W")])
    return save(model, tmp_path / "m.onnx")


def _assert_one_line_error(result, code):
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sparsify: "), result.stderr
    assert "Traceback" not in result.stderr


def _files(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def test_version():
    result = cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"sparsify {sparsify.__version__}"


def test_shorthand_prunes_and_writes_report(tmp_path):
    path = _model(tmp_path)
    result = cli(path, "--pattern", "2:4")
    assert result.returncode == 0, result.stderr
    assert "mm" in result.stdout and "pruned" in result.stdout and "parity" in result.stdout
    report = json.loads((tmp_path / "m.sparse.report.json").read_text())
    assert report["schema"] == "sparsify.report" and report["schema_version"] == 1
    assert report["targets"][0]["status"] == "pruned" and report["targets"][0]["reduction_axis"] == 0
    totals = report["totals"]
    assert totals["parameters_zeroed"] == 16 * 8 // 2
    assert totals["weight_bytes_dense_fp16"] == 16 * 8 * 2
    assert totals["weight_bytes_sparse_fp16_estimate"] == round(16 * 8 * 2 * 0.5625)
    assert report["parity"]["verified"] and report["versions"]["onnx"] == onnx.__version__
    assert report["arguments"]["pattern"] == "2:4" and "total" in report["timings_s"]
    assert (tmp_path / "m.sparse.onnx").exists()


def test_prune_subcommand_output_and_report_flags(tmp_path):
    path = _model(tmp_path)
    result = cli("prune", path, "-o", tmp_path / "o.onnx", "--report", tmp_path / "r.json", "--pattern", "1:2", "-q")
    assert result.returncode == 0 and result.stdout == ""
    assert json.loads((tmp_path / "r.json").read_text())["pattern"] == "1:2"


def test_include_exclude_and_only_profitable(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "Wbig"], ["a"], name="big"),
             helper.make_node("MatMul", ["a", "Wsmall"], ["y"], name="small")]
    inits = [init(rand([512, 512]), "Wbig"), init(rand([512, 8]), "Wsmall")]
    path = save(make_model(nodes, [vi("x", [1, 512])], [vi("y", None)], inits), tmp_path / "m.onnx")
    report = sparsify.prune(path, only_profitable=True, verify=False)
    status = {t.target.layer: (t.outcome.status, t.outcome.reason) for t in report.rows}
    assert status["big"][0] == "pruned" and "too small" in status["small"][1]
    report = sparsify.prune(path, include=["^sm"], verify=False)
    assert [t.outcome.status for t in report.rows] == ["skipped", "pruned"]
    report = sparsify.prune(path, exclude=["Wbig"], verify=False)
    assert report.rows[0].outcome.reason.startswith("excluded by --exclude")
    result = cli(path, "--include", "(")
    _assert_one_line_error(result, 2)


def test_gate_failure_exits_3_but_writes_outputs(tmp_path):
    path = _model(tmp_path)
    result = cli(path, "--max-rel-error", "0.0001")
    assert result.returncode == 3 and "parity gate failed" in result.stderr
    assert (tmp_path / "m.sparse.onnx").exists() and (tmp_path / "m.sparse.report.json").exists()
    gates = json.loads((tmp_path / "m.sparse.report.json").read_text())["parity"]["gates"]
    assert gates[0]["passed"] is False
    assert cli(path, "--max-rel-error", "10").returncode == 0


def test_check_and_strict(tmp_path):
    path = _model(tmp_path)
    result = cli("check", path, "--strict")
    assert result.returncode == 4 and "non_compliant" in result.stdout
    assert cli("check", path).returncode == 0
    assert cli(path, "-q").returncode == 0
    result = cli("check", tmp_path / "m.sparse.onnx", "--strict", "--report", tmp_path / "c.json")
    assert result.returncode == 0 and "compliant" in result.stdout
    assert json.loads((tmp_path / "c.json").read_text())["totals"]["compliant"] == 1
    assert cli("check", tmp_path / "m.sparse.onnx", "--strict", "--pattern", "1:4").returncode == 4


def _bad_inputs(tmp_path):
    good = _model(tmp_path).read_bytes()
    files = {
        "empty.onnx": b"", "truncated.onnx": good[: len(good) // 2], "text.onnx": b"hello, this is not a model\n",
        "random.onnx": np.random.default_rng(0).bytes(4096), "json.onnx": b'{"graph": 1}',
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return list(files)


def test_bad_input_files_exit_2_without_output(tmp_path):
    names = _bad_inputs(tmp_path)
    for name in [*names, "missing.onnx"]:
        before = _files(tmp_path)
        result = cli(tmp_path / name)
        _assert_one_line_error(result, 2)
        assert _files(tmp_path) == before, name  # nothing written, input unchanged
        _assert_one_line_error(cli("check", tmp_path / name), 2)


def test_bad_arguments_exit_2(tmp_path):
    path = _model(tmp_path)
    for args in (["--pattern", "4:2"], ["--pattern", "two:four"], ["--no-such-flag"],
                 ["--max-rel-error", "abc"], ["-o", path]):
        before = _files(tmp_path)
        _assert_one_line_error(cli(path, *args), 2)
        assert _files(tmp_path) == before
    _assert_one_line_error(cli(tmp_path), 2)  # a folder as the model


def test_unwritable_outputs_exit_2(tmp_path):
    path = _model(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    (tmp_path / "folder.onnx").mkdir()
    for out in (blocker / "o.onnx", tmp_path / "nope" / "o.onnx", tmp_path / "folder.onnx"):
        _assert_one_line_error(cli(path, "-o", out), 2)
    _assert_one_line_error(cli(path, "--report", blocker / "r.json"), 2)
    _assert_one_line_error(cli(path, "--report", tmp_path / "folder.onnx"), 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder.onnx", "m.onnx"]


def test_symlink_output_onto_input_refused(tmp_path):
    path = _model(tmp_path)
    os.symlink(path, tmp_path / "link.onnx")
    before = _files(tmp_path)
    _assert_one_line_error(cli(path, "-o", tmp_path / "link.onnx"), 2)
    assert _files(tmp_path) == before


def test_no_subcommand_prints_help_and_exits_2():
    result = cli()
    assert result.returncode == 2 and "usage" in result.stderr


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_leaves_no_partial_output(tmp_path, sig, code):
    # A large weight keeps the run busy after it created its temporary file; signal then.
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
    model = make_model([node], [vi("x", [1, 4096])], [vi("y", None)], [init(rand([4096, 4096]), "W")])
    path = save(model, tmp_path / "m.onnx")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    proc = subprocess.Popen([*EXE, str(path), "--no-verify"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
        time.sleep(0.002)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == code, err
    assert "no output was written" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_profitability_prediction_per_dtype_and_size(tmp_path):
    def predict_profit(row):
        return row.target.profitable, row.target.profitability

    def target(dtype, k, n):
        nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
        w = rand([k, n]).astype({"float16": np.float16, "float": np.float32}[dtype])
        elem = 10 if dtype == "float16" else 1
        path = save(make_model(nodes, [vi("x", [1, k], elem)], [vi("y", None, elem)], [init(w, "W")]), tmp_path / f"{dtype}{k}.onnx")
        return sparsify.prune(path, verify=False).rows[0]

    big16 = predict_profit(target("float16", 512, 512))
    assert big16[0] and "kernel speedup" in big16[1]
    big32 = predict_profit(target("float", 512, 512))
    assert not big32[0] and "TF32" in big32[1]
    small = predict_profit(target("float16", 64, 512))
    assert not small[0] and "too small" in small[1]
    report = json.loads((tmp_path / "float16512.sparse.report.json").read_text())
    assert report["targets"][0]["predicted_profitable"] is True
