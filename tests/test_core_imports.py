"""The core imports with numpy, onnx, onnxruntime and onnx-graphsurgeon only: every
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
print(len(names), "modules imported")
"""


def test_every_core_module_imports_without_torch_or_tensorrt():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.split()[0]) > 20
