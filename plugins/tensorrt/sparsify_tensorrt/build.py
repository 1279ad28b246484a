"""The engine build itself, through Polygraphy's TensorRT loaders.  Needs TensorRT and a GPU:
type-checked against tensorrt-stubs (mypy, in the tests) but not yet run against a real
TensorRT.  Everything it decides (typing, flags,
profiles) comes from ``options.py``; everything it produces (log, inspector JSON) is parsed by
``buildlog.py`` / ``inspector.py``; both are tested on the CPU."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path

from sparsify.plugin_api import MissingComponent, Publication
from sparsify_tensorrt.errors import translate_build_error
from sparsify_tensorrt.options import BuildOptions, config_arguments, typing_plan

__all__ = ["BuildResult", "build_engine", "tensorrt_major", "trt_runner"]


@dataclass
class BuildResult:
    plan_path: Path
    engine_bytes: int
    log: str  # TensorRT's verbose build log (the "(Sparsity)" lines)
    inspector_json: str  # IEngineInspector.get_engine_information(JSON), ProfilingVerbosity.DETAILED


def tensorrt_major() -> int:
    try:
        import tensorrt as trt
    except ImportError:
        raise MissingComponent("TensorRT is not installed: pip install 'sparsify-tensorrt[gpu]' on a machine with an "
                               "NVIDIA GPU, or use the docker/Dockerfile.tensorrt image") from None
    return int(trt.__version__.split(".")[0])


def build_engine(onnx_path: Path, plan_path: Path, options: BuildOptions) -> BuildResult:
    """Build, save (atomically) and inspect one engine; ``onnx_path`` is already typed as
    ``typing_plan`` asks (the caller converts the graph for TensorRT 11)."""
    import tensorrt as trt
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, EngineFromBytes, NetworkFromOnnxPath
    from polygraphy.logger import G_LOGGER

    plan = typing_plan(tensorrt_major(), options.precision, options.has_qdq)
    network = NetworkFromOnnxPath(str(onnx_path), strongly_typed=plan.strongly_typed)
    config = CreateConfig(
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: options.workspace_mib << 20} if options.workspace_mib else None,
        profiling_verbosity=trt.ProfilingVerbosity.DETAILED, **config_arguments(options, plan),
    )
    log = io.StringIO()
    G_LOGGER.module_severity = G_LOGGER.EXTRA_VERBOSE
    # The timing cache is updated in place by design: Polygraphy saves it to a staging file,
    # published with the engine, so a failed build never leaves a half-written cache.
    publication = Publication()
    cache = publication.stage(options.timing_cache) if options.timing_cache else None
    try:
        try:
            with redirect_stdout(log):
                engine_bytes = bytes(EngineBytesFromNetwork(
                    network, config=config, save_timing_cache=str(cache) if cache else None)())
        except Exception as exc:  # noqa: BLE001 - Polygraphy/TensorRT raise many types; each becomes one line
            raise translate_build_error(exc, log.getvalue()) from None
        staged_plan = publication.stage(plan_path)
        staged_plan.write_bytes(engine_bytes)
        publication.add(staged_plan, plan_path)
        if cache is not None and options.timing_cache is not None and cache.stat().st_size:
            publication.add(cache, options.timing_cache)
        publication.publish()
    finally:
        publication.discard()
    engine: trt.ICudaEngine = EngineFromBytes(engine_bytes)()
    inspector: trt.EngineInspector = engine.create_engine_inspector()
    info = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    return BuildResult(plan_path, len(engine_bytes), log.getvalue(), info)


def trt_runner(plan_path: Path, name: str):
    """A Polygraphy TrtRunner for a saved engine (use as a context manager)."""
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    return TrtRunner(EngineFromBytes(plan_path.read_bytes()), name=name)
