"""Masks found in PyTorch land on exactly the right ONNX weights, for both exporters and the
layouts they use (nn.Linear as MatMul with a transposed initializer or Gemm(transB=1),
Conv1d/Conv2d with groups).  Proven by the exported model's zeros, not by names."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import pytest

import sparsify
from sparsify.errors import UsageError
from tests.builders import is_nm

torch = pytest.importorskip("torch")
nn = torch.nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv1d(8, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1, groups=2)
        self.fc1 = nn.Linear(32 * 4, 64)
        self.fc2 = nn.Linear(64, 12, bias=False)  # no bias: exported as MatMul, not Gemm

    def forward(self, x):
        h = torch.relu(self.conv1(x))  # [B, 16, 16]
        h = torch.relu(self.conv2(h.reshape(-1, 16, 4, 4)))  # [B, 32, 4, 4]
        h = nn.functional.adaptive_avg_pool2d(h, 2).flatten(1)  # [B, 128]
        return self.fc2(torch.relu(self.fc1(h)))


def _nm_masks(module):
    """A 2:4 mask per weight along its input (reduction) dimension: dim 1 of every weight."""
    masks = {}
    for name, p in module.named_parameters():
        if p.ndim < 2:
            continue
        w = p.detach().abs()
        groups = w.transpose(1, -1).reshape(-1, 4) if w.ndim > 2 else w.reshape(-1, 4)
        keep = torch.zeros_like(groups, dtype=torch.bool)
        keep.scatter_(1, groups.topk(2, dim=1).indices, True)
        shape = w.transpose(1, -1).shape if w.ndim > 2 else w.shape
        masks[name] = keep.reshape(shape).transpose(1, -1).contiguous() if w.ndim > 2 else keep.reshape(shape)
    return masks


def _find(model: onnx.ModelProto, expected: np.ndarray) -> list[str]:
    found = []
    for t in model.graph.initializer:
        value = onnx.numpy_helper.to_array(t)
        if (value.shape == expected.shape and np.array_equal(value, expected)) or \
                (expected.ndim == 2 and value.shape == expected.T.shape and np.array_equal(value, expected.T)):
            found.append(t.name)
    return found


EXPORTERS = ["legacy"] + (["dynamo"] if importlib.util.find_spec("onnxscript") else [])


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_torch_masks_land_on_the_right_onnx_weights(tmp_path, exporter):
    torch.manual_seed(0)
    module = Net().eval()
    masks = _nm_masks(module)
    x = torch.randn(2, 8, 16)
    report = sparsify.prune_torch(module, (x,), tmp_path / "net.onnx", masks=masks, exporter=exporter)
    sparse = onnx.load(str(tmp_path / "net.onnx"))
    for name, p in module.named_parameters():
        if name not in masks:
            continue
        expected = (p.detach() * masks[name]).numpy()
        assert len(_find(sparse, expected)) == 1, name  # its zeros are exactly the PyTorch mask's
    assert {t.outcome.status for t in report.rows if t.target.op_type in ("Gemm", "MatMul", "Conv")} == {"pruned"}
    assert all(is_nm(onnx.numpy_helper.to_array(t), 1) or is_nm(onnx.numpy_helper.to_array(t), 0)
               for t in sparse.graph.initializer if t.name in {r.target.weight for r in report.rows})
    assert report.parity.verified
    # the sparse ONNX computes what the masked PyTorch module computes
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name in masks:
                p.mul_(masks[name])
        reference = module(x).numpy()
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "net.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-5)


def test_magnitude_without_masks(tmp_path):
    report = sparsify.prune_torch(Net(), (torch.randn(1, 8, 16),), tmp_path / "n.onnx")
    assert report.count("pruned") == 4


def test_bad_torch_masks(tmp_path):
    module = Net()
    x = (torch.randn(1, 8, 16),)
    with pytest.raises(UsageError, match="names no parameter"):
        sparsify.prune_torch(module, x, tmp_path / "a.onnx", masks={"nope.weight": torch.ones(1)})
    with pytest.raises(UsageError, match="has shape"):
        sparsify.prune_torch(module, x, tmp_path / "a.onnx", masks={"fc1.weight": torch.ones(3, 3)})
    assert not (tmp_path / "a.onnx").exists()


@pytest.mark.skipif(not importlib.util.find_spec("onnxscript"), reason="the .pt2 front end uses the dynamo exporter (onnxscript)")
def test_pt2_archive_through_the_cli(tmp_path):
    import subprocess
    import sys

    torch.manual_seed(0)
    program = torch.export.export(Net().eval(), (torch.randn(2, 8, 16),))
    torch.export.save(program, str(tmp_path / "net.pt2"))
    result = subprocess.run([sys.executable, "-m", "sparsify", str(tmp_path / "net.pt2"), "--pattern", "2:4"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "net.sparse.onnx").exists() and "4 pruned" in result.stdout
    assert "parity (ONNX Runtime" in result.stdout and "not verified" not in result.stdout
    (tmp_path / "bad.pt2").write_bytes(b"not a zip archive")
    bad = subprocess.run([sys.executable, "-m", "sparsify", str(tmp_path / "bad.pt2")], capture_output=True, text=True)
    assert bad.returncode == 2 and "not a loadable torch.export archive" in bad.stderr


@pytest.mark.skipif(not importlib.util.find_spec("onnxscript"), reason="the .pt2 front end uses the dynamo exporter (onnxscript)")
def test_pt2_with_masks_keyed_by_parameter_name(tmp_path):
    import subprocess
    import sys

    torch.manual_seed(0)
    module = Net().eval()
    program = torch.export.export(module, (torch.randn(2, 8, 16),))
    torch.export.save(program, str(tmp_path / "net.pt2"))
    masks = {k: v.numpy() for k, v in _nm_masks(module).items()}
    np.savez(tmp_path / "masks.npz", **masks)
    result = subprocess.run([sys.executable, "-m", "sparsify", str(tmp_path / "net.pt2"), "--masks", str(tmp_path / "masks.npz")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    sparse = onnx.load(str(tmp_path / "net.sparse.onnx"))
    for name, p in module.named_parameters():
        if name in masks:
            assert len(_find(sparse, p.detach().numpy() * masks[name])) == 1, name
