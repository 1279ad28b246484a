"""Speed and memory of the ONNX pass against baselines measured in the same run.

    python benchmarks/bench_prune.py [--layers 24] [--poly-layers 2] [--external-layers 44] [--workdir DIR]

Each command runs in its own process; wall time and peak RSS (``ru_maxrss`` of that child)
are recorded.  Baselines:
- the I/O floor: ``onnx.load`` + ``onnx.save`` of the same file;
- ``polygraphy surgeon prune`` (a Python loop per group of 4; run on a smaller model of the
  same shape because it takes ~11 minutes on the full one; sparsify runs on it too, so the
  ratio is measured on the same file).
Then a >2 GB external-data model: sparsify vs the external-data load+save floor.
Also on each model: ``cp`` of the model (and its data) against ``sparsify --no-verify`` (every
output byte is written once: goal <= 1.2x cp), ``cat`` of it against ``sparsify check``, and with
``--today REV`` the same commands from a git worktree of REV (the code before a change), so one
run shows before and after on the same files.
Results: a Markdown table on stdout and in ``benchmarks/out/results.md`` (+ ``.json``).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from _common import measure, remove_worktree, worktree, write_results

HERE = Path(__file__).resolve().parent
PY = sys.executable
BIN = Path(PY).parent

FLOOR = ("import onnx, sys; m = onnx.load(sys.argv[1]); onnx.save(m, sys.argv[2])")
FLOOR_EXTERNAL = ("import onnx, sys, os; m = onnx.load(sys.argv[1]); "
                  "onnx.save(m, sys.argv[2], save_as_external_data=True, location=os.path.basename(sys.argv[2]) + '.data')")


def file_mb(path: Path) -> float:
    total = path.stat().st_size
    data = path.with_name(path.name + ".data")
    if data.exists():
        total += data.stat().st_size
    return total / 2**20


def make(path: Path, layers: int, external: bool) -> None:
    cmd = [PY, str(HERE / "make_transformer.py"), str(path), "--layers", str(layers)]
    subprocess.run(cmd + (["--external"] if external else []), check=True, stdout=subprocess.DEVNULL)


def sparsify_cmd(src: Path, out: Path, root: Path | None = None) -> list[str]:
    """``sparsify`` from this checkout, or (``root``) from another one's source tree."""
    if root is not None:
        return ["env", f"PYTHONPATH={root}", PY, "-m", "sparsify", str(src), "-o", str(out), "--no-verify", "-q"]
    return [str(BIN / "sparsify"), str(src), "-o", str(out), "--no-verify", "-q"]


def check_cmd(src: Path, root: Path | None = None) -> list[str]:
    prefix = ["env", f"PYTHONPATH={root}", PY, "-m", "sparsify"] if root is not None else [str(BIN / "sparsify")]
    return [*prefix, "check", str(src), "-q"]


def files_of(model: Path) -> list[Path]:
    data = model.with_name(model.name + ".data")
    return [model, data] if data.exists() else [model]


def clean(*paths: Path) -> None:
    for p in paths:
        for q in (p, p.with_name(p.name + ".data")):
            if q.exists():
                q.unlink()


def remove_outputs(work: Path, stem: str) -> None:
    for path in work.glob(f"{stem}*"):
        path.unlink()


def against_floor(work: Path, name: str, layers: int, external: bool, rows: list, today: Path | None) -> dict:
    """Build a model, then time the baselines and sparsify on it, each in its own process."""
    model = work / f"{name}.onnx"
    make(model, layers, external=external)
    size = file_mb(model)
    copy = " && ".join(f"cp {f} {work / ('copy.' + f.name)}" for f in files_of(model))
    cp = measure(["sh", "-c", copy])
    remove_outputs(work, "copy.")
    cat = measure(["sh", "-c", "cat " + " ".join(str(f) for f in files_of(model)) + " > /dev/null"])
    floor = measure([PY, "-c", FLOOR_EXTERNAL if external else FLOOR, str(model), str(work / f"{name}.floor.onnx")])
    remove_outputs(work, f"{name}.floor.onnx")
    ours = measure(sparsify_cmd(model, work / f"{name}.sparse.onnx"))
    remove_outputs(work, f"{name}.sparse.onnx")
    check = measure(check_cmd(model))
    kind = "external data" if external else "embedded"
    rows.append((f"{layers}x d1024/ff4096, {size:.0f} MB, {kind}", "cp (model + data)", cp, size))
    rows.append(("", "cat > /dev/null", cat, size))
    rows.append(("", "onnx load+save (floor)", floor, size))
    rows.append(("", "sparsify --no-verify", ours, size))
    rows.append(("", "sparsify check", check, size))
    result = {"file_mb": round(size, 1), "cp": cp, "cat": cat, "floor": floor, "sparsify": ours, "check": check}
    if today is not None:
        result["today"] = measure(sparsify_cmd(model, work / f"{name}.today.onnx", today), cwd=today)
        remove_outputs(work, f"{name}.today.onnx")
        result["today_check"] = measure(check_cmd(model, today), cwd=today)
        rows.append(("", "sparsify --no-verify (before)", result["today"], size))
        rows.append(("", "sparsify check (before)", result["today_check"], size))
    clean(model)
    return result


def today_worktree(rev: str, work: Path) -> Path:
    return worktree(rev, work / "today")


def ratio_lines(label: str, r: dict) -> list[str]:
    lines = [f"- {label}: sparsify / cp {r['sparsify']['seconds'] / r['cp']['seconds']:.2f}x (goal <= 1.2x); "
             f"check / cat {r['check']['seconds'] / r['cat']['seconds']:.2f}x (goal <= 1.2x)"]
    if "today" in r:
        lines.append(f"- {label}, before the change: sparsify / cp {r['today']['seconds'] / r['cp']['seconds']:.2f}x; "
                     f"check / cat {r['today_check']['seconds'] / r['cat']['seconds']:.2f}x")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--poly-layers", type=int, default=4)
    parser.add_argument("--external-layers", type=int, default=48, help="48 layers ~ 2.4 GB (> 2 GiB)")
    parser.add_argument("--skip-polygraphy", action="store_true")
    parser.add_argument("--workdir", type=Path, default=HERE / "out" / "work")
    parser.add_argument("--today", metavar="REV", help="also run sparsify from a git worktree of REV (before/after)")
    args = parser.parse_args()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    rows, results = [], {"machine": f"{platform.node()} {os.cpu_count()} CPUs", "python": platform.python_version()}
    today = today_worktree(args.today, work) if args.today else None
    if today is not None:
        results["today"] = args.today

    results["embedded"] = against_floor(work, "bert_large", args.layers, False, rows, today)

    if not args.skip_polygraphy:
        small = work / "small.onnx"
        make(small, args.poly_layers, external=False)
        small_size = file_mb(small)
        poly = measure([str(BIN / "polygraphy"), "surgeon", "prune", str(small), "-o", str(work / "small.poly.onnx")])
        ours_small = measure(sparsify_cmd(small, work / "small.sparse.onnx"))
        clean(small, work / "small.poly.onnx", work / "small.sparse.onnx")
        results["polygraphy"] = {"file_mb": round(small_size, 1), "polygraphy": poly, "sparsify": ours_small,
                                 "speedup": round(poly["seconds"] / ours_small["seconds"], 1)}
        rows.append((f"{args.poly_layers}x d1024/ff4096, {small_size:.0f} MB, embedded", "polygraphy surgeon prune", poly, small_size))
        rows.append(("", "sparsify --no-verify", ours_small, small_size))

    results["external"] = against_floor(work, "external", args.external_layers, True, rows, today)

    lines = ["| model | tool | seconds | peak RSS (MB) | RSS / model size |", "|---|---|---:|---:|---:|"]
    for model, tool, m, mb in rows:
        lines.append(f"| {model} | {tool} | {m['seconds']:.2f} | {m['peak_rss_mb']:.0f} | {m['peak_rss_mb'] / mb:.2f} |")
    e = results["embedded"]
    lines.append("")
    lines.append(f"- sparsify / load+save floor (time): {e['sparsify']['seconds'] / e['floor']['seconds']:.2f}x "
                 f"(goal <= 2x); peak RSS / file size: {e['sparsify']['peak_rss_mb'] / e['file_mb']:.2f} (goal <= 1.5)")
    if "polygraphy" in results:
        p = results["polygraphy"]
        lines.append(f"- polygraphy / sparsify on the same {p['file_mb']:.0f} MB file: {p['speedup']}x (goal >= 100x)")
        scaled = p["polygraphy"]["seconds"] * e["file_mb"] / p["file_mb"]
        lines.append(f"- polygraphy scaled linearly to the {e['file_mb']:.0f} MB model: ~{scaled:.0f} s, "
                     f"{scaled / e['sparsify']['seconds']:.0f}x sparsify's measured time on it")
    x = results["external"]
    lines.append(f"- external data: sparsify / floor {x['sparsify']['seconds'] / x['floor']['seconds']:.2f}x time, "
                 f"peak RSS / model size {x['sparsify']['peak_rss_mb'] / x['file_mb']:.2f}")
    lines += ratio_lines("embedded", e) + ratio_lines("external data", x)
    text = "\n".join(lines)
    write_results(HERE / "out", text, results)
    if today is not None:
        remove_worktree(today)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
