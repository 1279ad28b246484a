"""Data-aware pruning on a ResNet-18-shaped model built in code: what k×k convolutions gain.

    python benchmarks/eval_resnet.py                    # this code
    python benchmarks/eval_resnet.py --today f9e917c    # also the code of revision f9e917c, same run

The model is ResNet-18's layout (7×7 stem, 4 stages of 2 basic blocks with 3×3 convs, 64-512
channels, 1×1 downsample shortcuts, a 1000-way head), random weights (seed 0), BatchNorm folded
into the convs by the export, input 3×112×112.  Calibration: 32 smooth random images; scoring:
64 held-out ones.  Each prune (magnitude, wanda, sparsegpt; every eligible layer 2:4) runs in its
own process; the outputs of sparse and dense models are compared with ONNX Runtime: relative L2
error of the logits (all of it, and the per-image part: deviations from the mean logits over the
held-out set, since random weights give every image a large shared part), top-1 agreement of
the per-image part, and the rows whose method fell back (the code before the
change fell back to magnitude for every k×k conv under sparsegpt).
Results: Markdown on stdout and in ``benchmarks/out/resnet/results.md`` (+ ``.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from _common import ROOT, measure, remove_worktree, worktree, write_results
from torch import nn

HERE = Path(__file__).resolve().parent
PRUNE = ("import json, sys, sparsify; a = json.loads(sys.argv[1]); "
         "sparsify.prune(a.pop('model'), output=a.pop('output'), **a)")


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


def resnet18() -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000)]
    model = nn.Sequential(*layers)
    with torch.no_grad():  # BatchNorm statistics that are not the identity, so the folding matters
        generator = torch.Generator().manual_seed(1)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0, 0.1, generator=generator)
    return model.eval()


def images(count: int, seed: int, size: int = 112) -> np.ndarray:
    """Smooth random images: white noise low-pass filtered (neighbouring pixels correlate)."""
    rng = np.random.default_rng(seed)
    noise = torch.from_numpy(rng.standard_normal((count, 3, size // 8, size // 8)).astype(np.float32))
    return torch.nn.functional.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False).numpy()


def compare(dense: Path, sparse: Path, x: np.ndarray) -> dict:
    def logits(path: Path) -> np.ndarray:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"input": x})[0]

    a, b = logits(dense), logits(sparse)
    # with random weights the logits share a large image-independent part (which bias correction
    # restores): the error on each image's deviation from the mean logits is the sharper measure
    da, db = a - a.mean(axis=0), b - b.mean(axis=0)
    return {"rel_l2": float(np.linalg.norm(b - a) / np.linalg.norm(a)),
            "rel_l2_centered": float(np.linalg.norm(db - da) / np.linalg.norm(da)),
            "top1_agreement": float(np.mean(a.argmax(1) == b.argmax(1))),
            "top1_agreement_centered": float(np.mean(da.argmax(1) == db.argmax(1)))}


def prune(root: Path, model: Path, out: Path, method: str, calibration: Path) -> dict:
    arguments = {"model": str(model), "output": str(out), "method": method, "verify": False,
                 "calibration": [str(calibration)] if method != "magnitude" else None}
    result = measure([sys.executable, "-c", PRUNE, json.dumps(arguments)], cwd=root, env={"PYTHONPATH": str(root)})
    report = json.loads(out.with_name(out.stem + ".report.json").read_text())
    rows = report["targets"]
    result["pruned"] = sum(r["status"] == "pruned" for r in rows)
    result["targets"] = len(rows)
    result["fell_back"] = sum(bool(r.get("method_fallback")) for r in rows)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="magnitude,wanda,sparsegpt")
    parser.add_argument("--today", metavar="REV", help="also run the data-aware methods with the code of revision REV")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "resnet")
    args = parser.parse_args()
    work = args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = resnet18()
    dense = work / "resnet18.onnx"
    torch.onnx.export(model, torch.from_numpy(images(1, 0)), str(dense), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}}, opset_version=17, dynamo=False)
    calibration = work / "calibration.npz"
    np.savez(calibration, input=images(32, 1)[:, None])  # 32 samples of batch 1
    held_out = images(64, 2)
    roots = {"now": ROOT}
    if args.today:
        roots["before"] = worktree(args.today, work / "before")
    rows = []
    try:
        for method in args.methods.split(","):
            for label, root in roots.items():
                if label == "before" and method == "magnitude":
                    continue
                out = work / f"{method}.{label}.onnx"
                result = prune(root, dense, out, method, calibration)
                rows.append({"method": method, "code": label, **result, **compare(dense, out, held_out)})
    finally:
        if args.today:
            remove_worktree(work / "before")
    lines = ["ResNet-18 shape, random weights, 3×112×112, 32 calibration / 64 held-out smooth random images"
             + (f"; before = {args.today}" if args.today else ""), "",
             "| method | code | pruned / targets | fell back | rel L2 vs dense | rel L2, per-image part | "
             "top-1 agreement, per-image part | seconds | peak MB |",
             "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['code']} | {r['pruned']} / {r['targets']} | {r['fell_back']} | "
                     f"{r['rel_l2']:.4f} | {r['rel_l2_centered']:.4f} | {r['top1_agreement_centered']:.3f} | "
                     f"{r['seconds']:.1f} | {r['peak_rss_mb']:.0f} |")
    write_results(args.out, "\n".join(lines), rows)


if __name__ == "__main__":
    main()
