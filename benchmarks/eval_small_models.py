"""One-shot 2:4 accuracy on the samples' models: the MLP on MNIST-1D and the conv net on digits.

    .venv-eval/bin/python benchmarks/eval_small_models.py [--seeds 3]

Trains each model of ``samples/lottery_recipes.py`` densely with its own recipe (CPU,
seconds), exports it to ONNX, then prunes every eligible layer to 2:4 with magnitude, wanda and sparsegpt (calibration: 512 training samples) and
measures test accuracy with ONNX Runtime; finally the accuracy budget
(``--max-accuracy-drop 0.01`` on a validation half of the test set; accuracies are reported
on the other half) on top of the best method.
Data: ``mnist1d`` (generated locally) and scikit-learn's bundled digits.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from _common import write_results

import sparsify


def _recipes():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "samples" / "lottery_recipes.py"
    spec = importlib.util.spec_from_file_location("lottery_recipes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def accuracy(path, x, y):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return float(np.mean(np.argmax(session.run(None, {"input": x})[0], 1) == y))


def evaluate(name, epochs, seed, out: Path):
    """Train the sample's model (samples/lottery_recipes.py) densely, then prune it one-shot."""
    torch.manual_seed(seed)
    recipe = getattr(_recipes(), name)()
    x, y, xt, yt = (t.numpy() for t in recipe.data)
    # The recipes train on all their training data: split their test set into a validation
    # half (the budget's --eval) and a test half (every accuracy reported here).
    order = np.random.default_rng(seed).permutation(len(xt))
    half = len(xt) // 2
    xtr = x
    xval, yval, xte, yte = xt[order[:half]], yt[order[:half]], xt[order[half:]], yt[order[half:]]
    recipe.train(recipe.model, epochs)
    model = recipe.model.eval()
    dense = out / f"{name}_s{seed}.onnx"
    torch.onnx.export(model, torch.from_numpy(xtr[:1]), str(dense), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)
    np.savez(out / "calib.npz", input=xtr[:512])
    np.savez(out / "val.npz", input=xval, labels=yval)
    base = accuracy(dense, xte, yte)
    row = {"model": name, "seed": seed, "dense": base}
    for method in ("magnitude", "wanda", "sparsegpt"):
        sparse = out / f"{name}_s{seed}.{method}.onnx"
        report = sparsify.prune(dense, output=sparse, method=method, verify=False,
                                calibration=[str(out / "calib.npz")] if method != "magnitude" else None)
        row[method] = accuracy(sparse, xte, yte)
        rows = report.rows if hasattr(report, "rows") else report.targets  # also runs an earlier revision's code
    row["pruned"], row["targets"] = report.count("pruned"), len(rows)
    best = max(("wanda", "sparsegpt"), key=lambda m: row[m])
    budget = out / f"{name}_s{seed}.budget.onnx"
    report = sparsify.prune(dense, output=budget, method=best, verify=False, calibration=[str(out / "calib.npz")],
                            max_accuracy_drop=0.01, eval_data=str(out / "val.npz"))
    row["budget_method"], row["budget_test"] = best, accuracy(budget, xte, yte)
    row["budget_val_drop"], row["budget_dense_layers"] = report.budget["final_loss"], len(report.budget["kept_dense"])
    print(row, flush=True)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "small_models")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    rows = []
    for seed in range(args.seeds):
        rows.append(evaluate("mnist1d_mlp", 20, seed, args.out))
        rows.append(evaluate("digits_convnet", 15, seed, args.out))
    lines = ["| model | dense | magnitude | wanda | sparsegpt | best data-aware loss / magnitude loss | budget 0.01 (val): test acc, dense layers |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for name in ("mnist1d_mlp", "digits_convnet"):
        sel = [r for r in rows if r["model"] == name]
        mean = {k: float(np.mean([r[k] for r in sel])) for k in ("dense", "magnitude", "wanda", "sparsegpt", "budget_test")}
        mag_loss = mean["dense"] - mean["magnitude"]
        best_loss = mean["dense"] - max(mean["wanda"], mean["sparsegpt"])
        ratio = best_loss / mag_loss if mag_loss > 0 else float("nan")
        layers = ", ".join(str(r["budget_dense_layers"]) for r in sel)
        lines.append(f"| {name} ({sel[0]['pruned']}/{sel[0]['targets']} layers 2:4, {len(sel)} seeds) | {mean['dense']:.4f} | "
                     f"{mean['magnitude']:.4f} | {mean['wanda']:.4f} | {mean['sparsegpt']:.4f} | {ratio:.2f} | "
                     f"{mean['budget_test']:.4f} ({layers}) |")
    text = "\n".join(lines)
    write_results(args.out, text, rows)


if __name__ == "__main__":
    main()
