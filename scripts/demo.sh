#!/usr/bin/env bash
# Set up, build the built-in sample model (made in code, no download) and prune it to 2:4.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/python samples/make_sample.py samples/build/tiny_cnn.onnx
.venv/bin/sparsify samples/build/tiny_cnn.onnx --pattern 2:4 --inputs samples/build/tiny_cnn.inputs.npz "$@"
