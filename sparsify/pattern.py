"""The N:M sparsity pattern: at most N non-zeros in every group of M consecutive weights."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from sparsify.errors import UsageError

__all__ = ["NMPattern", "parse_pattern"]

_PATTERN_RE = re.compile(r"^\s*(\d{1,4})\s*:\s*(\d{1,4})\s*$")


@dataclass(frozen=True)
class NMPattern:
    n: int
    m: int

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"

    @property
    def density(self) -> float:
        return self.n / self.m

    @property
    def hardware_supported(self) -> bool:
        # Sparse Tensor Cores (Ampere+) run 2:4 for 16-bit/8-bit types; fp32 runs as TF32 1:2.
        return (self.n, self.m) in {(2, 4), (1, 2)}

    @property
    def metadata_bits(self) -> int:
        """Index bits stored per kept value (2 for 2:4)."""
        return max(1, math.ceil(math.log2(self.m)))


def parse_pattern(text: str) -> NMPattern:
    """Parse ``"N:M"`` with 0 < N < M; anything else is a usage error."""
    match = _PATTERN_RE.match(text or "")
    if not match:
        raise UsageError(f"invalid pattern {text!r}: expected N:M such as 2:4")
    n, m = int(match.group(1)), int(match.group(2))
    if not 0 < n < m:
        raise UsageError(f"invalid pattern {text!r}: need 0 < N < M (e.g. 1:2, 2:4, 4:8, 2:8)")
    if m > 64:
        raise UsageError(f"invalid pattern {text!r}: group size M must be at most 64")
    return NMPattern(n, m)
