"""Opt-in target selection: --include/--exclude regexes and --only-profitable (the rule is
``analysis/profit.py``'s, with the run's ``min_channels``)."""

from __future__ import annotations

import re

from sparsify.analysis.profit import DEFAULT_MIN_CHANNELS, too_small
from sparsify.analysis.targets import LayerRow
from sparsify.errors import UsageError

__all__ = ["compile_patterns", "select_targets"]


def compile_patterns(patterns: list[str] | None, flag: str) -> list[re.Pattern]:
    compiled = []
    for text in patterns or []:
        try:
            compiled.append(re.compile(text))
        except re.error as exc:
            raise UsageError(f"invalid {flag} regex {text!r}: {exc}") from None
    return compiled


def _matches(row: LayerRow, patterns: list[re.Pattern]) -> re.Pattern | None:
    return next((p for p in patterns if p.search(row.target.layer) or p.search(row.target.weight)), None)


def select_targets(rows: list[LayerRow], include: list[re.Pattern], exclude: list[re.Pattern],
                   only_profitable: bool, min_channels: int = DEFAULT_MIN_CHANNELS) -> None:
    """Mark targets the user did not ask for as skipped, with the reason.  An --include that
    matches no target at all is a usage error (the run would write a copy of the input)."""
    if include and rows and not any(_matches(r, include) for r in rows):
        raise UsageError(f"--include {' '.join(repr(p.pattern) for p in include)} matched none of the "
                         f"{len(rows)} layers/weights (see `sparsify check` for their names)")
    for row in rows:
        if not row.outcome.active:
            continue
        target = row.target
        if include and _matches(row, include) is None:
            row.outcome.skip("not matched by --include")
        elif (pattern := _matches(row, exclude)) is not None:
            row.outcome.skip(f"excluded by --exclude {pattern.pattern!r}")
        elif only_profitable and (small := too_small(target.reduction_length, target.kernel_positions,
                                                     target.output_features, min_channels)):
            row.outcome.skip(small)
