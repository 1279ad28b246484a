"""The PyTorch side tells the truth too: parity on the user's example inputs, quiet exports,
a model's own error as one line, lottery runs that never mix configurations, readable
ticket.onnx names with a dynamic batch."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

import sparsify  # noqa: E402
from sparsify.errors import UsageError  # noqa: E402

RECIPE = Path(__file__).parent / "recipes" / "tiny_mlp.py"


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(16, 32), torch.nn.Linear(32, 8)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def cli(*args):
    return subprocess.run([sys.executable, "-m", "sparsify", *map(str, args)], capture_output=True, text=True, timeout=300)


def test_prune_torch_verifies_on_the_example_inputs(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(4, 16) * 5 + 3  # unlike N(0, 1) random inputs
    report = sparsify.prune_torch(Net(), (x,), tmp_path / "n.onnx")
    assert report.parity.verified and report.parity.inputs == "example inputs"
    assert "the model's example inputs" in report.format_table()
    assert json.loads((tmp_path / "n.report.json").read_text())["parity"]["inputs"] == "example inputs"


def test_a_failing_forward_is_one_documented_error(tmp_path):
    class Broken(torch.nn.Module):
        def forward(self, _x):
            raise TypeError("my model needs two inputs")

    with pytest.raises(UsageError, match="my model needs two inputs"):
        sparsify.prune_torch(Broken(), (torch.randn(2, 4),), tmp_path / "b.onnx")
    assert not (tmp_path / "b.onnx").exists()


@pytest.mark.skipif(not importlib.util.find_spec("onnxscript"), reason="the .pt2 front end uses the dynamo exporter")
def test_pt2_is_quiet_with_q_and_a_corrupt_one_is_one_line(tmp_path):
    program = torch.export.export(Net().eval(), (torch.randn(2, 16),))
    torch.export.save(program, str(tmp_path / "net.pt2"))
    quiet = cli(tmp_path / "net.pt2", "-q")
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == "", quiet.stdout + quiet.stderr
    (tmp_path / "bad.pt2").write_bytes(b"PK\x03\x04 not really a zip")
    bad = cli(tmp_path / "bad.pt2")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr, bad.stderr


def test_lottery_reuses_only_the_same_configuration(tmp_path):
    out = tmp_path / "ticket"
    first = cli("lottery", RECIPE, "--pattern", "2:4", "--epochs", "2", "--out", out, "--no-controls")
    assert first.returncode == 0, first.stderr
    assert "0.1999999" not in first.stdout and first.stdout.splitlines()[-1].startswith("winning ticket: not evaluated")
    again = cli("lottery", RECIPE, "--pattern", "2:4", "--epochs", "2", "--out", out, "--no-controls")
    assert again.returncode == 0 and "reusing finished stage(s) of the same configuration: dense, round_1" in again.stdout
    other = cli("lottery", RECIPE, "--pattern", "1:4", "--epochs", "3", "--out", out, "--no-controls")
    assert other.returncode == 2 and other.stderr.count("\n") == 1, other.stderr
    assert "epochs (2 -> 3)" in other.stderr and "pattern ('2:4' -> '1:4')" in other.stderr and "--force" in other.stderr
    forced = cli("lottery", RECIPE, "--pattern", "1:4", "--epochs", "3", "--out", out, "--no-controls", "--force")
    assert forced.returncode == 0 and "discarded" in forced.stdout, forced.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["pattern"] == "1:4" and report["config"]["epochs"] == 3
    assert [r["target"] for r in report["rounds"]] == ["3:4", "2:4", "1:4"]


def test_ticket_onnx_has_readable_names_and_a_dynamic_batch(tmp_path):
    out = tmp_path / "ticket"
    result = cli("lottery", RECIPE, "--sparsity", "0.5", "--epochs", "2", "--out", out, "--no-controls")
    assert result.returncode == 0, result.stderr
    assert "0.19999999999999996" not in result.stdout and "pruning to 0.2 sparsity" in result.stdout
    graph = onnx.load(str(out / "ticket.onnx")).graph
    assert [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["output"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # batch is dynamic
    import onnxruntime as ort

    session = ort.InferenceSession(str(out / "ticket.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(None, {"input": np.zeros((7, 16), np.float32)})[0].shape == (7, 4)


def test_permute_handles_an_exported_linear_with_bias_and_says_what_it_did(tmp_path):
    torch.manual_seed(0)
    net, x = Net(), torch.randn(64, 16)
    report = sparsify.prune_torch(net, (x,), tmp_path / "p.onnx", permute=True)
    plain = sparsify.prune_torch(net, (x,), tmp_path / "q.onnx")
    # The permutation is exact (bias included): more magnitude kept means less error, never garbage.
    assert report.parity.outputs[0].rel_l2_error < plain.parity.outputs[0].rel_l2_error
    rows = {t.target.layer: t for t in report.rows}
    gemm_rows = [t for t in rows.values() if t.target.op_type == "Gemm"]
    assert len(gemm_rows) == 2  # nn.Linear exports as Gemm with its bias
    second = gemm_rows[1]
    assert not any("no unshared 2-D constant weight" in n for n in second.outcome.notes)
    assert second.outcome.permutation_gain is not None and second.outcome.permutation_gain > 0, second.outcome.notes
    table = report.format_table()
    assert "permute: 1 layer(s) permuted" in table and "activation does not come from a MatMul/Gemm" in table
    assert report.parity.verified
