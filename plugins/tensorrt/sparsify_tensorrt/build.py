"""The engine build itself, through Polygraphy's TensorRT loaders (needs TensorRT and a GPU;
type-checked against tensorrt-stubs, not run in this repository's CI)."""

from __future__ import annotations

import io
import logging
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path

from sparsify.errors import MissingComponent

__all__ = ["BuildOptions", "build_engine", "tensorrt_major"]

logger = logging.getLogger(__name__)


@dataclass
class BuildOptions:
    precision: str = "fp16"
    dense: bool = False
    workspace_mib: int | None = None
    timing_cache: Path | None = None
    shapes: dict[str, tuple[list[int], list[int], list[int]]] | None = None  # name -> (min, opt, max)


def tensorrt_major() -> int:
    try:
        import tensorrt as trt
    except ImportError:
        raise MissingComponent("TensorRT is not installed: pip install 'sparsify-tensorrt[gpu]' "
                               "or use the docker/Dockerfile.tensorrt image") from None
    return int(trt.__version__.split(".")[0])


def build_engine(onnx_path: Path, plan_path: Path, options: BuildOptions) -> str:
    """Build and save the engine; returns TensorRT's verbose log (for the sparsity lines)."""
    major = tensorrt_major()
    import tensorrt as trt
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath, Profile, SaveEngine
    from polygraphy.logger import G_LOGGER

    strongly_typed = major >= 11  # TensorRT 11 has no weak typing: precision lives in the graph
    network = NetworkFromOnnxPath(str(onnx_path), strongly_typed=strongly_typed)
    profiles = None
    if options.shapes:
        profile = Profile()
        for name, (low, opt, high) in options.shapes.items():
            profile.add(name, min=low, opt=opt, max=high)
        profiles = [profile]
    weak_flags = {} if strongly_typed else {"fp16": options.precision == "fp16", "bf16": options.precision == "bf16"}
    config = CreateConfig(
        sparse_weights=not options.dense, profiles=profiles,
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: options.workspace_mib << 20} if options.workspace_mib else None,
        load_timing_cache=str(options.timing_cache) if options.timing_cache else None,
        profiling_verbosity=trt.ProfilingVerbosity.DETAILED, **weak_flags,
    )
    log = io.StringIO()
    G_LOGGER.module_severity = G_LOGGER.EXTRA_VERBOSE
    with redirect_stdout(log):
        SaveEngine(EngineBytesFromNetwork(network, config=config), str(plan_path))()
    return log.getvalue()
