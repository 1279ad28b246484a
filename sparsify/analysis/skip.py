"""Why a graph pattern does not apply: a value, not a bare string (onnxscript's
``MatchResult.fail(reason)`` idea).  Functions that find something return it or a ``Skip``."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Skip"]


@dataclass(frozen=True)
class Skip:
    reason: str

    def __str__(self) -> str:
        return self.reason
