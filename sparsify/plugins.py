"""Plugin discovery: deployment-toolchain integrations register through the
``sparsify.plugins`` entry-point group, so the core names none of them.

Discovery reads entry-point metadata only: a plugin's module (and torch or TensorRT) is
imported when one of its commands runs, never at start-up.  An entry point resolves to an object with ``name``, ``description``, ``requires()`` (the
list of missing dependencies, empty when usable), ``add_parser(subparsers, info)`` (its CLI
subcommands) and optionally ``commands`` (their names; default ``[name]``).  A plugin that fails to import or lacks a dependency is listed as unavailable,
with the reason; its subcommand then exits 5 with that reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata

__all__ = ["GROUP", "PLUGIN_COMMANDS", "PluginCommand", "PluginInfo", "discover", "entry_points", "load"]

GROUP = "sparsify.plugins"


@dataclass(frozen=True)
class PluginCommand:
    """A command of one of the project's own plugins, known to the core without importing it."""

    entry_point: str  # name in the sparsify.plugins group
    package: str  # distribution that provides it
    source: str  # its folder in the sparsify repository
    help: str


#: The project's plugin commands: `sparsify --help` lists them (installed or not), and a
#: command whose plugin is missing exits 5 saying how to install it.
PLUGIN_COMMANDS: dict[str, PluginCommand] = {
    "build": PluginCommand("tensorrt", "sparsify-tensorrt", "plugins/tensorrt",
                           "build a TensorRT engine with sparse weights and report which layers run sparse"),
    "triton": PluginCommand("triton", "sparsify-triton", "plugins/triton",
                            "export a TensorRT plan or ONNX model into a Triton Inference Server model repository"),
    "torch-runtime": PluginCommand("torch-runtime", "sparsify-torch-runtime", "plugins/torch_runtime",
                                   "which 2:4 Linear layers run faster on this GPU (cuSPARSELt), and by how much"),
}


@dataclass
class PluginInfo:
    name: str
    description: str = ""
    available: bool = False
    reason: str = ""  # why it is unavailable
    plugin: object | None = field(default=None, repr=False)


def entry_points() -> dict[str, metadata.EntryPoint]:
    """Installed plugins by entry-point name, from package metadata alone (nothing imported)."""
    return {entry.name: entry for entry in metadata.entry_points(group=GROUP)}


def load(entry: metadata.EntryPoint) -> PluginInfo:
    """Import one plugin; a failure to import or a missing dependency makes it unavailable, with the reason."""
    try:
        plugin = entry.load()
    except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the core
        return PluginInfo(entry.name, "", False, f"failed to import {entry.value}: {exc}")
    try:
        missing = list(plugin.requires())
    except Exception as exc:  # noqa: BLE001
        return PluginInfo(entry.name, "", False, f"its requires() failed: {exc}", None)
    reason = f"missing: {', '.join(missing)}" if missing else ""
    return PluginInfo(plugin.name, plugin.description, not missing, reason, plugin)


def discover() -> list[PluginInfo]:
    """Every installed plugin, imported (``sparsify plugins`` only; commands load just their own)."""
    return [load(entry) for _, entry in sorted(entry_points().items())]
