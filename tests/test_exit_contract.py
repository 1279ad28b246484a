"""The CLI's error contract for the codes no bad input can reach: 1 (a bug) and 5 (missing
component; the TensorRT/GPU subcommands raise it).  The failure is injected into sparsify's
own pipeline function in a subprocess; nothing of onnx or onnxruntime is replaced."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
import sparsify.api
from sparsify.errors import MissingComponent
from sparsify.cli import main

def boom(*args, **kwargs):
    if sys.argv[1] == "bug":
        raise ZeroDivisionError("injected")
    raise MissingComponent("TensorRT is not installed: pip install 'sparsify-tensorrt[gpu]'")

sparsify.api.prune = boom
raise SystemExit(main(["prune", "model.onnx"]))
"""


def _run(kind, **env):
    import os

    return subprocess.run([sys.executable, "-c", SCRIPT, kind], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def test_internal_error_exits_1_with_one_line():
    result = _run("bug")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "internal error: ZeroDivisionError: injected" in result.stderr
    assert "Traceback" not in result.stderr


def test_debug_env_shows_traceback():
    result = _run("bug", SPARSIFY_DEBUG="1")
    assert result.returncode == 1 and "Traceback" in result.stderr


def test_missing_component_exits_5():
    result = _run("missing")
    assert result.returncode == 5
    assert result.stderr.strip() == "sparsify: error: TensorRT is not installed: pip install 'sparsify-tensorrt[gpu]'"
