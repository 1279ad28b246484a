"""Keep pruned weights exactly zero while the user's own training loop runs: a forward
pre-hook re-zeroes them (optimizers with weight decay or momentum would move them) and a
gradient hook zeroes their gradients."""

from __future__ import annotations

__all__ = ["MaskEnforcer"]


def _rezero(weight, keep):
    def hook(_module, _args):
        weight.data.mul_(keep)

    return hook


class MaskEnforcer:
    def __init__(self, model, weights: dict, masks: dict):
        self._handles = []
        modules = dict(model.named_modules())
        for name, mask in masks.items():
            weight = weights[name]
            module = modules[name.rsplit(".", 1)[0]] if "." in name else model
            keep = mask.to(weight.dtype)
            weight.data.mul_(keep)
            self._handles.append(module.register_forward_pre_hook(_rezero(weight, keep)))
            self._handles.append(weight.register_hook(lambda grad, k=keep: grad * k))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
