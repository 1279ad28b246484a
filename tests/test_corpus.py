"""Sweep real models nobody here wrote through the pass and the audit.

Default run: the simple / pytorch-converted / pytorch-operator suites and SqueezeNet.
``-m corpus_full``: every ``light`` zoo architecture (AlexNet ... VGG-19); CI runs both.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import sparsify
from tests.builders import is_nm
from tests.corpus import LIGHT_FAST, light_models, materialise, model_id, recorded_inputs, small_models


def _session(path):
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - "ORT cannot run it" is a fact about the input here
        return None


def _feeds(session, recorded):
    if recorded is not None:
        return recorded
    rng = np.random.default_rng(0)
    feeds = {}
    for info in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in info.shape]
        if "float" in info.type:
            feeds[info.name] = rng.standard_normal(shape).astype(np.float16 if "16" in info.type else np.float32)
        elif "int64" in info.type:
            feeds[info.name] = np.zeros(shape, np.int64)
        elif "int32" in info.type:
            feeds[info.name] = np.zeros(shape, np.int32)
        elif "bool" in info.type:
            feeds[info.name] = np.zeros(shape, bool)
        else:
            return None
    return feeds


def _expected_axis(model: onnx.ModelProto, row) -> int | None:
    """Independent axis rule for weights that feed the op directly."""
    if row.target.path:
        return None
    node = next(n for n in model.graph.node if (n.name or "") == row.target.layer or row.target.layer.endswith(f"_{list(model.graph.node).index(n)}"))
    rank = len(row.target.weight_shape)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Conv":
        return 1
    if node.op_type == "MatMul":
        return 0 if rank == 1 else (rank - 2 if row.target.input_index == 1 else rank - 1)
    if row.target.input_index == 1:
        return 1 if attrs.get("transB", 0) else 0
    return 0 if attrs.get("transA", 0) else 1


def sweep(src, tmp_path):
    dense_session = _session(src)
    out = tmp_path / "out.onnx"
    report = sparsify.prune(src, output=out)  # any non-SparsifyError exception fails the test
    onnx.checker.check_model(str(out))
    sparse_model = onnx.load(str(out))
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in sparse_model.graph.initializer}
    for node in sparse_model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].HasField("t"):
            weights[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
    pruned = [t for t in report.rows if t.outcome.status == "pruned"]
    for row in pruned:
        assert is_nm(weights[row.target.weight], row.target.axis), (row.target.layer, row.target.weight)
        expected = _expected_axis(onnx.load(str(src), load_external_data=False), row)
        assert expected is None or expected == row.target.axis, (row.target.layer, expected, row.target.axis)
    for row in report.rows:
        assert row.outcome.status in ("pruned", "already_nm", "skipped")
        assert row.outcome.status != "skipped" or row.outcome.reason, row.target.layer
    if dense_session is not None:
        feeds = _feeds(dense_session, recorded_inputs(src))
        sparse_session = _session(out)
        assert sparse_session is not None, "the sparse model no longer loads in ONNX Runtime"
        if feeds is not None:
            dense_out, sparse_out = dense_session.run(None, feeds), sparse_session.run(None, feeds)
            assert [o.shape for o in dense_out] == [o.shape for o in sparse_out]
            if not pruned:
                for d, s in zip(dense_out, sparse_out, strict=True):
                    np.testing.assert_array_equal(d, s)
    audit = sparsify.check(out)
    assert audit.count("non_compliant") == 0
    assert {t.target.layer for t in audit.rows if t.outcome.status == "compliant"} >= {t.target.layer for t in pruned}
    return report


@pytest.mark.parametrize("src", small_models(), ids=model_id)
def test_backend_models(tmp_path, src):
    report = sweep(src, tmp_path)
    again = sparsify.prune(tmp_path / "out.onnx", output=tmp_path / "again.onnx", verify=False)
    assert (tmp_path / "again.onnx").read_bytes() == (tmp_path / "out.onnx").read_bytes()
    assert again.count("pruned") == 0
    assert report.count("pruned") + report.count("already_nm") + report.count("skipped") == len(report.rows)


def _light_params():
    return [_light_param(p) for p in light_models()]


def _light_param(path):
    marks = [] if path.stem in LIGHT_FAST else [pytest.mark.corpus_full]
    return pytest.param(path, id=path.stem, marks=marks)


@pytest.mark.parametrize("src", _light_params())
def test_zoo_architectures(tmp_path, src):
    model = materialise(src, tmp_path / "dense.onnx")
    report = sweep(model, tmp_path)
    assert report.count("pruned") > 0
    convs = [t for t in report.rows if t.target.op_type == "Conv"]
    assert all(t.outcome.status == "pruned" or t.outcome.reason for t in convs)


def test_corpus_is_present():
    assert len(small_models()) > 100 and len(light_models()) == 9
