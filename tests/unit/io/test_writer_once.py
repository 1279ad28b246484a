"""The writer writes every output byte once: pruned payloads when they are made, everything
else copied when it finishes; the output is the same file either way (embedded and external)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

import sparsify
from sparsify.io import writer as writer_module
from tests.builders import init, make_model, rand, save, vi, weights


def _model(tmp_path, external: bool):
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["a"], name="mm1"),
             helper.make_node("MatMul", ["a", "W2"], ["b"], name="mm2"),
             helper.make_node("Add", ["b", "bias"], ["y"])]
    model = make_model(nodes, [vi("x", [2, 64])], [vi("y", None)],
                       [init(rand([64, 512], 1), "W1"), init(rand([512, 32], 2), "W2"), init(rand([32], 3), "bias")])
    path = tmp_path / "m.onnx"
    if external:
        onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location="m.onnx.data",
                  size_threshold=0)
        return path
    return save(model, path)


def _count_writes(monkeypatch):
    written = {"pwrite": 0, "copy": 0}
    real_pwrite, real_copy = writer_module.os.pwrite, writer_module._copy_range

    def pwrite(fd, data, offset):
        n = real_pwrite(fd, data, offset)
        written["pwrite"] += n
        return n

    def copy(src, dst, src_offset, dst_offset, length):
        written["copy"] += length
        return real_copy(src, dst, src_offset, dst_offset, length)

    monkeypatch.setattr(writer_module.os, "pwrite", pwrite)
    monkeypatch.setattr(writer_module, "_copy_range", copy)
    return written


def test_embedded_output_bytes_are_written_once(tmp_path, monkeypatch):
    path = _model(tmp_path, external=False)
    written = _count_writes(monkeypatch)
    sparsify.prune(path, output=tmp_path / "o.onnx", verify=False)
    pruned_bytes = (64 * 512 + 512 * 32) * 4
    assert written["pwrite"] == pruned_bytes
    assert written["copy"] + written["pwrite"] == path.stat().st_size == (tmp_path / "o.onnx").stat().st_size
    out, src = weights(tmp_path / "o.onnx"), weights(path)
    np.testing.assert_array_equal(out["bias"], src["bias"])
    assert np.count_nonzero(out["W1"]) == out["W1"].size // 2


def test_external_data_bytes_are_written_once(tmp_path, monkeypatch):
    path = _model(tmp_path, external=True)
    written = _count_writes(monkeypatch)
    report = sparsify.prune(path, output=tmp_path / "o.onnx", verify=False)
    data = report.output_data_file
    assert data is not None
    pruned_bytes = (64 * 512 + 512 * 32) * 4
    assert written["pwrite"] == pruned_bytes and written["copy"] == 32 * 4  # the bias: copied, never rewritten
    out = weights(tmp_path / "o.onnx")
    np.testing.assert_array_equal(out["bias"], weights(path)["bias"])


def test_read_back_returns_what_replace_wrote(tmp_path):
    from sparsify.io.model import open_model
    from sparsify.io.publish import Publication
    from sparsify.io.writer import ModelWriter

    for external in (False, True):
        folder = tmp_path / ("ext" if external else "emb")
        folder.mkdir()
        loaded = open_model(_model(folder, external))
        w1 = next(t for t in loaded.tensors if t.name == "W1")
        new = np.zeros((64, 512), np.float32).view(np.uint32)
        new[::2] = 7
        publication = Publication()
        try:
            with ModelWriter(loaded, folder / "o.onnx", publication) as writer:
                writer.replace(w1, new)
                assert writer.read_back(w1) == new.tobytes()
                writer.finish()
        finally:
            publication.discard()
