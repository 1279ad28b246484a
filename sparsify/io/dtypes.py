"""Weight storage types: ONNX data type -> the integer "bits" view we prune in.

Pruning works on the stored bit patterns, never on converted floats, so a kept value is
bit-identical by construction.  For IEEE floats |x| orders exactly like ``bits & ~sign``
(NaN above inf), so magnitudes need no float conversion for fp32, fp16 or bf16.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

__all__ = ["FLOAT_TYPES", "QUANT_TYPES", "STORAGE", "abs_mask", "dtype_name", "from_float", "magnitude_key", "to_float32"]

#: ONNX data type -> numpy dtype of the stored bits (little-endian).
STORAGE: dict[int, np.dtype] = {
    TensorProto.FLOAT: np.dtype("<u4"),
    TensorProto.FLOAT16: np.dtype("<u2"),
    TensorProto.BFLOAT16: np.dtype("<u2"),
    TensorProto.INT8: np.dtype("i1"),
    TensorProto.UINT8: np.dtype("u1"),
    TensorProto.DOUBLE: np.dtype("<f8"),
    TensorProto.INT32: np.dtype("<i4"),
    TensorProto.INT64: np.dtype("<i8"),
}
FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16})
QUANT_TYPES = frozenset({TensorProto.INT8, TensorProto.UINT8})
_ABS_MASK: dict[np.dtype, np.unsignedinteger] = {np.dtype("<u4"): np.uint32(0x7FFFFFFF), np.dtype("<u2"): np.uint16(0x7FFF)}


def dtype_name(data_type: int) -> str:
    try:
        return TensorProto.DataType.Name(data_type).lower()
    except ValueError:
        return f"type{data_type}"


def abs_mask(storage: np.dtype) -> np.unsignedinteger:
    """The mask that clears the sign bit of a float bit pattern."""
    return _ABS_MASK[np.dtype(storage)]


def magnitude_key(bits: np.ndarray) -> np.ndarray:
    """An array that orders like |value| for float bit patterns (NaN largest)."""
    return bits & _ABS_MASK[bits.dtype]


def from_float(values: np.ndarray, data_type: int) -> np.ndarray:
    """Float values -> stored bit patterns (round to nearest even for fp16/bf16)."""
    f32 = np.ascontiguousarray(values, dtype=np.float32)
    if data_type == TensorProto.FLOAT:
        return f32.view(np.uint32).copy()
    if data_type == TensorProto.FLOAT16:
        return f32.astype(np.float16).view(np.uint16)
    if data_type == TensorProto.BFLOAT16:
        u = f32.view(np.uint32).astype(np.uint64)
        return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    raise ValueError(f"cannot store floats as {dtype_name(data_type)}")


def to_float32(bits: np.ndarray, data_type: int) -> np.ndarray:
    """Numeric value of stored bits as float32 (for scales, zero points and parity)."""
    if data_type == TensorProto.FLOAT:
        return bits.view(np.float32)
    if data_type == TensorProto.FLOAT16:
        return bits.view(np.float16).astype(np.float32)
    if data_type == TensorProto.BFLOAT16:
        return (bits.astype(np.uint32) << 16).view(np.float32)
    return bits.astype(np.float32)
