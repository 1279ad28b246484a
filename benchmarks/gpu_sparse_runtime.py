"""2:4 on a GPU, measured: cuSPARSELt kernels vs dense, and whole encoders through the
sparsify torch runtime (plugins/torch_runtime) vs the same encoders dense — same backend (torch,
CUDA graphs), same run.

    python benchmarks/gpu_sparse_runtime.py            # on a GPU machine; ~3-4 min on an H100/H200
    python benchmarks/gpu_sparse_runtime.py --smoke    # tiny shapes; runs anywhere (CPU: plumbing only)

Needs only torch and numpy (the runtime is imported from plugins/torch_runtime by path).
Prints four tables and writes gpu_sparse_runtime.json under $OUT (or benchmarks/out/):

1. GEMM: dense vs 2:4 kernel time per shape for fp16, bf16, int8 (each call CUDA-graphed), plus
   fp16 with the activations handed over feature-major (what FFN chains do).
2. End to end: BERT-base (12 x d768/ff3072), BERT-large (24 x d1024/ff4096) and a wide encoder
   (4 x d4096/ff16384) at several batch sizes: dense vs converted (`convert()`, measure policy),
   both CUDA-graphed; relative error of the outputs.
3. Memory of the Linear weights that run 2:4, dense vs compressed.
4. Each model's Amdahl bound: its dense Linear time share (every Linear timed alone at its own
   shape in this run) sped up by the kernel ratio measured for that shape in this run (a layer
   whose kernel loses stays dense, ratio 1); then end-to-end / bound (goal >= 0.9) and
   end-to-end vs dense (goal >= 0.98).
Also a kernel profile (torch.profiler) of one wide-encoder forward, dense and 2:4, top kernels.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins" / "torch_runtime"))
from sparsify_torch_runtime import GraphedModel, convert, cusparselt_unavailable_reason  # noqa: E402
from sparsify_torch_runtime.reference import EncoderBlock  # noqa: E402
from sparsify_torch_runtime.timing import graphed_time_us  # noqa: E402

GPU = cusparselt_unavailable_reason() is None
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def mask24(w: torch.Tensor) -> torch.Tensor:
    g = w.reshape(-1, 4)
    keep = torch.zeros_like(g, dtype=torch.bool).scatter_(1, g.abs().float().topk(2, dim=1).indices, True)
    return (g * keep).reshape(w.shape)


def time_us(fn, reps: int = 10) -> float:
    """Per-call time: CUDA-graphed on a GPU (``reps`` calls per graph), wall clock elsewhere (smoke mode)."""
    if DEVICE == "cuda":
        return graphed_time_us(fn, reps=reps)
    fn()
    start = time.perf_counter()
    for _ in range(5):
        fn()
    return (time.perf_counter() - start) / 5 * 1e6


def encoder(d: int, ff: int, layers: int, dtype) -> nn.Module:
    torch.manual_seed(0)
    with torch.device(DEVICE):  # initialise on the GPU: the wide encoder has 800M parameters
        model = nn.Sequential(*[EncoderBlock(d, d // 64, ff) for _ in range(layers)]).to(dtype).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.copy_(mask24(m.weight))
    return model


# ------------------------------------------------------------------ 1. GEMM kernels

def gemm_row(dtype, m: int, k: int, n: int, feature_major: bool = False) -> dict:
    row = {"dtype": str(dtype).removeprefix("torch."), "M": m, "K": k, "N": n,
           "activations": "feature-major" if feature_major else "row-major"}
    try:
        if dtype == torch.int8:
            w = mask24(torch.randint(-8, 8, (n, k), device=DEVICE).float()).to(torch.int8)
            xt = torch.randint(-8, 8, (m, k), device=DEVICE, dtype=torch.int8).t()
            dense = lambda: torch._int_mm(w, xt)  # noqa: E731 - [N,K] @ [K,M] (column-major), int32 out
            kw = {"out_dtype": torch.int32}
        else:
            w = mask24(torch.randn(n, k, device=DEVICE, dtype=dtype))
            xt = torch.randn(k, m, device=DEVICE, dtype=dtype) if feature_major else torch.randn(m, k, device=DEVICE, dtype=dtype).t()
            dense = lambda: torch.mm(w, xt)  # noqa: E731
            kw = {}
        row["dense_us"] = round(time_us(dense), 1)
        if GPU:
            wc = torch._cslt_compress(w)
            sparse = lambda: torch._cslt_sparse_mm(wc, xt, **kw)  # noqa: E731
            a, b = dense().float(), sparse().float()
            row["rel_err"] = float(f"{((a - b).norm() / a.norm()).item():.1e}")
            row["sparse_us"] = round(time_us(sparse), 1)
            row["ratio"] = round(row["dense_us"] / row["sparse_us"], 3)
    except Exception as exc:  # noqa: BLE001 - one failing shape must not end the run
        row["error"] = f"{type(exc).__name__}: {str(exc)[:140]}"
    return row


# ------------------------------------------------------------------ 2-4. models

def linear_shapes(model: nn.Module, x: torch.Tensor) -> list[tuple[int, int, int, bool]]:
    shapes = []

    def record(mod: nn.Linear, args: tuple) -> None:
        shapes.append((args[0].numel() // mod.in_features, mod.in_features, mod.out_features, mod.bias is not None))

    hooks = [m.register_forward_pre_hook(record) for m in model.modules() if isinstance(m, nn.Linear)]
    with torch.inference_mode():
        model(x)
    for h in hooks:
        h.remove()
    return shapes


def amdahl(model_dense_us: float, shapes, dtype, cache: dict) -> dict:
    """Dense Linear share of the model and the bound with the measured kernel ratio per shape."""
    linear_us, saved_us = 0.0, 0.0
    for tokens, k, n, bias in shapes:
        key = (tokens, k, n, bias, dtype)
        if key not in cache:
            w = mask24(torch.randn(n, k, device=DEVICE, dtype=dtype))
            b = torch.randn(n, device=DEVICE, dtype=dtype) if bias else None
            x = torch.randn(tokens, k, device=DEVICE, dtype=dtype)
            dense = time_us(lambda x=x, w=w, b=b: F.linear(x, w, b))
            kernel = dense
            if GPU:
                wc = torch._cslt_compress(w)
                kernel = time_us(lambda wc=wc, x=x, b=b: torch._cslt_sparse_mm(wc, x.t(), bias=b))
            cache[key] = (dense, kernel)
        dense, kernel = cache[key]
        linear_us += dense
        saved_us += max(0.0, dense - kernel)  # a layer whose kernel loses stays dense
    return {"linear_share": linear_us / model_dense_us, "bound": model_dense_us / (model_dense_us - saved_us)}


def model_row(name: str, model: nn.Module, d: int, batch: int, seq: int, dtype, cache: dict, policy: str) -> dict:
    row = {"model": name, "batch": batch, "seq": seq, "dtype": str(dtype).removeprefix("torch.")}
    try:
        x = torch.randn(batch, seq, d, device=DEVICE, dtype=dtype)
        with torch.inference_mode():
            want = model(x).float()
        dense_us = time_us(lambda: model(x), reps=3)
        row.update(amdahl(dense_us, linear_shapes(model, x), dtype, cache))
        sparse_model, decisions = convert(copy.deepcopy(model), x, policy=policy)
        run = GraphedModel(sparse_model, x) if DEVICE == "cuda" else sparse_model
        with torch.inference_mode():
            got = run(x).float()
        sparse_us = time_us(lambda: sparse_model(x), reps=3)
        kept = [dd for dd in decisions if dd.sparse]
        row.update(dense_ms=round(dense_us / 1000, 3), sparse_ms=round(sparse_us / 1000, 3),
                   speedup=round(dense_us / sparse_us, 3), rel_err=float(f"{((got - want).norm() / want.norm()).item():.1e}"),
                   sparse_layers=f"{len(kept)}/{len(decisions)}",
                   dense_weight_mb=round(sum(dd.dense_weight_bytes for dd in kept) / 2**20, 1),
                   sparse_weight_mb=round(sum(dd.sparse_weight_bytes or 0 for dd in kept) / 2**20, 1),
                   kept_dense=sorted({dd.reason.split(";")[0] for dd in decisions if not dd.sparse})[:3])
        row["bound"], row["linear_share"] = round(row["bound"], 3), round(row["linear_share"], 3)
        row["of_bound"] = round(row["speedup"] / row["bound"], 3)
    except Exception as exc:  # noqa: BLE001
        row["error"] = f"{type(exc).__name__}: {str(exc)[:160]}"
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
    return row


def kernel_profile(d: int, ff: int, layers: int, batch: int, seq: int, dtype, top: int = 10) -> dict:
    from torch.profiler import ProfilerActivity, profile

    model = encoder(d, ff, layers, dtype)
    x = torch.randn(batch, seq, d, device=DEVICE, dtype=dtype)
    out = {}
    for label, m in (("dense", model), ("2:4", convert(copy.deepcopy(model), x, policy="all", guard=False)[0])):
        run = GraphedModel(m, x)
        run(x)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            run(x)
            torch.cuda.synchronize()
        events = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
        events.sort(key=lambda e: e.device_time_total, reverse=True)
        out[label] = {"total_ms": round(sum(e.device_time_total for e in events) / 1000, 3),
                      "top": [(e.key[:90], e.count, round(e.device_time_total / 1000, 3)) for e in events[:top]]}
    return out


def table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _print_profile(dtype) -> dict:
    try:
        profile_result = kernel_profile(4096, 16384, 2, 16, 512, dtype)
        print("\n## Kernel profile, 2 x d4096/ff16384, B16 T512 fp16 (ms)\n")
        for label, p in profile_result.items():
            print(f"{label}: {p['total_ms']} ms of kernels")
            for name, count, ms in p["top"]:
                print(f"  {ms:8.3f}  x{count:<4} {name}")
        return profile_result
    except Exception as exc:  # noqa: BLE001
        return {"error": f"{type(exc).__name__}: {str(exc)[:160]}"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, a minute on a CPU: checks the script")
    parser.add_argument("--policy", default="measure", choices=["measure", "rule", "all"])
    parser.add_argument("--budget-s", type=float, default=270, help="skip remaining models after this many seconds")
    args = parser.parse_args()
    start = time.perf_counter()
    print(f"device: {torch.cuda.get_device_name() if DEVICE == 'cuda' else 'CPU'}; torch {torch.__version__}; "
          f"2:4 kernels: {'yes' if GPU else cusparselt_unavailable_reason()}", flush=True)
    if not GPU:
        print("no 2:4 kernels here: the tables below check the script's plumbing, they are not measurements")
    if args.smoke:
        gemm_shapes = [(64, 64, 128)]
        models = [("tiny", 64, 128, 2, [2], 16)]
    else:
        gemm_shapes = [(4096, 768, 3072), (4096, 3072, 768), (4096, 1024, 4096), (4096, 4096, 1024),
                       (8192, 4096, 16384), (8192, 16384, 4096), (1024, 1024, 4096), (128, 4096, 4096)]
        models = [("BERT-base", 768, 3072, 12, [8, 32, 128], 128), ("BERT-large", 1024, 4096, 24, [8, 32, 128], 128),
                  ("wide d4096/ff16384", 4096, 16384, 4, [4, 16], 512)]
    dtypes = [torch.float16, torch.bfloat16, torch.int8] if DEVICE == "cuda" else [torch.bfloat16]
    gemms = [gemm_row(dt, *s) for dt in dtypes for s in gemm_shapes]
    gemms += [gemm_row(dtypes[0], *s, feature_major=True) for s in gemm_shapes]
    print("\n## GEMM: dense vs 2:4 kernel (us per call)\n")
    print(table(gemms, ["dtype", "M", "K", "N", "activations", "dense_us", "sparse_us", "ratio", "rel_err", "error"]), flush=True)
    dtype = torch.float16 if DEVICE == "cuda" else torch.bfloat16
    rows, cache = [], {}
    for name, d, ff, layers, batches, seq in models:
        model = encoder(d, ff, layers, dtype)
        for batch in batches:
            if time.perf_counter() - start > args.budget_s:
                rows.append({"model": name, "batch": batch, "error": f"skipped: over the {args.budget_s:.0f} s budget"})
                continue
            rows.append(model_row(name, model, d, batch, seq, dtype, cache, args.policy))
            print(json.dumps(rows[-1]), flush=True)
        del model
    print("\n## End to end (CUDA graphs, same run): dense vs 2:4 through the runtime\n")
    print(table(rows, ["model", "batch", "seq", "dense_ms", "sparse_ms", "speedup", "sparse_layers", "rel_err", "error"]))
    print("\n## Memory of the Linear weights that run 2:4\n")
    print(table(rows, ["model", "batch", "sparse_layers", "dense_weight_mb", "sparse_weight_mb"]))
    print("\n## Amdahl bound (dense Linear share x kernel ratios of its own shapes, this run)\n")
    print(table(rows, ["model", "batch", "linear_share", "bound", "speedup", "of_bound"]))
    ok = [r for r in rows if "speedup" in r]
    if ok and GPU:
        print(f"\ngoals: end to end >= 0.9 of the bound: {sum(r['of_bound'] >= 0.9 for r in ok)}/{len(ok)}; "
              f">= 0.98x dense: {sum(r['speedup'] >= 0.98 for r in ok)}/{len(ok)}")
    profile_result = None
    if GPU and not args.smoke and time.perf_counter() - start < args.budget_s + 30:
        profile_result = _print_profile(dtype)
    out = Path(os.environ.get("OUT") or ROOT / "benchmarks" / "out")
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_sparse_runtime.json").write_text(json.dumps({
        "device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu", "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"), "numpy": np.__version__, "gemm": gemms, "models": rows,
        "profile": profile_result, "seconds": round(time.perf_counter() - start, 1)}, indent=1))
    print(f"\nwrote {out / 'gpu_sparse_runtime.json'} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
