"""Files in and out: the wire-level ONNX reader, model loading, dtypes, npz, the writer, where a run may write, and publishing staged files all or nothing."""
