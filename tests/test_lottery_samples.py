"""Shortened runs of the lottery samples on real data (MNIST-1D, digits) through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("mnist1d")
pytest.importorskip("sklearn")

RECIPES = Path(__file__).resolve().parents[1] / "samples" / "lottery_recipes.py"


@pytest.mark.parametrize("recipe,target", [("mnist1d_mlp", ["--pattern", "2:4"]), ("mnist1d_mlp", ["--sparsity", "0.5"]),
                                           ("digits_convnet", ["--pattern", "2:4"])])
def test_sample_recipe_short(tmp_path, recipe, target):
    env = {**os.environ, "SPARSIFY_SAMPLE_FAST": "1"}
    result = subprocess.run([sys.executable, "-m", "sparsify", "lottery", f"{RECIPES}:{recipe}", *target, "--epochs", "2",
                             "--rewind-iter", "1", "--out", str(tmp_path / "out")], capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert 0 < report["dense_accuracy"] <= 1 and report["rounds"] and set(report["controls"]) == {"random_reinit", "one_shot_magnitude"}
    onnx_rows = report["onnx"]["pruned_targets"] if "--pattern" in target else report["onnx"]["masked_not_nm_targets"]
    assert onnx_rows >= 2 and report["onnx"]["parity_verified"]
    assert "winning ticket: " in result.stdout.splitlines()[-1]  # the last line says whether the ticket won
    assert report.get("onnx", {}).get("non_compliant_targets", 0) == 0
    assert (tmp_path / "out" / "accuracy_vs_sparsity.png").stat().st_size > 1000
    assert "round_1 epoch 2/2" in result.stdout  # per-epoch progress from a train() that accepts it
