"""Run the bash blocks of samples/README.md exactly as written (in a scratch copy)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _blocks(readme: Path) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", readme.read_text(), flags=re.S)


@pytest.mark.parametrize("block", _blocks(ROOT / "samples" / "README.md"))
def test_sample_readme_block(tmp_path, block):
    shutil.copytree(ROOT / "samples", tmp_path / "samples", ignore=shutil.ignore_patterns("build"))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    if "make_sample.py" in block:
        sparse = tmp_path / "samples" / "build" / "tiny_cnn.sparse.onnx"
        onnx.checker.check_model(str(sparse))
        assert "5 pruned, 2 skipped" in result.stdout and "depthwise" in result.stdout
