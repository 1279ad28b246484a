"""The ticket search under torch.distributed: 2 CPU processes (gloo) end with identical masks
and weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

WORKER = r"""
import os, sys
import torch.distributed as dist
sys.path.insert(0, os.environ["REPO"])
dist.init_process_group("gloo")
from sparsify.lottery.run import run_lottery
from sparsify.lottery.search import TicketConfig
from sparsify.pattern import parse_pattern
rank = dist.get_rank()
run_lottery("tests.recipes.ddp_mlp:recipe", TicketConfig(pattern=parse_pattern("2:4"), epochs=2, controls=False),
            os.path.join(os.environ["OUT"], f"rank{rank}"), progress=lambda s: None)
dist.destroy_process_group()
"""


def test_two_ranks_find_the_same_ticket(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "worker.py").write_text(WORKER)
    env = {**os.environ, "REPO": str(repo), "OUT": str(tmp_path), "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(tmp_path / "worker.py")], capture_output=True, text=True, timeout=300, env=env, cwd=repo)
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = np.load(tmp_path / "rank0" / "masks.npz"), np.load(tmp_path / "rank1" / "masks.npz")
    assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
    wa = torch.load(tmp_path / "rank0" / "ticket.pt", weights_only=True)
    wb = torch.load(tmp_path / "rank1" / "ticket.pt", weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
