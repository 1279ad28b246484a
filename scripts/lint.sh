#!/usr/bin/env bash
# ruff (rules in pyproject.toml) and mypy ([tool.mypy]) over the package, its plugins, tests and
# benchmarks: what .ci/run and the pre-commit hook both run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" -m ruff check .
"$PY" -m mypy sparsify plugins/tensorrt/sparsify_tensorrt plugins/triton/sparsify_triton plugins/torch_runtime/sparsify_torch_runtime
