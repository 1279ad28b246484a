"""Data-aware pieces: activation statistics from calibration inputs, and model evaluation,
both run through ONNX Runtime on an in-memory copy of the model."""
