"""Masks on PyTorch weights: N:M along the reduction dimension (dim 1 of Linear and Conv
weights: the axis the ONNX pass and TensorRT use), and global unstructured magnitude."""

from __future__ import annotations

import re

__all__ = ["global_magnitude_masks", "nm_mask", "prunable_weights"]


def prunable_weights(model, exclude: list[str] | None = None) -> dict:
    """name -> parameter of every Linear/Conv weight (2-D+) not matching ``exclude`` regexes."""
    import torch  # noqa: TID251 - lottery is the lazy torch boundary

    found = {}
    for module_name, module in model.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
            name = f"{module_name}.weight" if module_name else "weight"
            if not any(re.search(p, name) for p in exclude or []):
                found[name] = module.weight
    return found


def nm_mask(weight, n: int, m: int):
    """Keep the n largest |w| of every m consecutive entries along dim 1 (None if dim 1 is
    not divisible by m).  Ties go to the lower index, as in the ONNX pass."""
    import torch  # noqa: TID251

    if weight.shape[1] % m:
        return None
    moved = weight.detach().abs().transpose(1, -1)
    groups = moved.reshape(-1, m)
    # stable descending order: equal magnitudes keep the lower index first
    order = torch.sort(groups, dim=1, descending=True, stable=True).indices[:, :n]
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, order, True)
    return keep.reshape(moved.shape).transpose(1, -1).contiguous()


def global_magnitude_masks(weights: dict, masks: dict, fraction: float) -> dict:
    """Prune ``fraction`` of the still-unpruned weights, globally by |w| (Frankle & Carbin)."""
    import torch  # noqa: TID251

    alive = torch.cat([w.detach().abs()[masks[name]].flatten() for name, w in weights.items()])
    count = int(round(fraction * alive.numel()))
    if count == 0:
        return {name: mask.clone() for name, mask in masks.items()}
    threshold = torch.kthvalue(alive, count).values
    return {name: masks[name] & (w.detach().abs() > threshold) for name, w in weights.items()}
