"""Start-up: plugin commands are known from metadata; a plugin (and torch/TensorRT) is imported
only when its own command runs; a missing plugin's command exits 5 saying how to install it."""

from __future__ import annotations

import subprocess
import sys

import pytest

import sparsify.plugins
from sparsify.cli import main
from tests.builders import init, make_model, rand, save, vi

PROBE = """
import sys
from sparsify.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:  # --version, --help
    code = exc.code
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorrt', 'polygraphy', 'sparsify_torch_runtime',
                                                             'sparsify_tensorrt', 'sparsify_triton'))
print('HEAVY', ','.join(heavy), 'CODE', code)
"""


def _model(tmp_path):
    from onnx import helper

    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
    return save(make_model([node], [vi("x", [2, 8])], [vi("y", None)], [init(rand([8, 4]), "W")]), tmp_path / "m.onnx")


@pytest.mark.parametrize("command", [["check", "{model}"], ["prune", "{model}", "--no-verify"], ["{model}"], ["--version"], ["--help"]])
def test_core_commands_import_no_plugin(tmp_path, command):
    model = _model(tmp_path)
    args = [a.format(model=model) for a in command]
    result = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120)
    line = next(text for text in result.stdout.splitlines() if text.startswith("HEAVY"))
    assert line.split()[1] == "CODE" or line.split()[1] == "", line  # nothing heavy imported
    assert line.endswith("CODE 0"), result.stdout + result.stderr


def test_a_plugin_command_imports_only_its_plugin(tmp_path):
    model = _model(tmp_path)
    result = subprocess.run([sys.executable, "-c", PROBE, "triton", model, "--repository", tmp_path / "repo"],
                            capture_output=True, text=True, timeout=120)
    line = next(text for text in result.stdout.splitlines() if text.startswith("HEAVY"))
    assert "sparsify_triton" in line and "torch" not in line and "tensorrt" not in line, line


@pytest.mark.parametrize("command, package", [("build", "sparsify-tensorrt"), ("triton", "sparsify-triton"),
                                              ("torch-runtime", "sparsify-torch-runtime")])
def test_plugin_command_without_its_plugin_exits_5_with_how_to_install(tmp_path, capsys, monkeypatch, command, package):
    monkeypatch.setattr(sparsify.plugins, "entry_points", lambda: {})  # as with only the core installed
    code = main([command, "-o", str(tmp_path / "x.plan"), str(_model(tmp_path)), "--any-flag"])
    err = capsys.readouterr().err
    assert code == 5 and f"pip install {package}" in err and err.count("\n") == 1, err
    with pytest.raises(SystemExit):
        main(["--help"])
    assert f"[plugin not installed: {package}]" in " ".join(capsys.readouterr().out.split())
