"""The external-data writer writes each output byte once, in the background, and never leaves
a partial output when a background write fails."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest
from onnx import helper

import sparsify
from sparsify.errors import OutputError
from tests.builders import init, is_nm, make_model, rand, reference_prune, vi, weights


def _model(tmp_path):
    already = reference_prune(rand([128, 64], 4), axis=0)  # already 2:4: nothing to write for it
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["a"]), helper.make_node("MatMul", ["a", "W2"], ["b"]),
             helper.make_node("MatMul", ["b", "W3"], ["c"]), helper.make_node("Add", ["c", "bias"], ["y"])]
    inits = [init(rand([64, 512], 1), "W1"), init(rand([512, 128], 2), "W2"), init(already, "W3"),
             init(rand([64], 3), "bias")]
    model = make_model(nodes, [vi("x", [2, 64])], [vi("y", None)], inits)
    path = tmp_path / "m.onnx"
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location="m.onnx.data",
              size_threshold=0)
    return path, {t.name: onnx.numpy_helper.to_array(t) for t in inits}


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def test_each_output_byte_is_written_once(tmp_path, monkeypatch):
    from sparsify.io import writer

    path, original = _model(tmp_path)
    written = []
    real_pwrite, real_copy = writer.os.pwrite, writer.os.copy_file_range

    def pwrite(fd, data, offset):
        done = real_pwrite(fd, data, offset)
        written.append((offset, done))
        return done

    def copy_file_range(src, dst, count, offset_src, offset_dst):
        done = real_copy(src, dst, count, offset_src, offset_dst)
        written.append((offset_dst, done))
        return done

    monkeypatch.setattr(writer.os, "pwrite", pwrite)
    monkeypatch.setattr(writer.os, "copy_file_range", copy_file_range)
    report = sparsify.prune(path, output=tmp_path / "o.onnx")
    data = sorted(tmp_path.glob("o.onnx.*.data"))
    assert len(data) == 1
    payload = sum(a.nbytes for a in original.values())
    # Every byte of every tensor once: no range written twice, nothing beyond the payloads.
    assert sum(length for _, length in written) == payload
    ends = sorted(written)
    assert all(a[0] + a[1] <= b[0] for a, b in zip(ends, ends[1:], strict=False))
    out = weights(tmp_path / "o.onnx")
    np.testing.assert_array_equal(out["W1"], reference_prune(original["W1"], axis=0))
    np.testing.assert_array_equal(out["W2"], reference_prune(original["W2"], axis=0))
    np.testing.assert_array_equal(out["W3"], original["W3"])
    np.testing.assert_array_equal(out["bias"], original["bias"])
    assert all(is_nm(out[name], 0) for name in ("W1", "W2", "W3"))
    assert {row.target.weight: row.outcome.status.value for row in report.rows}["W3"] == "already_nm"


@pytest.mark.parametrize("failing", ["pwrite", "copy_file_range"])
def test_a_failing_background_write_leaves_nothing(tmp_path, monkeypatch, failing):
    from sparsify.io import writer

    path, _ = _model(tmp_path)
    before = _digest(tmp_path)

    def broken(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer.os, failing, broken)
    if failing == "copy_file_range":  # its fallback writes with pwrite: make that fail too
        monkeypatch.setattr(writer.os, "pwrite", broken)
    with pytest.raises(OutputError, match="No space left"):
        sparsify.prune(path, output=tmp_path / "o.onnx")
    assert _digest(tmp_path) == before  # no output, no staging file, input unchanged


def test_replacing_a_tensor_twice_keeps_the_last(tmp_path):
    from sparsify.io.model import open_model
    from sparsify.io.publish import Publication
    from sparsify.io.writer import ModelWriter

    path, _ = _model(tmp_path)
    loaded = open_model(path)
    w1 = next(t for t in loaded.tensors if t.name == "W1")
    first, second = np.full((64, 512), 3, np.uint32), np.full((64, 512), 5, np.uint32)
    publication = Publication()
    try:
        with ModelWriter(loaded, tmp_path / "o.onnx", publication) as out:
            out.replace(w1, first)
            out.replace(w1, second)
            assert out.read_back(w1) == second.tobytes()
            out.finish()
    finally:
        publication.discard()
