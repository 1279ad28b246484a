"""What the benchmark scripts share: timing a child process, and a worktree of an earlier revision."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> dict:
    """Wall time and peak RSS (``ru_maxrss`` of that child) of one command; ``cwd`` is where
    ``python -m``/``-c`` runs (it puts the working folder first on sys.path)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd,
                            env={**os.environ, **(env or {})})
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"command failed ({code}): {' '.join(cmd)[:300]}\n{err[-2000:]}")
    return {"seconds": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def worktree(rev: str, folder: Path) -> Path:
    """A git worktree of ``rev`` (the code before a change, run side by side with this one)."""
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(folder), rev], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return folder


def remove_worktree(folder: Path) -> None:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(folder)], check=False)


def write_results(folder: Path, text: str, data) -> None:
    """Print the Markdown table and keep it, with the raw numbers, as results.md and results.json."""
    import json

    print(text)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.md").write_text(text + "\n")
    (folder / "results.json").write_text(json.dumps(data, indent=2) + "\n")
