"""JSON has no NaN or infinity: reports write them as the strings "inf", "-inf" and "nan"."""

from __future__ import annotations

import math

__all__ = ["json_safe"]


def json_safe(value):
    """``value`` with every non-finite float replaced by its string (dicts, lists, tuples walked)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
