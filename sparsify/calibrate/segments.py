"""Sequential calibration in one forward pass: the model cut into segments at the stages.

SparseGPT's procedure measures each stage's input on the model whose earlier layers are already
pruned.  Running the whole model again for every stage costs a forward pass per stage (and a
serialisation of the whole model per session).  Here the node list (topologically sorted, as
ONNX requires) is cut where each stage's first layer sits; segment ``i`` holds the nodes between
two cuts.  Each calibration sample's *live* tensors (computed before a cut, read after it) flow
from one segment to the next: a segment runs once per sample, when the stages before it are
pruned, so the whole calibration costs about one forward pass, and each session holds only its
own segment's weights.  The live tensors wait in an ``ActivationStore``: in memory up to its
limit, memory-mapped files beyond it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from sparsify.calibrate.activation_store import ActivationStore, SpilledSample
from sparsify.calibrate.session import calibration_options
from sparsify.calibrate.streamed import StreamedModel
from sparsify.io.graph_walk import subgraphs

__all__ = ["SegmentedRun"]


def _reads(node: onnx.NodeProto) -> set[str]:
    """Names a node reads: its inputs and the outer-scope names its subgraphs use."""
    names = {name for name in node.input if name}
    graphs = list(subgraphs(node))
    while graphs:
        graph = graphs.pop()
        local = {i.name for i in graph.input} | {t.name for t in graph.initializer}
        for inner in graph.node:
            names.update(n for n in inner.input if n and n not in local)
            local.update(inner.output)
            graphs.extend(subgraphs(inner))
    return names


class SegmentedRun:
    """Carry calibration samples through ``model``'s graph segment by segment.

    ``cuts``: increasing node ordinals (the first node of each stage).  :meth:`advance` runs the
    next segment on every sample with the model's *current* weights and returns, per sample, the
    live tensors at the next cut (each stage's activations among them), held by ``store``.
    """

    def __init__(self, model: StreamedModel, cuts: Iterable[int], feeds: list[dict[str, np.ndarray]],
                 store: ActivationStore):
        self.model = model
        self.store = store
        graph = model.proto.graph
        self.nodes = list(graph.node)
        self.bounds = [0, *cuts]
        self.stored = {t.name for t in graph.initializer}
        self._reads = [_reads(node) for node in self.nodes]
        # the last node ordinal that reads each name: a value is live at a cut while a node at
        # or after the cut still reads it
        self._last_read: dict[str, int] = {}
        for ordinal, names in enumerate(self._reads):
            for name in names:
                self._last_read[name] = ordinal
        self.segment = 0  # segments run so far
        self.values: list[Mapping[str, Any]] = [dict(feed) for feed in feeds]

    def _read_from(self, name: str, cut: int) -> bool:
        return self._last_read.get(name, -1) >= cut

    def _live_after(self, cut: int, values: Mapping[str, Any]) -> Mapping[str, Any]:
        if isinstance(values, SpilledSample):  # names dropped without reading the files
            return values.only(lambda name: self._read_from(name, cut))
        return {name: value for name, value in values.items() if self._read_from(name, cut)}

    def _segment_model(self, start: int, stop: int, inputs: Mapping[str, Any]) -> tuple[onnx.ModelProto, list[str]]:
        proto = self.model.proto
        nodes = self.nodes[start:stop]
        produced = {out for node in nodes for out in node.output if out}
        read = set().union(*self._reads[start:stop]) if nodes else set()
        outputs = sorted(name for name in produced if self._read_from(name, stop))
        # written in place into the model: each weight's bytes are copied once, not per container
        model = onnx.ModelProto(ir_version=proto.ir_version)
        model.opset_import.extend(proto.opset_import)
        graph = model.graph
        graph.name = f"segment_{start}_{stop}"
        for node in nodes:
            self.model.node(node, into=graph.node.add())
        for name in sorted(read & self.stored - set(inputs)):
            self.model.initializer(name, into=graph.initializer.add())
        graph.input.extend(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(inputs[name].dtype), None)
                           for name in sorted(read - produced) if name in inputs)
        graph.output.extend(onnx.ValueInfoProto(name=name) for name in outputs)
        for function in proto.functions:
            copy = model.functions.add()
            copy.CopyFrom(function)
            del copy.node[:]
            for node in function.node:
                self.model.node(node, into=copy.node.add())
        return model, outputs

    def advance(self) -> list[Mapping[str, Any]]:
        """Run the next segment on every sample; the live tensors at the next cut, per sample."""
        if self.segment + 1 >= len(self.bounds):
            raise AssertionError("internal error: no segment left to run")
        start, stop = self.bounds[self.segment], self.bounds[self.segment + 1]
        self.segment += 1
        if start == stop or not self.values:
            self.values = [self._live_after(stop, v) for v in self.values]  # the same arrays, fewer names
            return self.values
        model, outputs = self._segment_model(start, stop, self.values[0])
        session = ort.InferenceSession(model.SerializeToString(), calibration_options(),
                                       providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        self.store.begin()
        for values in self.values:
            results = session.run(outputs, {name: values[name] for name in names}) if outputs else []
            merged = {**values, **dict(zip(outputs, results, strict=True))}
            self.store.add(self._live_after(stop, merged))
        self.values = self.store.end()
        return self.values

    def close(self) -> None:
        """Drop the samples and remove any file the store wrote."""
        self.values = []
        self.store.close()
