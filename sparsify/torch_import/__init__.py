"""PyTorch side: export an ``nn.Module`` to ONNX and carry masks found in PyTorch onto exactly
the right ONNX weights.  torch is imported lazily; without it these raise MissingComponent
(exit 5) naming the extra to install."""
