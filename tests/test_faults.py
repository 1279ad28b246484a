"""Faults: read-only and full file systems (real tmpfs mounts), and a run that fails after
pruning.  None may leave a partial file or change anything the user had."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
from onnx import helper

from tests.builders import init, make_model, rand, save, vi


def cli(*args):
    return subprocess.run([sys.executable, "-m", "sparsify", *map(str, args)], capture_output=True, text=True, timeout=120)


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


@pytest.fixture
def tmpfs(tmp_path):
    """A fresh tmpfs mount; skipped (with the reason) where mounting is not allowed."""
    mounts = []

    def mount(size: str, read_only: bool = False):
        point = tmp_path / f"mnt{len(mounts)}"
        point.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {result.stderr.strip()}")
        mounts.append(point)
        return point

    yield mount
    for point in reversed(mounts):
        subprocess.run(["umount", "-l", str(point)], check=False)


def _model(tmp_path, k=512):
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
    return save(make_model([node], [vi("x", [1, k])], [vi("y", None)], [init(rand([k, 512]), "W")]), tmp_path / "m.onnx")


def test_read_only_output_folder(tmp_path, tmpfs):
    path = _model(tmp_path)
    before = _digest(tmp_path)
    ro = tmpfs("4m", read_only=True)
    result = cli(path, "-o", ro / "o.onnx")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Read-only file system" in result.stderr
    assert list(ro.iterdir()) == [] and _digest(tmp_path) == before


def test_full_disk_part_way(tmp_path, tmpfs):
    path = _model(tmp_path)  # ~1 MB of weights
    before = _digest(tmp_path)
    small = tmpfs("512k")
    result = cli(path, "-o", small / "o.onnx", "--report", tmp_path / "r.json")
    assert result.returncode == 2 and "No space left on device" in result.stderr, result.stderr
    assert list(small.iterdir()) == [] and _digest(tmp_path) == before


def test_full_disk_external_data(tmp_path, tmpfs):
    import onnx

    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
    model = make_model([node], [vi("x", [1, 512])], [vi("y", None)], [init(rand([512, 512]), "W")])
    src = tmp_path / "src"
    src.mkdir()
    onnx.save(model, str(src / "m.onnx"), save_as_external_data=True, location="m.data", size_threshold=0)
    small = tmpfs("256k")
    result = cli(src / "m.onnx", "-o", small / "o.onnx", "--report", tmp_path / "r.json")
    assert result.returncode == 2 and "No space left on device" in result.stderr, result.stderr
    assert list(small.iterdir()) == []


def test_failed_run_keeps_the_previous_output(tmp_path):
    path = _model(tmp_path, k=16)
    (tmp_path / "m.sparse.onnx").write_bytes(b"previous output")
    (tmp_path / "m.sparse.report.json").write_text("previous report")
    np.savez(tmp_path / "bad.npz", wrong_name=np.zeros((1, 16), np.float32))
    result = cli(path, "--inputs", tmp_path / "bad.npz")  # fails in verification, after pruning
    assert result.returncode == 2 and "no array for model input" in result.stderr
    assert (tmp_path / "m.sparse.onnx").read_bytes() == b"previous output"
    assert (tmp_path / "m.sparse.report.json").read_text() == "previous report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz", "m.onnx", "m.sparse.onnx", "m.sparse.report.json"]
