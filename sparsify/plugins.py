"""Plugin discovery: deployment-toolchain integrations register through the
``sparsify.plugins`` entry-point group, so the core names none of them.

An entry point resolves to an object with ``name``, ``description``, ``requires()`` (the
list of missing dependencies, empty when usable), ``add_parser(subparsers, info)`` (its CLI
subcommands) and optionally ``commands`` (their names; default ``[name]``).  A plugin that fails to import or lacks a dependency is listed as unavailable,
with the reason; its subcommand then exits 5 with that reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib import metadata

__all__ = ["GROUP", "PluginInfo", "discover"]

GROUP = "sparsify.plugins"
logger = logging.getLogger(__name__)


@dataclass
class PluginInfo:
    name: str
    description: str = ""
    available: bool = False
    reason: str = ""  # why it is unavailable
    plugin: object | None = field(default=None, repr=False)


def discover() -> list[PluginInfo]:
    found = []
    for entry in sorted(metadata.entry_points(group=GROUP), key=lambda e: e.name):
        try:
            plugin = entry.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the core
            found.append(PluginInfo(entry.name, "", False, f"failed to import {entry.value}: {exc}"))
            continue
        missing = list(plugin.requires())
        reason = f"missing: {', '.join(missing)}" if missing else ""
        found.append(PluginInfo(plugin.name, plugin.description, not missing, reason, plugin))
    return found
