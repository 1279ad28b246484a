"""Parity with ONNX Runtime: inputs, sessions, metrics, gates."""
