"""What cuSPARSELt (through ``torch._cslt_*``) accepts, and why a layer cannot use it.

Shape rules are torch's own for its cuSPARSELt path (``SparseSemiStructuredTensorCUSPARSELT``):
the sparse operand's rows and columns multiples of 16 (fp16/bf16) or 32 (int8), the dense
operand's rows multiples of 8 (fp16/bf16) or 16 (int8) — the runtime pads the token count
itself, so only the weight shape can make a layer ineligible.
"""

from __future__ import annotations

import torch

__all__ = ["DENSE_ROW_MULTIPLE", "SPARSE_DTYPES", "WEIGHT_MULTIPLE", "cusparselt_unavailable_reason",
           "is_2to4_rows", "linear_ineligible_reason"]

SPARSE_DTYPES = (torch.float16, torch.bfloat16)  # what the Linear runtime converts (int8 needs quantized models)
WEIGHT_MULTIPLE = {torch.float16: 16, torch.bfloat16: 16, torch.int8: 32}
DENSE_ROW_MULTIPLE = {torch.float16: 8, torch.bfloat16: 8, torch.int8: 16}


def cusparselt_unavailable_reason(device: torch.device | str | None = None) -> str | None:
    """None when 2:4 kernels can run on ``device`` (default: the current CUDA device), else why not."""
    if not torch.cuda.is_available():
        return "no CUDA device (2:4 kernels need an NVIDIA GPU, Ampere or newer)"
    cusparselt = getattr(torch.backends, "cusparselt", None)
    if cusparselt is None or not cusparselt.is_available():
        return f"this torch build ({torch.__version__}) has no cuSPARSELt"
    major, minor = torch.cuda.get_device_capability(device)
    if major < 8:
        return f"sm_{major}{minor} has no sparse tensor cores (Ampere, sm_80, or newer needed)"
    return None


def is_2to4_rows(weight: torch.Tensor) -> bool:
    """Whether every group of 4 consecutive values along the last (input) dimension has at most
    2 non-zeros: the layout ``torch._cslt_compress`` packs for ``y = x @ W.T``."""
    if weight.ndim != 2 or weight.shape[1] % 4:
        return False
    return bool(((weight.detach().reshape(-1, 4) != 0).sum(dim=1) <= 2).all())


def linear_ineligible_reason(weight: torch.Tensor) -> str | None:
    """Why an ``nn.Linear`` weight ``[out, in]`` cannot become a cuSPARSELt 2:4 weight (None: it can)."""
    if weight.dtype not in SPARSE_DTYPES:
        hint = " (fp32 tensor cores use 1:2 TF32, not 2:4; call model.half() or .to(torch.bfloat16))" \
            if weight.dtype == torch.float32 else ""
        return f"dtype {str(weight.dtype).removeprefix('torch.')}: the 2:4 runtime needs float16 or bfloat16{hint}"
    multiple = WEIGHT_MULTIPLE[weight.dtype]
    out_features, in_features = weight.shape
    if out_features % multiple or in_features % multiple:
        return f"weight {out_features}x{in_features}: cuSPARSELt needs both dimensions multiples of {multiple}"
    if not is_2to4_rows(weight):
        return "weight is not 2:4 along its input dimension (prune it first: sparsify lottery, prune_torch or --masks)"
    return None
