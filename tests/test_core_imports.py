"""The core imports with numpy, onnx and onnxruntime only: every
sparsify module must import while torch and tensorrt are unimportable."""

import subprocess
import sys

SCRIPT = r"""
import importlib, pkgutil, sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "tensorrt"):
            raise ImportError(f"{name} is blocked for this test")
        return None

sys.meta_path.insert(0, Block())
import sparsify
names = [m.name for m in pkgutil.walk_packages(sparsify.__path__, "sparsify.") if m.name != "sparsify.__main__"]
for name in names:
    importlib.import_module(name)
print(" ".join(names))
"""


def test_every_core_module_imports_without_torch_or_tensorrt():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    names = set(result.stdout.split())
    # subpackages without __init__.py would be missing from a wheel: list them explicitly
    assert {"sparsify.io.writer", "sparsify.masks.nm", "sparsify.verify.parity", "sparsify.calibrate.pipeline",
            "sparsify.cli.prune", "sparsify.api"} <= names, names


def test_wheel_install_runs(tmp_path):
    """A non-editable install (what the Docker images do) has every module and runs."""
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "w"), str(root)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "w").glob("sparsify-*.whl"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    env = {**__import__("os").environ, "PYTHONPATH": str(target)}
    probe = "import sparsify, sparsify.io.writer, sparsify.calibrate.pipeline; print(sparsify.__file__)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
    assert result.returncode == 0 and str(target) in result.stdout, result.stderr


def test_plugin_wheels_install_and_register(tmp_path):
    """Each plugin as a built wheel (the Docker images install them this way, not editable):
    its entry point is registered and loads, and every module of the package is in the wheel."""
    import json
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    packages = {"triton": "sparsify_triton", "tensorrt": "sparsify_tensorrt", "torch_runtime": "sparsify_torch_runtime"}
    target = tmp_path / "site"
    for folder in packages:
        built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "w"),
                                str(root / "plugins" / folder)], capture_output=True, text=True, timeout=300)
        assert built.returncode == 0, built.stderr
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                    *map(str, (tmp_path / "w").glob("*.whl"))], check=True, capture_output=True, timeout=300)
    probe = f"""
import importlib, json, pkgutil
from importlib.metadata import distributions
found = {{}}
for dist in distributions(path=[{str(target)!r}]):
    for ep in dist.entry_points:
        if ep.group == "sparsify.plugins":
            plugin = ep.load()
            found[ep.name] = [plugin.name, importlib.import_module(ep.module.split(".")[0]).__file__]
for package in {list(packages.values())!r}:
    module = importlib.import_module(package)
    for info in pkgutil.iter_modules(module.__path__):
        importlib.import_module(f"{{package}}.{{info.name}}")
print(json.dumps(found))
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(target)})
    assert result.returncode == 0, result.stderr[-2000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(found) == {"triton", "tensorrt", "torch-runtime"}
    assert all(path.startswith(str(target)) for _, path in found.values())
