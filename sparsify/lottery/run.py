"""``sparsify lottery``: search, then carry the ticket through the ONNX pass and plot it."""

from __future__ import annotations

import json
from pathlib import Path

from sparsify.errors import UsageError
from sparsify.lottery.recipe import load_recipe
from sparsify.lottery.runkey import check_or_start, run_fields
from sparsify.lottery.search import TicketConfig, find_ticket, seed_everything

__all__ = ["run_lottery"]


def _plot(report: dict, path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot skipped: matplotlib is not installed (pip install matplotlib)"
    rounds = report["rounds"]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([1 - r["density"] for r in rounds], [r["accuracy"] for r in rounds], "o-", label="ticket (IMP + rewind)")
    ax.axhline(report["dense_accuracy"], color="gray", ls="--", label="dense")
    markers = {"random_reinit": "x", "one_shot_magnitude": "s"}
    for name, control in report["controls"].items():
        ax.plot([1 - control["density"]], [control["accuracy"]], markers.get(name, "^"), label=name.replace("_", " "))
    ax.set_xlabel("sparsity")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return ""


def _numbered(stem: str, count: int) -> list[str]:
    return [stem if i == 0 else f"{stem}_{i}" for i in range(count)]


def export_names(recipe) -> dict:
    """ticket.onnx's readable input/output names and a dynamic batch axis: the recipe's optional
    ``input_names`` / ``output_names`` / ``dynamic_axes``, else ``input``, ``input_1`` ... and
    ``output`` ... with axis 0 of each dynamic."""
    import torch  # noqa: TID251 - lottery needs torch anyway

    example = recipe.example_inputs if isinstance(recipe.example_inputs, tuple | list) else (recipe.example_inputs,)
    inputs = getattr(recipe, "input_names", None) or _numbered("input", len(example))
    outputs = getattr(recipe, "output_names", None)
    if outputs is None:
        with torch.no_grad():
            result = recipe.model.eval()(*example)
        outputs = _numbered("output", len(result) if isinstance(result, tuple | list) else 1)
    axes = getattr(recipe, "dynamic_axes", None)
    if axes is None:
        axes = {name: {0: "batch"} for name in [*inputs, *outputs]}
    return {"input_names": list(inputs), "output_names": list(outputs), "dynamic_axes": axes}


def run_lottery(recipe_spec: str, config: TicketConfig, out: str | Path, progress=print, force: bool = False) -> dict:
    """Search a ticket, export it to ONNX (every pruned target checked N:M), write the report."""
    from sparsify.api import check
    from sparsify.torch_import.prune_module import prune_torch

    if (config.pattern is None) == (config.sparsity is None):
        raise UsageError("give --pattern N:M or --sparsity S (unstructured), not both")
    if config.sparsity is not None and not 0 < config.sparsity < 1:
        raise UsageError("--sparsity must be in (0, 1)")
    if not 0 <= config.rewind_epoch < config.epochs:
        raise UsageError("--rewind-iter must be >= 0 and below --epochs")
    out = Path(out)
    check_or_start(out, run_fields(recipe_spec, config), force, progress)
    seed_everything(config.seed)  # before the recipe builds its model: initial weights follow --seed
    recipe = load_recipe(recipe_spec)
    found = find_ticket(recipe, config, out, progress)
    report = found["report"]
    onnx_report = prune_torch(recipe.model, recipe.example_inputs, out / "ticket.onnx", masks=found["masks"],
                                       report_path=out / "ticket.onnx.report.json", **export_names(recipe))
    sparse_targets = onnx_report.count("pruned") + onnx_report.count("already_nm")  # ticket weights hold zeros already
    report["onnx"] = {"path": str(out / "ticket.onnx"), "pruned_targets": sparse_targets,
                      "masked_not_nm_targets": onnx_report.count("masked_not_nm"),  # unstructured tickets
                      "parity_verified": bool(onnx_report.parity and onnx_report.parity.verified)}
    if config.pattern is not None:
        audit = check(out / "ticket.onnx", config.pattern)
        report["onnx"]["non_compliant_targets"] = audit.count("non_compliant")
    note = _plot(report, out / "accuracy_vs_sparsity.png")
    report["plot"] = note or str(out / "accuracy_vs_sparsity.png")
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report
