"""The ``sparsify triton`` subcommand."""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

from sparsify.plugin_api import MissingComponent, OutputError, UsageError, open_model, publish_folder, stage_folder
from sparsify_triton.config import config_from_model, render_config

__all__ = ["plugin"]


class TritonPlugin:
    name = "triton"
    description = "export a TensorRT plan or ONNX model into a Triton Inference Server model repository"

    def requires(self) -> list[str]:
        return []

    def add_parser(self, sub, info) -> None:
        p = sub.add_parser("triton", help=self.description, description=self.description)
        p.add_argument("model", help="the ONNX model the plan was built from (its signature drives the config)")
        p.add_argument("--repository", required=True, help="Triton model repository folder")
        p.add_argument("--plan", help="TensorRT engine to serve (default: serve the ONNX with onnxruntime)")
        p.add_argument("--name", help="model name in the repository (default: the model file's stem)")
        p.add_argument("--max-batch-size", type=int, help="0 = no batching (default: 8 when every I/O has a dynamic first dim)")
        p.add_argument("--model-version", type=int, default=1, help="version folder (default 1)")
        p.add_argument("--force", action="store_true", help="replace an existing model folder")
        if info.available:
            p.set_defaults(run=export)
        else:
            p.set_defaults(run=lambda _args: (_ for _ in ()).throw(MissingComponent(f"triton plugin: {info.reason}")))


def _refuse_replacing_inputs(target: Path, reads: list[Path]) -> None:
    """--force replaces the model folder: never when a file this run reads lives inside it."""
    if not target.exists():
        return
    root = target.resolve()
    for path in reads:
        resolved = Path(path).resolve()
        if resolved == root or root in resolved.parents:
            raise UsageError(f"{target}: replacing it would delete {path}, which this run reads; export to another name")


def export(args: argparse.Namespace) -> int:
    model_path = Path(args.model)
    loaded = open_model(model_path)
    name = args.name or re.sub(r"(\.sparse)?\.onnx$", "", model_path.name)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise UsageError(f"invalid model name {name!r}: use letters, digits, '_', '.', '-'")
    platform = "tensorrt_plan" if args.plan else "onnxruntime_onnx"
    if args.plan and not Path(args.plan).is_file():
        raise UsageError(f"{args.plan}: no such plan file")
    if loaded.uses_external_data and not args.plan:
        raise UsageError("serving an external-data ONNX needs its data file beside it: give --plan, or export embedded")
    config = config_from_model(loaded.skeleton, name, platform, args.max_batch_size)
    repository = Path(args.repository)
    if repository.exists() and not repository.is_dir():
        raise OutputError(f"{repository}: exists and is not a folder")
    try:
        repository.mkdir(parents=True, exist_ok=True)  # a new repository is created
    except OSError as exc:
        raise OutputError(f"{repository}: cannot create the repository folder: {exc.strerror or exc}") from None
    target = repository / name
    if target.exists() and not args.force:
        raise OutputError(f"{target}: already exists (use --force to replace it)")
    _refuse_replacing_inputs(target, [model_path, *loaded.external_files, *([Path(args.plan)] if args.plan else [])])
    try:
        staging = stage_folder(target)
    except OSError as exc:
        raise OutputError(f"{target}: cannot write: {exc.strerror or exc}") from None
    try:
        version = staging / str(args.model_version)
        version.mkdir()
        shutil.copyfile(args.plan or model_path, version / ("model.plan" if args.plan else "model.onnx"))
        (staging / "config.pbtxt").write_text(render_config(config))
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise OutputError(f"{target}: cannot write: {exc.strerror or exc}") from None
    publish_folder(staging, target)  # the old folder (--force) or the new one, never a mix
    print(f"wrote {target}/config.pbtxt and {target}/{args.model_version}/"
          f"{'model.plan' if args.plan else 'model.onnx'} (platform {platform}, max_batch_size {config.max_batch_size})")
    return 0


plugin = TritonPlugin()
