#!/usr/bin/env bash
# Create .venv (once) and install sparsify with its test tools, pinned by constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev,torch]"
# Deployment plugins register through entry points; the core names none of them.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e plugins/triton -e plugins/tensorrt -e plugins/torch_runtime
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt onnxconverter-common
# TensorRT's own wheels download from NVIDIA's servers; its type stubs come from PyPI (without their 'tensorrt' dependency).
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps tensorrt-stubs==10.13.0.35.1
