"""No Docker engine runs here, so the images are never built in CI; this checks what can be
checked without one: every path a Dockerfile copies or pip-installs exists in the repository,
and each plugin the images promise is installed by them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.tensorrt"])
def test_dockerfile_paths_exist(name):
    text = (ROOT / "docker" / name).read_text()
    copied = [p for line in re.findall(r"^COPY\s+(.+)$", text, re.M) for p in line.split()[:-1]]
    assert copied, "no COPY lines"
    for path in copied:
        assert (ROOT / path).exists(), f"{name}: COPY {path} does not exist"
    for path in re.findall(r"\./(plugins/[\w/]+)", text):
        assert (ROOT / path / "pyproject.toml").is_file(), f"{name}: installs {path}, which is not a package"


def test_tensorrt_image_installs_the_build_plugin():
    text = (ROOT / "docker" / "Dockerfile.tensorrt").read_text()
    assert '"./plugins/tensorrt[gpu]"' in text and "./plugins/triton" in text and "[tensorrt]" not in text
