"""``SparseLinear``: an ``nn.Linear`` whose 2:4 weight is stored compressed for cuSPARSELt.

The call is ``torch._cslt_sparse_mm(W_c, x.t(), bias)``: the weight is the sparse *left*
operand and the activations enter transposed, which is the kernel measured fastest on the H200
(1.47x dense at 8192x4096->16384 fp16); asking cuSPARSELt for a transposed result instead picks
a kernel 2.3x slower (docs/sources.md#kernel-ratios).  The product comes out as ``[out, tokens]`` row-major, i.e.
the ``[tokens, out]`` result is column-major.  ``output_layout`` says what happens next:

- ``"row"`` (default): one copy to row-major, so attention stays on its flash kernel and
  LayerNorm/adds run vectorized (torch's own path returns the column-major view; that is what
  made whole encoders 0.38-0.68x of dense);
- ``"feature"``: return the column-major view as is.  Right when the only consumers are
  elementwise ops feeding another ``SparseLinear`` (``fc1 -> GELU -> fc2``): its ``x.t()`` is then
  contiguous, so neither layer copies.  ``convert()`` picks it for such chains.

The bias is added in the GEMM epilogue (it is per row of ``[out, tokens]``).  A token count that
is not a multiple of 8 (16 for int8) is padded for the call and cut off after.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sparsify_torch_runtime.kernel import DENSE_ROW_MULTIPLE, linear_ineligible_reason

__all__ = ["LAYOUTS", "SparseLinear"]

LAYOUTS = ("row", "feature")


class SparseLinear(nn.Module):
    """Inference-only replacement for an ``nn.Linear`` with a 2:4 weight (fp16/bf16, CUDA)."""

    def __init__(self, linear: nn.Linear, output_layout: str = "row") -> None:
        super().__init__()
        reason = linear_ineligible_reason(linear.weight)
        if reason:
            raise ValueError(f"cannot make a SparseLinear: {reason}")
        if output_layout not in LAYOUTS:
            raise ValueError(f"output_layout {output_layout!r}: one of {', '.join(LAYOUTS)}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.output_layout = output_layout
        self.row_multiple = DENSE_ROW_MULTIPLE[linear.weight.dtype]
        self.packed = nn.Parameter(self._pack(linear.weight.detach()), requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def _pack(self, weight: torch.Tensor) -> torch.Tensor:
        return torch._cslt_compress(weight.contiguous())

    def _mm(self, x_t: torch.Tensor) -> torch.Tensor:
        """``W @ x_t + bias[:, None]`` -> ``[out, tokens]``."""
        return torch._cslt_sparse_mm(self.packed, x_t, bias=self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)  # a view for row-major and for feature-major inputs
        tokens = x2.shape[0]
        pad = (-tokens) % self.row_multiple
        if pad:
            x2 = F.pad(x2, (0, 0, 0, pad))
        x_t = x2.t()
        if not (x_t.is_contiguous() or x2.is_contiguous()):  # e.g. a sliced feature-major input
            x_t = x_t.contiguous()
        y = self._mm(x_t).t()  # [tokens(+pad), out], column-major
        if pad:
            y = y[:tokens]
        if self.output_layout == "row":
            y = y.contiguous()
        return y.reshape(*lead, self.out_features)

    def weight_bytes(self) -> int:
        """Bytes of the compressed weight (values + metadata), for the dense-vs-2:4 memory table."""
        return self.packed.numel() * self.packed.element_size()

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"output_layout={self.output_layout!r}")
