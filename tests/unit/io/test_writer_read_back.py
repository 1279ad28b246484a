"""The writer hands back what it wrote (the data-aware pass reads pruned weights back from the
output instead of keeping them in memory)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from tests.builders import init, make_model, rand, save, vi


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
