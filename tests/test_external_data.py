"""External data in, external data out; atomic writes; the input never changes."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

import sparsify
from sparsify.errors import InputError, OutputError
from tests.builders import init, is_nm, make_model, rand, reference_prune, run, vi


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _two_layer(size=64):
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["a"], name="mm1"),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("MatMul", ["r", "W2"], ["y"], name="mm2")]
    inits = [init(rand([size, size], 1), "W1"), init(rand([size, 8], 2), "W2"), init(rand([3]), "tiny")]
    return make_model(nodes, [vi("x", [2, size])], [vi("y", [2, 8])], inits)


@pytest.mark.parametrize("one_file", [True, False])
def test_external_data_round_trip(tmp_path, one_file):
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    onnx.save(_two_layer(), src_dir / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=one_file,
              location="m.onnx.data" if one_file else None, size_threshold=0)
    before = _digest(src_dir)
    out = tmp_path / "m.sparse.onnx"
    report = sparsify.prune(src_dir / "m.onnx", output=out)
    assert _digest(src_dir) == before  # input model and its data untouched
    data_file = Path(report.output_data_file)
    assert data_file.exists() and data_file.parent == tmp_path
    assert re.fullmatch(r"m\.sparse\.onnx\.[0-9a-f]{16}\.data", data_file.name)  # named after its content
    sparse = onnx.load(str(out), load_external_data=False)
    locations = {e.value for t in sparse.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {data_file.name}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["src", "m.sparse.onnx", data_file.name,
                                                                 "m.sparse.report.json"])
    onnx.checker.check_model(str(out))
    loaded = onnx.load(str(out))
    w = {t.name: onnx.numpy_helper.to_array(t) for t in loaded.graph.initializer}
    dense = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(src_dir / "m.onnx")).graph.initializer}
    np.testing.assert_array_equal(w["W1"], reference_prune(dense["W1"], 0))
    np.testing.assert_array_equal(w["tiny"], dense["tiny"])
    assert report.parity.verified and report.parity.outputs[0].rel_l2_error > 0


def test_external_output_in_same_folder_never_collides(tmp_path):
    onnx.save(_two_layer(), tmp_path / "m.onnx", save_as_external_data=True, location="m.sparse.onnx.data",
              size_threshold=0)
    before = (tmp_path / "m.sparse.onnx.data").read_bytes()
    report = sparsify.prune(tmp_path / "m.onnx", output=tmp_path / "m.sparse.onnx")
    assert report.parity.verified and Path(report.output_data_file).name != "m.sparse.onnx.data"
    assert (tmp_path / "m.sparse.onnx.data").read_bytes() == before  # the input's data, never overwritten


def test_embedded_tensors_inside_external_model_stay_embedded(tmp_path):
    onnx.save(_two_layer(), tmp_path / "m.onnx", save_as_external_data=True, location="d.bin", size_threshold=1024)
    sparsify.prune(tmp_path / "m.onnx", output=tmp_path / "o.onnx")
    model = onnx.load(str(tmp_path / "o.onnx"), load_external_data=False)
    kinds = {t.name: t.data_location for t in model.graph.initializer}
    assert kinds["tiny"] == onnx.TensorProto.DEFAULT and kinds["W1"] == onnx.TensorProto.EXTERNAL
    x = rand([2, 64], 9)
    full = onnx.load(str(tmp_path / "o.onnx"))
    w1 = onnx.numpy_helper.to_array(full.graph.initializer[0])
    assert is_nm(w1, 0)
    assert run(tmp_path / "o.onnx", {"x": x})[0].shape == (2, 8)


def test_missing_external_file_is_input_error(tmp_path):
    onnx.save(_two_layer(), tmp_path / "m.onnx", save_as_external_data=True, location="d.bin", size_threshold=0)
    (tmp_path / "d.bin").unlink()
    with pytest.raises(InputError, match="missing"):
        sparsify.prune(tmp_path / "m.onnx", output=tmp_path / "o.onnx")
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("location", ["../escape.bin", "/etc/passwd", "sub/../../escape.bin"])
def test_external_location_outside_folder_refused(tmp_path, location):
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "escape.bin").write_bytes(b"\0" * 4096)
    model = _two_layer()
    tensor = model.graph.initializer[0]
    onnx.external_data_helper.set_external_data(tensor, location=location, offset=0, length=64 * 64 * 4)
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    (folder / "m.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(InputError, match="refused"):
        sparsify.prune(folder / "m.onnx", output=tmp_path / "o.onnx")


def test_external_data_shorter_than_declared(tmp_path):
    onnx.save(_two_layer(), tmp_path / "m.onnx", save_as_external_data=True, location="d.bin", size_threshold=0)
    data = tmp_path / "d.bin"
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(InputError):
        sparsify.prune(tmp_path / "m.onnx", output=tmp_path / "o.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.bin", "m.onnx"]


def test_failure_during_write_leaves_nothing(tmp_path, monkeypatch):
    from sparsify.io import writer

    onnx.save(_two_layer(), tmp_path / "m.onnx")
    before = _digest(tmp_path)

    def broken(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer.os, "pwrite", broken)
    with pytest.raises(OutputError, match="No space left"):
        sparsify.prune(tmp_path / "m.onnx", output=tmp_path / "o.onnx")
    assert _digest(tmp_path) == before  # no output, no temporary file, input unchanged
