"""TensorRT engine build step (a sparsify plugin): ``sparsify build``.

What runs without TensorRT (and is tested on the CPU): precision conversion of the ONNX graph,
parsing TensorRT's sparsity log lines, and matching TensorRT layer names back to the pruned
layers.  The builder itself (``build.py``, Polygraphy loaders) needs TensorRT and a GPU.
"""

from sparsify_tensorrt.plugin import plugin

__all__ = ["plugin"]
