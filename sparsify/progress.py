"""Progress of long work on stderr: a live counter on a terminal; off a terminal (CI, pipes,
log files) whole lines, at most one per ``interval`` seconds, each with elapsed time and ETA."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress", "format_seconds"]


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


class Progress:
    """``progress(done, total, name)`` callback for the pass's stages."""

    def __init__(self, label: str = "pruning", stream: TextIO | None = None, tty: bool | None = None,
                 interval: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.label, self.stream = label, stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval, self.clock = interval, clock
        self.started = clock()
        self.last_line = self.started

    def __call__(self, done: int, total: int, name: str) -> None:
        now = self.clock()
        elapsed = now - self.started
        eta = elapsed / done * (total - done) if done else 0.0
        text = (f"{self.label} {done}/{total}: {name} — {format_seconds(elapsed)} elapsed, "
                f"ETA {format_seconds(eta)}")
        if self.tty:
            self.stream.write("\r" + text[:150].ljust(150) + ("\n" if done >= total else ""))
        elif now - self.last_line >= self.interval:
            self.stream.write(text + "\n")
            self.last_line = now
        else:
            return
        self.stream.flush()
