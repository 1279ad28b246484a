"""The mask methods by name (no heavy imports: the CLI validates ``--method`` early)."""

from __future__ import annotations

__all__ = ["METHODS", "NEEDS_CALIBRATION"]

METHODS = ("magnitude", "wanda", "sparsegpt")
NEEDS_CALIBRATION = frozenset({"wanda", "sparsegpt"})
