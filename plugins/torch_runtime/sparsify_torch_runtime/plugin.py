"""The ``sparsify torch-runtime`` subcommand: which 2:4 Linear layers of a PyTorch model run
faster on this GPU's cuSPARSELt kernels, and how fast the model then is end to end."""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
from pathlib import Path

from sparsify.plugin_api import MissingComponent, UsageError

__all__ = ["plugin"]


class TorchRuntimePlugin:
    name = "torch-runtime"
    commands = ["torch-runtime"]
    description = "run a PyTorch model's 2:4 Linear layers on cuSPARSELt where that is faster (needs a CUDA GPU)"

    def requires(self) -> list[str]:
        return [] if importlib.util.find_spec("torch") is not None else ["torch"]

    def add_parser(self, sub, info) -> None:
        p = sub.add_parser("torch-runtime", help=self.description, description=self.description)
        p.add_argument("recipe", help="RECIPE as for `sparsify lottery` (its model and example_inputs are used)")
        p.add_argument("--weights", help="state dict to load (e.g. the ticket.pt `sparsify lottery` writes)")
        p.add_argument("--dtype", choices=["fp16", "bf16"], default="fp16")
        p.add_argument("--policy", choices=["measure", "rule", "all"], default="measure",
                       help="how each layer is decided (default: time dense vs 2:4 at the example inputs' size)")
        p.add_argument("--benchmark", action="store_true", help="time the whole model dense vs converted (CUDA graphs)")
        p.add_argument("--report", help="write the decisions (and benchmark) as JSON here")
        if info.available:
            p.set_defaults(run=run)
        else:
            p.set_defaults(run=lambda _args: (_ for _ in ()).throw(MissingComponent(f"torch-runtime plugin: {info.reason}")))


def run(args: argparse.Namespace) -> int:
    import torch

    from sparsify.plugin_api import check_write_paths, load_recipe, write_atomically
    from sparsify_torch_runtime import GraphedModel, convert, cusparselt_unavailable_reason, format_decisions
    from sparsify_torch_runtime.timing import graphed_time_us

    # Bad input is exit 2 on any machine; only then does a missing GPU make it exit 5.
    if args.report:
        reads = [("recipe", Path(args.recipe))] + ([("--weights file", Path(args.weights))] if args.weights else [])
        check_write_paths(reads, {"--report": Path(args.report)})
    recipe = load_recipe(args.recipe)
    model = recipe.model
    if args.weights:
        try:
            model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
        except Exception as exc:  # noqa: BLE001 - a wrong or corrupt state dict is bad input
            raise UsageError(f"--weights {args.weights}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    reason = cusparselt_unavailable_reason()
    if reason:
        raise MissingComponent(f"sparsify torch-runtime needs a CUDA GPU with cuSPARSELt: {reason}")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    model = model.to("cuda", dtype).eval()
    inputs = recipe.example_inputs if isinstance(recipe.example_inputs, (tuple, list)) else (recipe.example_inputs,)
    inputs = tuple(t.to("cuda", dtype) if t.is_floating_point() else t.to("cuda") for t in inputs)
    dense = copy.deepcopy(model) if args.benchmark else None
    model, decisions = convert(model, inputs, policy=args.policy, progress=print)
    print(format_decisions(decisions))
    result: dict = {"decisions": [d.to_dict() for d in decisions], "device": torch.cuda.get_device_name(),
                    "torch": torch.__version__, "dtype": args.dtype, "policy": args.policy}
    if dense is not None:
        dense_ms = graphed_time_us(lambda: dense(*inputs), reps=3) / 1000
        sparse_ms = graphed_time_us(lambda: model(*inputs), reps=3) / 1000
        GraphedModel(model, inputs)  # the serving path captures too
        result["benchmark"] = {"dense_ms": dense_ms, "sparse_ms": sparse_ms, "speedup": dense_ms / sparse_ms}
        print(f"end to end (CUDA graphs): dense {dense_ms:.3f} ms, 2:4 {sparse_ms:.3f} ms, {dense_ms / sparse_ms:.2f}x")
    if args.report:
        write_atomically(Path(args.report), json.dumps(result, indent=2) + "\n")
    return 0


plugin = TorchRuntimePlugin()
