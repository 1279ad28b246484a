"""The Triton exporter plugin, through the CLI; the config.pbtxt it writes is parsed back."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from onnx import helper

from tests.builders import init, make_model, rand, save, vi

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "sparsify", *map(str, args)], capture_output=True, text=True, timeout=120, **kw)


def parse_pbtxt(text: str) -> dict:
    """A small parser for the protobuf text format subset Triton configs use."""
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|-?\d+|[A-Za-z_][A-Za-z0-9_]*|[{}\[\]:,]', text)
    pos = 0

    def value():
        nonlocal pos
        token = tokens[pos]
        pos += 1
        if token == "{":
            return message("}")
        if token == "[":
            items = []
            while tokens[pos] != "]":
                items.append(value())
                if tokens[pos] == ",":
                    pos += 1
            pos += 1
            return items
        if token.startswith('"'):
            return token[1:-1]
        return int(token) if re.fullmatch(r"-?\d+", token) else token

    def message(end=None):
        nonlocal pos
        fields: dict = {}
        while pos < len(tokens) and tokens[pos] != end:
            key = tokens[pos]
            pos += 1
            if tokens[pos] == ":":
                pos += 1
            fields[key] = value()
            if pos < len(tokens) and tokens[pos] == ",":
                pos += 1
        pos += 1
        return fields

    return message()


@pytest.fixture
def sample(tmp_path):
    subprocess.run([sys.executable, str(SAMPLES / "make_sample.py"), str(tmp_path / "tiny.onnx")], check=True, capture_output=True)
    return tmp_path / "tiny.onnx"


def test_plugin_is_listed_as_available():
    result = cli("plugins")
    assert result.returncode == 0 and re.search(r"^triton\s+available", result.stdout, re.M)


def test_onnx_export_with_dynamic_batch(tmp_path, sample):
    (tmp_path / "repo").mkdir()
    result = cli("triton", sample, "--repository", tmp_path / "repo")
    assert result.returncode == 0, result.stderr
    config = parse_pbtxt((tmp_path / "repo" / "tiny" / "config.pbtxt").read_text())
    assert config["name"] == "tiny" and config["platform"] == "onnxruntime_onnx" and config["max_batch_size"] == 8
    assert config["input"] == [{"name": "image", "data_type": "TYPE_FP32", "dims": [3, 32, 32]}]
    assert config["output"] == [{"name": "logits", "data_type": "TYPE_FP32", "dims": [10]}]
    assert (tmp_path / "repo" / "tiny" / "1" / "model.onnx").read_bytes() == sample.read_bytes()


def test_plan_export_static_shapes_and_overwrite(tmp_path):
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
    model = save(make_model([node], [vi("x", [4, 16], 10)], [vi("y", [4, 8], 10)], [init(rand([16, 8]).astype("float16"), "W")]),
                 tmp_path / "m.sparse.onnx")
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"opaque engine bytes: the exporter copies them")
    repo = tmp_path / "repo"
    repo.mkdir()
    assert cli("triton", model, "--repository", repo, "--plan", plan, "--max-batch-size", "4").returncode == 2
    result = cli("triton", model, "--repository", repo, "--plan", plan, "--model-version", "3")
    assert result.returncode == 0, result.stderr
    config = parse_pbtxt((repo / "m" / "config.pbtxt").read_text())
    assert config["platform"] == "tensorrt_plan" and config["max_batch_size"] == 0
    assert config["input"][0] == {"name": "x", "data_type": "TYPE_FP16", "dims": [4, 16]}
    assert (repo / "m" / "3" / "model.plan").read_bytes() == plan.read_bytes()
    again = cli("triton", model, "--repository", repo, "--plan", plan)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert cli("triton", model, "--repository", repo, "--plan", plan, "--force", "--name", "m").returncode == 0
    assert sorted(p.name for p in repo.iterdir()) == ["m"]  # no staging folder left


def test_bad_inputs_exit_2(tmp_path, sample):
    created = cli("triton", sample, "--repository", tmp_path / "new" / "repo")  # a new repository is created
    assert created.returncode == 0 and (tmp_path / "new" / "repo" / "tiny" / "config.pbtxt").is_file(), created.stderr
    (tmp_path / "file").write_text("x")
    assert "not a folder" in cli("triton", sample, "--repository", tmp_path / "file").stderr
    (tmp_path / "repo").mkdir()
    assert cli("triton", sample, "--repository", tmp_path / "repo", "--plan", tmp_path / "nope.plan").returncode == 2
    bad = cli("triton", sample, "--repository", tmp_path / "repo", "--name", "a/b")
    assert bad.returncode == 2 and "invalid model name" in bad.stderr


def test_broken_plugin_is_listed_unavailable(tmp_path):
    dist = tmp_path / "broken_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[sparsify.plugins]\nbroken = no_such_module_here:plugin\n")
    import os

    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = cli("plugins", env=env)
    assert result.returncode == 0 and re.search(r"^broken\s+unavailable \(failed to import", result.stdout, re.M)
    assert re.search(r"^triton\s+available", result.stdout, re.M)  # one broken plugin breaks nothing else
