"""What a lottery run depends on, so a re-run into the same folder reuses only matching work.

Every stage of a search (dense training, each round, each control) depends on the recipe's
code, the search configuration, the seed and the library versions.  ``out/run.json`` records
them; a re-run with the same ones reuses finished stages (and says so), a different one is a
usage error naming the fields that differ, unless ``--force`` discards the old stages.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from dataclasses import asdict
from pathlib import Path

from sparsify.errors import UsageError

__all__ = ["RUN_FILE", "check_or_start", "run_fields"]

RUN_FILE = "run.json"
_STAGE_FILES = ("rewind_state.pt", "ticket.pt", "masks.npz", "report.json", "ticket.onnx", "ticket.onnx.report.json",
                "accuracy_vs_sparsity.png", RUN_FILE)


def _recipe_digest(spec: str) -> str:
    """sha256 of the recipe's source file (a path, or an importable module's file)."""
    target = spec.partition(":")[0]
    path: Path | None = Path(target)
    if path is not None and not path.is_file():
        try:
            found = importlib.util.find_spec(target)
        except (ImportError, ValueError):
            found = None
        path = Path(found.origin) if found is not None and found.origin else None
    return hashlib.sha256(path.read_bytes()).hexdigest() if path is not None and path.is_file() else f"unreadable:{spec}"


def run_fields(recipe_spec: str, config) -> dict:
    """Everything a stage's result depends on, as JSON-ready fields."""
    from importlib import metadata

    from sparsify import __version__

    versions = {"sparsify": __version__}
    try:
        versions["torch"] = metadata.version("torch")
    except metadata.PackageNotFoundError:
        versions["torch"] = "not installed"
    settings = asdict(config)
    settings["pattern"] = str(config.pattern) if config.pattern is not None else None
    return {"recipe_sha256": _recipe_digest(recipe_spec), **settings, "versions": versions}


def _stage_folders(out: Path) -> list[Path]:
    return [p for p in out.iterdir() if p.is_dir() and (p / "result.json").exists()] if out.is_dir() else []


def check_or_start(out: Path, fields: dict, force: bool, progress) -> None:
    """Reuse ``out`` when it was made by the same fields; refuse (exit 2) when not; ``force``
    discards the old stages first."""
    run_file = out / RUN_FILE
    stages = _stage_folders(out)
    recorded = None
    if run_file.exists():
        try:
            recorded = json.loads(run_file.read_text())
        except ValueError:
            recorded = {}
    if stages and recorded != fields:  # a folder without finished stages holds nothing to mix in
        if not force:
            if recorded is None:
                raise UsageError(f"{out} holds stages of a run whose configuration was not recorded: "
                                 "use --force to discard them, or another --out")
            differ = sorted(k for k in set(fields) | set(recorded) if fields.get(k) != recorded.get(k))
            detail = ", ".join(f"{k} ({recorded.get(k)!r} -> {fields.get(k)!r})" for k in differ[:4])
            raise UsageError(f"{out} holds a run with another configuration: {detail}; use --force to discard "
                             "its stages, or another --out")
        for folder in stages:
            shutil.rmtree(folder)
        for name in _STAGE_FILES:
            (out / name).unlink(missing_ok=True)
        progress(f"--force: discarded {len(stages)} stage(s) of the previous run in {out}")
        stages = []
    elif stages:
        progress(f"reusing finished stage(s) of the same configuration: {', '.join(sorted(p.name for p in stages))}")
    out.mkdir(parents=True, exist_ok=True)
    run_file.write_text(json.dumps(fields, indent=2) + "\n")
