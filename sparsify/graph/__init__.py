"""ONNX model I/O, target discovery (axis rules, look-through), mask application, writing."""
