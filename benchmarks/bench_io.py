"""The magnitude pass and `check` against `cp` and `cat` of the same multi-GB external-data model.

    python benchmarks/bench_io.py [--layers 10] [--rounds 2] [--cold] [--today REV] [--model M.onnx]

Builds (unless ``--model`` is given) a decoder of d4096 attention projections and ff11008
gated MLPs with its weights in one external data file (10 layers ~ 8 GB), then runs, in
alternating rounds so drifts of a shared machine hit every command alike:
- ``cp`` of the model and its data into the work folder, against ``sparsify --no-verify``
  (goal: <= 1.2x cp; every output byte written once);
- ``cat`` of the model and its data to /dev/null, against ``sparsify check`` (goal <= 1.2x);
- with ``--today REV`` the same two sparsify commands from a git worktree of REV.

Default: page cache warmed first (one ``cat``), a ``sync`` before each command (untimed) so no
command pays for the previous one's writes: what a repeated run sees.
``--cold``: before every command the page cache is dropped (needs root:
``/proc/sys/vm/drop_caches``) and each time includes a ``sync`` of what the command wrote: what
a model that does not stay in memory costs, disk included.  Medians per command; results in
``benchmarks/out/io/results.md`` (+ ``.json``).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import measure, remove_worktree, worktree, write_results

HERE = Path(__file__).resolve().parent
PY = sys.executable
BIN = Path(PY).parent


def files_of(model: Path) -> list[Path]:
    data = model.with_name(model.name + ".data")
    return [model, data] if data.exists() else [model]


def drop_caches() -> None:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:
        raise SystemExit(f"--cold needs root to drop the page cache: {exc}") from None


def timed(cmd: list[str], cold: bool, cwd: Path | None = None) -> dict:
    os.sync()  # the previous command's writes do not land in this one's time
    if cold:
        drop_caches()
    result = measure(cmd, cwd=cwd)
    if cold:  # what the command wrote reaches the disk within its time
        start = time.perf_counter()
        os.sync()
        result["seconds"] = round(result["seconds"] + time.perf_counter() - start, 2)
    return result


def sparsify(root: Path | None, *args: str) -> list[str]:
    if root is None:
        return [str(BIN / "sparsify"), *args]
    return ["env", f"PYTHONPATH={root}", PY, "-m", "sparsify", *args]


def remove(work: Path, prefix: str) -> None:
    for path in work.glob(prefix + "*"):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def one_round(model: Path, work: Path, cold: bool, today: Path | None) -> dict[str, dict]:
    out: dict[str, dict] = {}
    copies = work / "copy"
    copies.mkdir(exist_ok=True)
    out["cp"] = timed(["cp", *map(str, files_of(model)), str(copies)], cold)
    remove(work, "copy")
    for label, root in (("sparsify", None), ("sparsify (before)", today)):
        if label.endswith("(before)") and root is None:
            continue
        out[label] = timed(sparsify(root, str(model), "-o", str(work / "pruned.onnx"), "--no-verify", "-q"), cold, cwd=root)
        remove(work, "pruned.")
    out["cat"] = timed(["sh", "-c", "cat " + " ".join(map(str, files_of(model))) + " > /dev/null"], cold)
    for label, root in (("sparsify check", None), ("sparsify check (before)", today)):
        if label.endswith("(before)") and root is None:
            continue
        out[label] = timed(sparsify(root, "check", str(model), "-q"), cold, cwd=root)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=10, help="decoder layers (~0.81 GB each)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cold", action="store_true", help="drop the page cache before each command (root)")
    parser.add_argument("--today", metavar="REV", help="also run sparsify from a git worktree of REV")
    parser.add_argument("--model", type=Path, help="use this external-data model instead of building one")
    parser.add_argument("--workdir", type=Path, default=HERE / "out" / "io" / "work")
    args = parser.parse_args()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    model = args.model
    if model is None:
        model = work / "decoder.onnx"
        subprocess.run([PY, str(HERE / "make_transformer.py"), str(model), "--layers", str(args.layers),
                        "--d-model", "4096", "--d-ff", "11008", "--gated", "--external"], check=True,
                       stdout=subprocess.DEVNULL)
    size_gb = sum(f.stat().st_size for f in files_of(model)) / 1e9
    today = worktree(args.today, work / "today") if args.today else None
    try:
        if not args.cold:
            subprocess.run(["sh", "-c", "cat " + " ".join(map(str, files_of(model))) + " > /dev/null"], check=True)
        rounds = [one_round(model, work, args.cold, today) for _ in range(args.rounds)]
    finally:
        if today is not None:
            remove_worktree(today)
    labels = list(rounds[0])
    median = {label: statistics.median(r[label]["seconds"] for r in rounds) for label in labels}
    rss = {label: max(r[label]["peak_rss_mb"] for r in rounds) for label in labels}
    mode = "cold cache, sync included" if args.cold else "page cache warm"
    lines = [f"{model.name}: {size_gb:.2f} GB, {mode}, {args.rounds} alternating rounds (median; every run listed)", "",
             "| command | median s | runs (s) | peak RSS (MB) |", "|---|---:|---|---:|"]
    for label in labels:
        runs = ", ".join(f"{r[label]['seconds']:.2f}" for r in rounds)
        lines.append(f"| {label} | {median[label]:.2f} | {runs} | {rss[label]:.0f} |")
    lines.append("")
    lines.append(f"- sparsify / cp: {median['sparsify'] / median['cp']:.2f}x (goal <= 1.2x)")
    lines.append(f"- check / cat: {median['sparsify check'] / median['cat']:.2f}x (goal <= 1.2x)")
    if today is not None:
        lines.append(f"- before ({args.today}): sparsify / cp {median['sparsify (before)'] / median['cp']:.2f}x, "
                     f"check / cat {median['sparsify check (before)'] / median['cat']:.2f}x")
    results = {"machine": f"{platform.node()} {os.cpu_count()} CPUs", "python": platform.python_version(),
               "model_gb": round(size_gb, 2), "mode": mode, "today": args.today, "rounds": rounds, "median": median}
    write_results(HERE / "out" / "io", "\n".join(lines), results)
    if args.model is None:
        remove(work, "decoder.onnx")


if __name__ == "__main__":
    main()
