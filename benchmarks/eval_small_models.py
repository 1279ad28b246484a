"""One-shot 2:4 accuracy on small trained models: an MLP on MNIST-1D, a conv net on digits.

    .venv-eval/bin/python benchmarks/eval_small_models.py [--seeds 3]

Trains each model with PyTorch (CPU, seconds), exports it to ONNX, then prunes every eligible
layer to 2:4 with magnitude, wanda and sparsegpt (calibration: 512 training samples) and
measures test accuracy with ONNX Runtime; finally the accuracy budget
(``--max-accuracy-drop 0.01`` with a validation split) on top of the best method.
Data: ``mnist1d`` (generated locally) and scikit-learn's bundled digits.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

import sparsify


def mnist1d_data(seed):
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = 42  # the standard data set; the model seed varies
    d = make_dataset(args)
    return d["x"].astype(np.float32), d["y"].astype(np.int64), d["x_test"].astype(np.float32), d["y_test"].astype(np.int64)


def digits_data(seed):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    xtr, xte, ytr, yte = train_test_split(x, digits.target.astype(np.int64), test_size=0.3, random_state=0)
    return xtr, ytr, xte, yte


def mlp():
    return nn.Sequential(nn.Linear(40, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


def convnet():
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(32 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 10))


def train(model, x, y, epochs, seed, lr=3e-3):
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        order = torch.randperm(len(xs))
        for i in range(0, len(xs), 64):
            idx = order[i : i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xs[idx]), ys[idx]).backward()
            opt.step()
    return model.eval()


def accuracy(path, x, y):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return float(np.mean(np.argmax(session.run(None, {"input": x})[0], 1) == y))


def evaluate(name, data_fn, make, epochs, seed, out: Path):
    torch.manual_seed(seed)
    xtr, ytr, xte, yte = data_fn(seed)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(xtr))
    val, fit = order[:400], order[400:]
    model = train(make(), xtr[fit], ytr[fit], epochs, seed)
    dense = out / f"{name}_s{seed}.onnx"
    torch.onnx.export(model, torch.from_numpy(xtr[:1]), str(dense), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)
    np.savez(out / "calib.npz", input=xtr[fit][:512])
    np.savez(out / "val.npz", input=xtr[val], labels=ytr[val])
    base = accuracy(dense, xte, yte)
    row = {"model": name, "seed": seed, "dense": base}
    for method in ("magnitude", "wanda", "sparsegpt"):
        sparse = out / f"{name}_s{seed}.{method}.onnx"
        report = sparsify.prune(dense, output=sparse, method=method, verify=False,
                                calibration=[str(out / "calib.npz")] if method != "magnitude" else None)
        row[method] = accuracy(sparse, xte, yte)
        row["pruned"], row["targets"] = report.count("pruned"), len(report.targets)
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
        rows.append(evaluate("mnist1d_mlp", mnist1d_data, mlp, 60, seed, args.out))
        rows.append(evaluate("digits_convnet", digits_data, convnet, 30, seed, args.out))
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
    print(text)
    (args.out / "results.md").write_text(text + "\n")
    (args.out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
