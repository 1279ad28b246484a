"""Will a sparse kernel likely win for a layer?  One rule, used by selection and the report.

Profitability rule (source: NVIDIA TensorRT maintainers, github.com/NVIDIA/TensorRT
issues #3849 and #4065): TensorRT tries sparse and dense tactics and keeps the faster; sparse
kernels win only when C_in and C_out are large enough (about 256 or more), and a kxk
convolution counts k*k times in C_in.  So a layer is large enough when
``reduction_length * kernel_positions >= min_channels`` and ``output_features >= min_channels``.
"""

from __future__ import annotations

__all__ = ["DEFAULT_MIN_CHANNELS", "MEASURED_KERNEL_SPEEDUP", "predict_profit", "too_small"]

DEFAULT_MIN_CHANNELS = 256

# 2:4 vs dense kernel-time ratios measured on an H200 (torch 2.11 + cuSPARSELt 0.8, CUDA-graphed,
# GEMMs with M >= 4096 rows; docs/sources.md#kernel-ratios): the range over the shapes tried.
MEASURED_KERNEL_SPEEDUP = {"float16": (1.08, 1.52), "bfloat16": (1.08, 1.54), "int8": (1.45, 2.21), "uint8": (1.45, 2.21)}


def too_small(reduction_length: int, kernel_positions: int, output_features: int,
              min_channels: int = DEFAULT_MIN_CHANNELS) -> str:
    """The reason a layer is too small for a sparse kernel to win, or "" when it is not."""
    c_in = reduction_length * kernel_positions
    if c_in < min_channels or output_features < min_channels:
        return (f"too small for a sparse kernel to win (C_in·k²={c_in}, C_out={output_features}; "
                f"needs both >= {min_channels})")
    return ""


def predict_profit(dtype: str, reduction_length: int, kernel_positions: int, output_features: int,
                   min_channels: int = DEFAULT_MIN_CHANNELS) -> tuple[bool, str]:
    """(prediction, why) from the layer's size and dtype."""
    small = too_small(reduction_length, kernel_positions, output_features, min_channels)
    if small:
        return False, small
    speedup = MEASURED_KERNEL_SPEEDUP.get(dtype)
    if speedup is None:
        if dtype == "float":
            return False, "float32 runs as TF32 with 1:2, not 2:4: convert to fp16/bf16 (or int8) to gain"
        return False, f"no 2:4 kernel measured for {dtype}"
    return True, f"expected {speedup[0]:.2f}-{speedup[1]:.2f}x kernel speedup ({dtype}, measured on H200 at M >= 4096)"
