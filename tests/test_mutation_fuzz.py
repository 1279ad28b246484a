"""The mutation fuzzer (tests/mutation_fuzz.py) as a test: 2,000 seeded mutants of 11 base
models, each through `prune --no-verify`, `prune` and `check`, in forked children."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_mutants_keep_every_promise(tmp_path):
    cases = int(os.environ.get("SPARSIFY_FUZZ_CASES", "2000"))
    result = subprocess.run([sys.executable, "-m", "tests.mutation_fuzz", "--cases", str(cases), "--seed", "0",
                             "--workers", "2", "--keep", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                            timeout=900)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    summary = lines[-1]
    failures = [line for line in lines if "case" in line]
    assert summary.get("summary") and summary["cases"] == cases and summary["bases"] >= 8, result.stdout[-2000:]
    assert len(summary["mutations"]) >= 7  # every kind of mutation was drawn
    assert not failures and result.returncode == 0, json.dumps(failures[:5], indent=1)
