"""Run the lottery samples over several seeds and print the table the samples README quotes.

    .venv/bin/python samples/run_lottery_samples.py --seeds 3 --out samples/build/lottery
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sparsify.lottery.run import run_lottery
from sparsify.lottery.search import TicketConfig
from sparsify.pattern import parse_pattern

HERE = Path(__file__).resolve().parent
RUNS = [
    ("mnist1d_mlp", "2:4", None, 20),
    ("mnist1d_mlp", None, 0.9, 20),
    ("digits_convnet", "2:4", None, 15),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "build" / "lottery")
    args = parser.parse_args()
    rows = []
    for recipe, pattern, sparsity, epochs in RUNS:
        results = []
        for seed in range(args.seeds):
            config = TicketConfig(pattern=parse_pattern(pattern) if pattern else None, sparsity=sparsity, epochs=epochs,
                                  rewind_epoch=1, seed=seed)
            out = args.out / f"{recipe}-{pattern or sparsity}-s{seed}"
            results.append(run_lottery(f"{HERE / 'lottery_recipes.py'}:{recipe}", config, out, progress=lambda _s: None))
        mean = lambda key, results=results: float(np.mean([r[key] for r in results]))  # noqa: E731
        control = lambda name, results=results: float(np.mean([r["controls"][name]["accuracy"] for r in results]))  # noqa: E731
        rows.append((recipe, pattern or f"unstructured {sparsity:.0%}", mean("dense_accuracy"), mean("ticket_accuracy"),
                     1 - mean("ticket_density"), control("random_reinit"), control("one_shot_magnitude"),
                     sum(r["onnx"].get("non_compliant_targets", 0) for r in results)))
        print(rows[-1], flush=True)
    lines = ["| model | ticket | dense | ticket | sparsity | random re-init | one-shot magnitude | non-N:M ONNX targets |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r[0]} | {r[1]} | {r[2]:.4f} | {r[3]:.4f} | {r[4]:.1%} | {r[5]:.4f} | {r[6]:.4f} | {r[7]} |" for r in rows]
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(text + "\n")
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
