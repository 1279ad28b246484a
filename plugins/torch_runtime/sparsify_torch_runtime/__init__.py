"""A torch runtime for 2:4-pruned models (a sparsify plugin).

    from sparsify_torch_runtime import convert, GraphedModel
    fast, decisions = convert(model.half().cuda(), example_inputs)   # 2:4 Linear -> cuSPARSELt where faster
    run = GraphedModel(fast, example_inputs)                          # one CUDA graph per input shape

Needs only torch (no ONNX, no sparsify import) so that the GPU benchmark can use it on a bare
machine.  ``torch._cslt_*`` needs a CUDA build of torch with cuSPARSELt and an Ampere-or-newer GPU;
everywhere else every layer stays dense and its decision says why.
"""

from __future__ import annotations

from sparsify_torch_runtime.convert import LayerDecision, convert, format_decisions
from sparsify_torch_runtime.graphs import GraphedModel
from sparsify_torch_runtime.kernel import cusparselt_unavailable_reason, is_2to4_rows
from sparsify_torch_runtime.layers import SparseLinear

__all__ = ["GraphedModel", "LayerDecision", "SparseLinear", "convert", "cusparselt_unavailable_reason",
           "format_decisions", "is_2to4_rows"]
