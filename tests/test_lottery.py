"""Lottery-ticket search on a tiny recipe: schedule, enforcement, controls, export, resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sparsify.errors import UsageError
from sparsify.pattern import parse_pattern

torch = pytest.importorskip("torch")

from sparsify.lottery.enforce import MaskEnforcer  # noqa: E402
from sparsify.lottery.run import run_lottery  # noqa: E402
from sparsify.lottery.search import TicketConfig, schedule  # noqa: E402

RECIPE = str(Path(__file__).parent / "recipes" / "tiny_mlp.py")


def _nm_dim1(mask: np.ndarray, n=2, m=4) -> bool:
    moved = np.moveaxis(mask, 1, -1)
    return bool((moved.reshape(-1, m).sum(1) <= n).all())


def test_schedules():
    assert [str(s) for s in schedule(TicketConfig(pattern=parse_pattern("2:4")))] == ["3:4", "2:4"]
    steps = schedule(TicketConfig(sparsity=0.9))
    assert len(steps) == 11 and steps[-1] == pytest.approx(0.9) and steps[0] == pytest.approx(0.2)


def test_nm_ticket_end_to_end_and_resume(tmp_path, monkeypatch):
    log = tmp_path / "train.log"
    monkeypatch.setenv("TINY_RECIPE_LOG", str(log))
    out = tmp_path / "ticket"
    report = run_lottery(RECIPE, TicketConfig(pattern=parse_pattern("2:4"), epochs=3, rewind_epoch=1), out, progress=lambda _s: None)
    assert [r["target"] for r in report["rounds"]] == ["3:4", "2:4"]
    assert report["ticket_density"] == pytest.approx(0.5)
    assert set(report["controls"]) == {"random_reinit", "one_shot_magnitude"}
    # winning_ticket is exactly "the ticket beat both controls", recomputed from the reported accuracies
    beat_both = all(report["ticket_accuracy"] > c["accuracy"] for c in report["controls"].values())
    assert report["winning_ticket"] is beat_both
    masks = np.load(out / "masks.npz")
    state = torch.load(out / "ticket.pt", weights_only=True)
    for name in masks.files:
        assert _nm_dim1(masks[name]), name
        assert (state[name].numpy()[~masks[name]] == 0).all(), name  # pruned stay exactly zero
    assert report["onnx"]["non_compliant_targets"] == 0 and report["onnx"]["pruned_targets"] == 2
    assert report["onnx"]["parity_verified"]
    for f in ("report.json", "ticket.onnx", "rewind_state.pt"):
        assert (out / f).exists()
    calls = log.read_text().split()
    assert calls[:2] == ["1", "2"]  # dense training split at the rewind point
    # resume: every stage is on disk, so nothing trains again and the answer is the same
    log.write_text("")
    again = run_lottery(RECIPE, TicketConfig(pattern=parse_pattern("2:4"), epochs=3, rewind_epoch=1), out, progress=lambda _s: None)
    assert log.read_text() == "" and again["ticket_accuracy"] == report["ticket_accuracy"]


def test_deterministic_with_seed(tmp_path):
    config = TicketConfig(pattern=parse_pattern("2:4"), epochs=2, controls=False, seed=3)
    run_lottery(RECIPE, config, tmp_path / "a", progress=lambda _s: None)
    run_lottery(RECIPE, config, tmp_path / "b", progress=lambda _s: None)
    a, b = np.load(tmp_path / "a" / "masks.npz"), np.load(tmp_path / "b" / "masks.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a.files)


def test_unstructured_and_finetune_modes(tmp_path):
    report = run_lottery(RECIPE, TicketConfig(sparsity=0.5, epochs=2, controls=False), tmp_path / "u", progress=lambda _s: None)
    assert len(report["rounds"]) == 4 and report["ticket_density"] == pytest.approx(0.5, abs=0.01)
    assert "non_compliant_targets" not in report["onnx"]
    finetune = run_lottery(RECIPE, TicketConfig(pattern=parse_pattern("2:4"), epochs=2, mode="finetune"), tmp_path / "f",
                           progress=lambda _s: None)
    assert len(finetune["rounds"]) == 1 and list(finetune["controls"]) == ["random_reinit"]


def test_enforcer_zeroes_gradients():
    layer = torch.nn.Linear(8, 4)
    mask = torch.rand(4, 8) > 0.5
    enforcer = MaskEnforcer(layer, {"weight": layer.weight}, {"weight": mask})
    layer(torch.randn(3, 8)).sum().backward()
    assert (layer.weight.grad[~mask] == 0).all() and (layer.weight[~mask] == 0).all()
    enforcer.remove()


def test_bad_recipes(tmp_path):
    with pytest.raises(UsageError, match="lacks"):
        run_lottery(f"{RECIPE}:broken", TicketConfig(pattern=parse_pattern("2:4")), tmp_path / "x")
    (tmp_path / "bad.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(UsageError, match="failed to import"):
        run_lottery(str(tmp_path / "bad.py"), TicketConfig(pattern=parse_pattern("2:4")), tmp_path / "x")
    with pytest.raises(UsageError, match="not both"):
        run_lottery(RECIPE, TicketConfig(), tmp_path / "x")
    result = subprocess.run([sys.executable, "-m", "sparsify", "lottery", str(tmp_path / "bad.py"), "--pattern", "2:4",
                             "--out", str(tmp_path / "y")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "failed to import" in result.stderr and "Traceback" not in result.stderr


def test_cli_lottery(tmp_path):
    result = subprocess.run([sys.executable, "-m", "sparsify", "lottery", RECIPE, "--pattern", "2:4", "--epochs", "2",
                             "--out", str(tmp_path / "t")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "round_2: 2:4" in result.stdout and json.loads((tmp_path / "t" / "report.json").read_text())["rounds"]


def test_pattern_no_layer_can_take(tmp_path):
    with pytest.raises(UsageError, match="no layer can take 3:5"):
        run_lottery(RECIPE, TicketConfig(pattern=parse_pattern("3:5"), epochs=1), tmp_path / "x", progress=lambda _s: None)
    report = run_lottery(RECIPE, TicketConfig(pattern=parse_pattern("2:4"), epochs=1, controls=False, exclude=[r"^2\."]),
                         tmp_path / "y", progress=lambda _s: None)
    assert report["dense_layers"] == {"2.weight": "excluded by --exclude"}
