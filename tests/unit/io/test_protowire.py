"""The wire-level reader on its own: a skeleton plus the byte ranges it records gives back the
original model exactly (property test over generated models), and its field numbers are onnx's."""

from __future__ import annotations

import numpy as np
import onnx
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from sparsify.io import protowire
from sparsify.io.model import iter_tensors


def _restore(skeleton: onnx.ModelProto, data: bytes) -> onnx.ModelProto:
    restored = onnx.ModelProto()
    restored.CopyFrom(skeleton)
    for tensor in iter_tensors(restored):
        info = {e.key: e.value for e in tensor.external_data}
        if info.get("location") == protowire.EMBEDDED_LOCATION:
            offset, length = int(info["offset"]), int(info["length"])
            tensor.ClearField("external_data")
            tensor.ClearField("data_location")
            tensor.raw_data = data[offset:offset + length]
    return restored


@st.composite
def models(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))

    def tensor(name):
        shape = draw(st.lists(st.integers(0, 5), min_size=0, max_size=3))
        dtype = draw(st.sampled_from([np.float32, np.float16, np.int8, np.int64]))
        array = rng.standard_normal(shape).astype(dtype) if shape else np.array(1, dtype)
        t = numpy_helper.from_array(array, name)
        if draw(st.booleans()) and dtype == np.float32:  # typed fields instead of raw_data
            t = helper.make_tensor(name, TensorProto.FLOAT, array.shape, array.ravel().tolist())
        return t

    inits = [tensor(f"W{i}") for i in range(draw(st.integers(0, 4)))]
    nodes = [helper.make_node("Constant", [], [f"c{i}"], value=tensor(f"k{i}")) for i in range(draw(st.integers(0, 3)))]
    if draw(st.booleans()):  # a subgraph holding its own initializer
        branch = helper.make_graph([helper.make_node("Identity", ["s"], ["o"])], "b", [], [helper.make_tensor_value_info("o", 1, None)],
                                   [tensor("s")])
        nodes.append(helper.make_node("If", ["cond"], ["out"], then_branch=branch, else_branch=branch))
    graph = helper.make_graph(nodes, "g", [], [], inits, doc_string=draw(st.text(max_size=20)))
    model = helper.make_model(graph, producer_name=draw(st.text(max_size=10)))
    if draw(st.booleans()):
        model.functions.append(helper.make_function("local", "f", ["a"], ["b"],
                                                    [helper.make_node("Constant", [], ["b"], value=tensor("fk"))],
                                                    [helper.make_opsetid("", 21)]))
    return model


@settings(max_examples=150, deadline=None)
@given(models())
def test_skeleton_plus_byte_ranges_is_the_original_model(model):
    data = model.SerializeToString()
    skeleton = onnx.ModelProto()
    skeleton.ParseFromString(protowire.strip_raw_data(data))
    assert not any(t.HasField("raw_data") for t in iter_tensors(skeleton))  # no weight bytes in the skeleton
    assert _restore(skeleton, data).SerializeToString() == data


def test_field_numbers_are_onnxs():
    assert protowire._RAW_DATA == 9 and protowire._EXTERNAL_DATA == 13 and protowire._DATA_LOCATION == 14
    assert protowire._CHILDREN[protowire._MODEL] == {7: protowire._GRAPH, 25: protowire._FUNCTION}
