"""The one terminal-table formatter (the per-layer tables of prune/check, build and torch-runtime)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["format_table"]


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, rule: bool = True,
                 indent: str = "") -> list[str]:
    """Left-aligned columns two spaces apart, sized to the widest cell, trailing spaces cut;
    ``rule`` puts a line of dashes under the header."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return indent + "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [line(header), *([line(["-" * w for w in widths])] if rule else []), *(line(r) for r in rows)]
