"""Find ``Linear -> elementwise ops -> Linear`` chains (an FFN's ``fc1 -> GELU -> fc2``) where the
first layer's output can stay feature-major: its only consumers are elementwise ops (which keep
the layout) ending in the second layer, whose transposed input is then already contiguous.

Uses ``torch.fx.symbolic_trace``; a model it cannot trace simply has no chains (every sparse
layer then copies its output to row-major)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

__all__ = ["ELEMENTWISE_FUNCTIONS", "ELEMENTWISE_MODULES", "feature_major_chains"]

ELEMENTWISE_MODULES = (nn.GELU, nn.ReLU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Dropout, nn.Identity, nn.Mish,
                       nn.LeakyReLU, nn.Hardswish)
ELEMENTWISE_FUNCTIONS = {F.gelu, F.relu, F.silu, F.dropout, F.mish, F.leaky_relu, F.hardswish, torch.relu,
                         torch.tanh, torch.sigmoid, torch.nn.functional.tanh, torch.nn.functional.sigmoid}
ELEMENTWISE_METHODS = {"relu", "tanh", "sigmoid"}


def _elementwise(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(str(node.target)), ELEMENTWISE_MODULES)
    if node.op == "call_function":
        return node.target in ELEMENTWISE_FUNCTIONS
    if node.op == "call_method":
        return node.target in ELEMENTWISE_METHODS
    return False


def feature_major_chains(model: nn.Module, candidates: set[str]) -> tuple[list[tuple[str, str]], str | None]:
    """Pairs (head, tail) of candidate Linear module names; plus why none could be found (or None)."""
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as exc:  # noqa: BLE001 - untraceable models just get no chains
        return [], f"torch.fx could not trace the model ({type(exc).__name__}): every sparse layer copies its output"
    modules = dict(model.named_modules())
    chains = []
    for node in graph.nodes:
        if node.op != "call_module" or str(node.target) not in candidates:
            continue
        current = node
        while len(current.users) == 1:
            (user,) = current.users
            if user.op == "call_module" and str(user.target) in candidates and user.args[:1] == (current,) \
                    and not user.kwargs and len(user.args) == 1:
                chains.append((str(node.target), str(user.target)))
                break
            if not _elementwise(user, modules) or user.args[:1] != (current,):
                break
            current = user
    # A layer can be the tail of one chain and the head of another; both layouts are fine then.
    return chains, None
