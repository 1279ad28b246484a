"""Inputs for the parity check: random ones shaped from the model, or the user's .npz."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnxruntime as ort

from sparsify.errors import UsageError
from sparsify.npz import read_npz

__all__ = ["CannotMakeInputs", "load_feeds", "parse_input_shapes", "random_feeds"]


class CannotMakeInputs(Exception):
    """Random inputs cannot be made for this model (the parity check is then "not verified")."""

_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32, "tensor(uint64)": np.uint64, "tensor(bool)": np.bool_,
}


def parse_input_shapes(specs: list[str] | None) -> dict[str, list[int]]:
    """``["x:1x3x224x224", ...]`` -> {"x": [1, 3, 224, 224]}."""
    shapes: dict[str, list[int]] = {}
    for spec in specs or []:
        match = re.fullmatch(r"(.+):(\d+(?:[x,]\d+)*)", spec.strip())
        if not match:
            raise UsageError(f"invalid --input-shape {spec!r}: expected NAME:1x3x224x224")
        shapes[match.group(1)] = [int(d) for d in re.split(r"[x,]", match.group(2))]
    return shapes


def random_feeds(session: ort.InferenceSession, shapes: dict[str, list[int]], seed: int,
                 notes: list[str]) -> list[dict[str, np.ndarray]]:
    """One batch of seeded random inputs; dynamic dims without --input-shape become 1."""
    rng = np.random.default_rng(seed)
    feed: dict[str, np.ndarray] = {}
    names = {i.name for i in session.get_inputs()}
    unknown = sorted(set(shapes) - names)
    if unknown:
        raise UsageError(f"--input-shape names {unknown[0]!r}, which is not a model input ({', '.join(sorted(names))})")
    for info in session.get_inputs():
        dtype = _ORT_TYPES.get(info.type)
        if dtype is None:
            raise CannotMakeInputs(f"input {info.name!r} has type {info.type}, which random inputs cannot fill (use --inputs)")
        if info.name in shapes:
            shape = shapes[info.name]
            if len(shape) != len(info.shape):
                raise UsageError(f"--input-shape {info.name}: rank {len(shape)}, the model says {len(info.shape)}")
        else:
            shape = []
            for dim in info.shape:
                if isinstance(dim, int) and dim >= 0:
                    shape.append(dim)
                else:
                    shape.append(1)
                    notes.append(f"input {info.name!r}: dynamic dimension {dim!r} set to 1 (use --input-shape)")
        if np.issubdtype(dtype, np.floating):
            feed[info.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype is np.bool_:
            feed[info.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            # Small non-negative integers are valid token ids, masks and indices alike.
            feed[info.name] = rng.integers(0, 2, shape).astype(dtype)
    return [feed]


def load_feeds(path: str | Path, session: ort.InferenceSession) -> list[dict[str, np.ndarray]]:
    """Samples from an .npz (keys = input names).

    An array with one more axis than the input holds samples stacked along axis 0 (each is
    run on its own); an array of the input's rank is run as one batch.
    """
    path = Path(path)
    arrays = read_npz(path)
    inputs = {i.name: i for i in session.get_inputs()}
    missing = sorted(set(inputs) - set(arrays))
    if missing:
        raise UsageError(f"{path}: no array for model input {missing[0]!r} (keys: {', '.join(sorted(arrays)) or 'none'})")
    counts = set()
    for name, info in inputs.items():
        stacked = arrays[name].ndim == len(info.shape) + 1
        counts.add(arrays[name].shape[0] if stacked else 1)
        if not stacked:
            arrays[name] = arrays[name][None]
        dtype = _ORT_TYPES.get(info.type)
        if dtype is not None and arrays[name].dtype != dtype:
            arrays[name] = arrays[name].astype(dtype)
    if len(counts) != 1:
        raise UsageError(f"{path}: inputs hold different numbers of samples ({sorted(counts)})")
    count = counts.pop()
    return [{name: arrays[name][i] for name in inputs} for i in range(count)]
