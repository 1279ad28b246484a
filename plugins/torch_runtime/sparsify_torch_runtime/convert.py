"""``convert()``: swap a model's 2:4 ``nn.Linear`` layers for ``SparseLinear`` where that is faster.

Per layer, in order: can cuSPARSELt run here at all; is the weight fp16/bf16, 2:4 along its
input dimension, of a shape cuSPARSELt takes; then — ``policy="measure"`` (default on a GPU) —
dense ``F.linear`` and the 2:4 layer are timed at the token count the example inputs give that
layer, both CUDA-graphed, and the layer goes sparse only when it is at least ``margin`` faster;
``policy="rule"`` uses ``size_rule`` instead; ``policy="all"`` converts every eligible layer.
FFN chains (``fc1 -> GELU -> fc2``, both sparse) keep ``fc1``'s output feature-major (no copy).
Finally, with ``guard=True``, the whole model is timed dense and converted (CUDA-graphed); if the
converted model is slower, every layer goes back to dense and the decisions say so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sparsify.plugin_api import format_table
from sparsify_torch_runtime.chains import feature_major_chains
from sparsify_torch_runtime.kernel import cusparselt_unavailable_reason, linear_ineligible_reason
from sparsify_torch_runtime.layers import SparseLinear

__all__ = ["POLICIES", "LayerDecision", "convert", "format_decisions", "size_rule"]

POLICIES = ("measure", "rule", "all")


@dataclass
class LayerDecision:
    name: str
    out_features: int
    in_features: int
    dtype: str
    tokens: int | None  # rows of the layer's input in the example run (None: the layer did not run)
    sparse: bool = False
    reason: str = ""
    input_layout: str = "row"
    output_layout: str = "row"
    dense_us: float | None = None
    sparse_us: float | None = None
    dense_weight_bytes: int = 0
    sparse_weight_bytes: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def size_rule(tokens: int, in_features: int, out_features: int, output_layout: str) -> tuple[bool, str]:
    """Whether a 2:4 layer is expected to beat dense, without measuring.

    From the H200 measurements in docs/sources.md#kernel-ratios: the cuSPARSELt kernel beats cuBLAS by 1.08-1.5x
    once tokens >= ~1024 and both feature dimensions are >= ~1024, and loses at small token
    counts.  A row-major output costs one copy of ``tokens x out``, about ``470 / in_features`` of
    the GEMM's own time (13% measured at in=4096), so a row-major layer needs in >= 4096 to keep
    a gain.  An estimate: ``policy="measure"`` decides by timing instead.
    """
    if tokens < 1024:
        return False, f"{tokens} tokens: 2:4 kernels lose to dense below ~1024 rows (size rule)"
    if min(in_features, out_features) < 1024:
        return False, f"{out_features}x{in_features}: 2:4 gains need both dimensions >= 1024 (size rule)"
    if output_layout == "row" and in_features < 4096:
        return False, (f"in_features {in_features}: the row-major output copy (~{470 / in_features:.0%} of the GEMM) "
                       "eats the 2:4 gain below 4096 (size rule)")
    return True, "size rule: large enough for the 2:4 kernel to win"


def _linears(model: nn.Module) -> dict[str, nn.Linear]:
    return {name: m for name, m in model.named_modules() if type(m) is nn.Linear}


def _as_tuple(inputs) -> tuple:
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def _record_tokens(model: nn.Module, inputs: tuple, linears: dict[str, nn.Linear]) -> dict[str, int]:
    tokens: dict[str, int] = {}
    def hook(name: str):
        def record(_module: nn.Module, args: tuple) -> None:
            tokens.setdefault(name, args[0].numel() // args[0].shape[-1])
        return record

    handles = [m.register_forward_pre_hook(hook(name)) for name, m in linears.items()]
    try:
        with torch.inference_mode():
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return tokens


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def _measure(linear: nn.Linear, tokens: int, input_layout: str, output_layout: str) -> tuple[float, float]:
    from sparsify_torch_runtime.timing import graphed_time_us

    w = linear.weight
    x = torch.randn(tokens, linear.in_features, device=w.device, dtype=w.dtype)
    if input_layout == "feature":
        x = torch.randn(linear.in_features, tokens, device=w.device, dtype=w.dtype).t()
    sparse = SparseLinear(linear, output_layout)
    with torch.inference_mode():
        dense_us = graphed_time_us(lambda: F.linear(x, w, linear.bias))
        sparse_us = graphed_time_us(lambda: sparse(x))
    return dense_us, sparse_us


def convert(model: nn.Module, example_inputs, *, policy: str | None = None, margin: float = 0.02,
            feature_major: bool = True, guard: bool = True,
            progress: Callable[[str], None] | None = None) -> tuple[nn.Module, list[LayerDecision]]:
    """Replace 2:4 ``nn.Linear`` layers of ``model`` (in place) by ``SparseLinear`` where they win.

    ``example_inputs``: a tensor or tuple of tensors on the model's device, with the batch and
    sequence sizes the model will serve (token counts drive the decisions).  Returns the model and
    one ``LayerDecision`` per ``nn.Linear``.
    """
    inputs = _as_tuple(example_inputs)
    linears = _linears(model)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if device.type == "cuda":
        unavailable = cusparselt_unavailable_reason(device)
    else:
        unavailable = cusparselt_unavailable_reason() or "the model is on the CPU: move it to a CUDA device"
    policy = policy or ("measure" if unavailable is None else "rule")
    if policy not in POLICIES:
        raise ValueError(f"policy {policy!r}: one of {', '.join(POLICIES)}")
    say = progress or (lambda _message: None)
    decisions, candidates = _candidates(model, inputs, linears, unavailable)
    chains, chain_note = feature_major_chains(model, candidates) if feature_major and candidates else ([], None)
    for head, tail in chains:
        decisions[head].output_layout = "feature"
        decisions[tail].input_layout = "feature"
    decider = _Decider(decisions, linears, policy, margin, say)
    for name in sorted(candidates):
        decider.decide(name)
    for head, tail in chains:  # a chain needs both ends sparse; otherwise both use row-major edges
        if decisions[head].sparse and decisions[tail].sparse:
            continue
        decisions[head].output_layout = decisions[tail].input_layout = "row"
        for name in (head, tail):
            if name in candidates:
                decider.decide(name)
    if chain_note:
        for name in candidates:
            decisions[name].reason += f"; {chain_note}"
    dense_ms = _model_ms(model, inputs) if guard and policy != "all" and unavailable is None and candidates else None
    originals = _swap_in(model, decisions, linears)
    if dense_ms is not None and originals:
        _guard(model, inputs, decisions, originals, dense_ms, say)
    return model, list(decisions.values())


def _candidates(model: nn.Module, inputs: tuple, linears: dict[str, nn.Linear],
                unavailable: str | None) -> tuple[dict[str, LayerDecision], set[str]]:
    """A decision per Linear (reason filled for the ineligible) and the names that may run 2:4."""
    tokens = _record_tokens(model, inputs, linears)
    decisions: dict[str, LayerDecision] = {}
    candidates = set()
    for name, linear in linears.items():
        w = linear.weight
        decision = decisions[name] = LayerDecision(name, linear.out_features, linear.in_features,
                                                   str(w.dtype).removeprefix("torch."), tokens.get(name),
                                                   dense_weight_bytes=w.numel() * w.element_size())
        reason = unavailable or linear_ineligible_reason(linear.weight)
        if reason is None and decision.tokens is None:
            reason = "not called by the example inputs (no token count to decide on)"
        if reason:
            decision.reason = reason
        else:
            candidates.add(name)
    return decisions, candidates


class _Decider:
    """Decides one layer by the policy; timings of equal shapes and layouts are measured once."""

    def __init__(self, decisions: dict[str, LayerDecision], linears: dict[str, nn.Linear], policy: str,
                 margin: float, say: Callable[[str], None]):
        self.decisions, self.linears, self.policy, self.margin, self.say = decisions, linears, policy, margin, say
        self.measured: dict[tuple, tuple[float, float]] = {}  # same shape, same layouts: time once

    def decide(self, name: str) -> None:
        d, linear = self.decisions[name], self.linears[name]
        tokens = d.tokens
        if tokens is None:  # candidates ran; kept for the type checker's sake as a real guard
            d.reason = "not called by the example inputs (no token count to decide on)"
            return
        if self.policy == "all":
            d.sparse, d.reason = True, "policy all"
        elif self.policy == "rule":
            d.sparse, d.reason = size_rule(tokens, d.in_features, d.out_features, d.output_layout)
        else:
            key = (tokens, d.in_features, d.out_features, d.dtype, linear.bias is not None, d.input_layout, d.output_layout)
            if key not in self.measured:
                self.measured[key] = _measure(linear, tokens, d.input_layout, d.output_layout)
            d.dense_us, d.sparse_us = self.measured[key]
            d.sparse = d.sparse_us < d.dense_us * (1 - self.margin)
            d.reason = (f"measured {d.dense_us / d.sparse_us:.2f}x dense "
                        f"({'faster' if d.sparse else f'not {self.margin:.0%} faster'}; {d.input_layout}-major in, "
                        f"{d.output_layout}-major out)")
        self.say(f"{name}: {'2:4' if d.sparse else 'dense'} - {d.reason}")


def _swap_in(model: nn.Module, decisions: dict[str, LayerDecision], linears: dict[str, nn.Linear]) -> dict[str, nn.Linear]:
    """Put a SparseLinear where the decision says 2:4; the replaced Linears by name."""
    originals: dict[str, nn.Linear] = {}
    for name, d in decisions.items():
        if d.sparse:
            originals[name] = linears[name]
            sparse = SparseLinear(linears[name], d.output_layout)
            d.sparse_weight_bytes = sparse.weight_bytes()
            _set_module(model, name, sparse)
    return originals


def _guard(model: nn.Module, inputs: tuple, decisions: dict[str, LayerDecision], originals: dict[str, nn.Linear],
           dense_ms: float, say: Callable[[str], None]) -> None:
    """Keep the 2:4 layers only if the whole model got faster; otherwise put the Linears back."""
    sparse_ms = _model_ms(model, inputs)
    if sparse_ms > dense_ms:
        for name, linear in originals.items():
            _set_module(model, name, linear)
            decisions[name].sparse = False
            decisions[name].sparse_weight_bytes = None
            decisions[name].reason += (f"; reverted: the whole model ran {sparse_ms:.3f} ms with 2:4 layers vs "
                                       f"{dense_ms:.3f} ms dense")
        say(f"guard: 2:4 model {sparse_ms:.3f} ms vs dense {dense_ms:.3f} ms - kept dense")
    else:
        say(f"guard: 2:4 model {sparse_ms:.3f} ms vs dense {dense_ms:.3f} ms ({dense_ms / sparse_ms:.2f}x)")


def _model_ms(model: nn.Module, inputs: tuple) -> float:
    from sparsify_torch_runtime.timing import graphed_time_us

    return graphed_time_us(lambda: model(*inputs), reps=3, iters=9) / 1000.0


def format_decisions(decisions: list[LayerDecision]) -> str:
    header = ["layer", "shape", "dtype", "tokens", "runs", "layout in/out", "dense us", "2:4 us", "reason"]
    rows = [[d.name, f"{d.out_features}x{d.in_features}", d.dtype, "-" if d.tokens is None else str(d.tokens),
             "2:4" if d.sparse else "dense", f"{d.input_layout}/{d.output_layout}" if d.sparse else "-",
             "-" if d.dense_us is None else f"{d.dense_us:.1f}", "-" if d.sparse_us is None else f"{d.sparse_us:.1f}",
             d.reason] for d in decisions]
    lines = format_table(header, rows)
    sparse = [d for d in decisions if d.sparse]
    dense_bytes = sum(d.dense_weight_bytes for d in sparse)
    sparse_bytes = sum(d.sparse_weight_bytes or 0 for d in sparse)
    lines.append(f"\n{len(sparse)} of {len(decisions)} Linear layers run 2:4")
    if sparse:
        lines.append(f"their weights: {dense_bytes / 2**20:.1f} MiB dense -> {sparse_bytes / 2**20:.1f} MiB 2:4 "
                     f"({sparse_bytes / dense_bytes:.1%})")
    return "\n".join(lines)
