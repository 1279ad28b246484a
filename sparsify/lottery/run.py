"""``sparsify lottery``: search, then carry the ticket through the ONNX pass and plot it."""

from __future__ import annotations

import json
from pathlib import Path

from sparsify.errors import UsageError
from sparsify.lottery.recipe import load_recipe
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


def run_lottery(recipe_spec: str, config: TicketConfig, out: str | Path, progress=print) -> dict:
    """Search a ticket, export it to ONNX (every pruned target checked N:M), write the report."""
    import sparsify

    if (config.pattern is None) == (config.sparsity is None):
        raise UsageError("give --pattern N:M or --sparsity S (unstructured), not both")
    if config.sparsity is not None and not 0 < config.sparsity < 1:
        raise UsageError("--sparsity must be in (0, 1)")
    if not 0 <= config.rewind_epoch < config.epochs:
        raise UsageError("--rewind-iter must be >= 0 and below --epochs")
    out = Path(out)
    seed_everything(config.seed)  # before the recipe builds its model: initial weights follow --seed
    recipe = load_recipe(recipe_spec)
    found = find_ticket(recipe, config, out, progress)
    report = found["report"]
    onnx_report = sparsify.prune_torch(recipe.model, recipe.example_inputs, out / "ticket.onnx", masks=found["masks"],
                                       report_path=out / "ticket.onnx.report.json")
    sparse_targets = onnx_report.count("pruned") + onnx_report.count("already_nm")  # ticket weights hold zeros already
    report["onnx"] = {"path": str(out / "ticket.onnx"), "pruned_targets": sparse_targets,
                      "parity_verified": bool(onnx_report.parity and onnx_report.parity.verified)}
    if config.pattern is not None:
        audit = sparsify.check(out / "ticket.onnx", config.pattern)
        report["onnx"]["non_compliant_targets"] = audit.count("non_compliant")
    note = _plot(report, out / "accuracy_vs_sparsity.png")
    report["plot"] = note or str(out / "accuracy_vs_sparsity.png")
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report
