"""The API for plugins (``sparsify build``, ``sparsify triton``, ``sparsify torch-runtime``).

A plugin imports only this module (``tests/test_layering.py`` checks it): everything here is
kept stable across internal refactors, and nothing else is.  docs/plugins.md shows how it is used.

- Errors, each with its exit code: ``UsageError`` (2), ``InputError`` (2), ``OutputError`` (2),
  ``GateFailed`` (3), ``MissingComponent`` (5), ``SparsifyError`` (their base).
- Models: ``open_model(path)`` parses an ONNX file's skeleton without loading its weights
  (``.skeleton``, ``.path``, ``.external_files``).
- Inputs: ``parse_input_shapes``, ``load_feeds`` (an .npz or {name: array}), ``random_feeds``.
- Parity: ``ParityResult``, ``compare_runs`` (per-output metrics over any runner's outputs),
  ``apply_gates`` (the same ``--max-rel-error`` / ``--min-top1-agreement`` gates as ``prune``).
- Files: ``check_write_paths`` + ``model_reads`` (an output may never be an input),
  ``Publication`` (stage files, publish them all or nothing), ``write_atomically`` (one file),
  ``stage_folder`` + ``publish_folder`` (a folder output: the old one or the new one, never a mix),
  ``write_report`` (a report dict: JSON-safe, schema-checked when reports are validated, atomic).
- Output: ``format_table(header, rows)`` (the terminal tables' one format).
- Recipes: ``load_recipe("module:function")`` for plugins that take a PyTorch model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sparsify.errors import GateFailed, InputError, MissingComponent, OutputError, SparsifyError, UsageError
from sparsify.io.jsonsafe import json_safe
from sparsify.io.model import LoadedModel, open_model
from sparsify.io.paths import check_write_paths, model_reads
from sparsify.io.publish import Publication, publish_folder, stage_folder, write_atomically
from sparsify.lottery.recipe import load_recipe
from sparsify.report import validate_report
from sparsify.table import format_table
from sparsify.verify.metrics import ParityResult, apply_gates, compare_runs

__all__ = [
    "GateFailed", "InputError", "LoadedModel", "MissingComponent", "OutputError", "ParityResult", "Publication",
    "SparsifyError", "UsageError", "apply_gates", "check_write_paths", "compare_runs", "format_table", "load_feeds", "load_recipe",
    "model_reads", "open_model", "parse_input_shapes", "publish_folder", "random_feeds", "stage_folder", "write_atomically", "write_report",
]


def parse_input_shapes(specs: list[str] | None) -> dict[str, list[int]]:
    """``["x:1x3x224x224"]`` -> ``{"x": [1, 3, 224, 224]}`` (a malformed spec is a UsageError)."""
    from sparsify.verify.feeds import parse_input_shapes as parse

    return parse(specs)


def load_feeds(source, session):
    """Samples from an .npz path or {name: array}, checked against ``session``'s inputs."""
    from sparsify.verify.feeds import load_feeds as load  # imports onnxruntime

    return load(source, session)


def random_feeds(session, shapes: dict[str, list[int]], seed: int, notes: list[str]):
    """Seeded random inputs for ``session`` (dynamic dims from ``shapes``); ``notes`` gets what was assumed."""
    from sparsify.verify.feeds import random_feeds as make  # imports onnxruntime

    return make(session, shapes, seed, notes)


def write_report(path: str | Path, report: dict) -> None:
    """Write a report dict as strict JSON (non-finite numbers as strings), atomically."""
    data = json_safe(report)
    if os.environ.get("SPARSIFY_VALIDATE_REPORTS"):
        validate_report(data)
    write_atomically(Path(path), json.dumps(data, indent=2, allow_nan=False) + "\n")

