"""Lottery-ticket recipes on real data that works offline: an MLP on MNIST-1D (generated
locally by the ``mnist1d`` package) and a small conv net on scikit-learn's bundled digits.

    sparsify lottery samples/lottery_recipes.py:mnist1d_mlp --pattern 2:4 --out out/mnist1d-24
    sparsify lottery samples/lottery_recipes.py:digits_convnet --pattern 2:4 --out out/digits-24

``SPARSIFY_SAMPLE_FAST=1`` shrinks the data (the tests use it).
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

FAST = bool(os.environ.get("SPARSIFY_SAMPLE_FAST"))


def _loop(model, x, y, epochs, lr, progress=None):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(int(torch.initial_seed()) % 2**31)
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), 100):
            idx = order[i : i + 100]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        if progress is not None:  # optional: sparsify prints a line per epoch
            progress(epoch + 1, epochs)


def _accuracy(model, x, y) -> float:
    model.eval()
    with torch.no_grad():
        value = float((model(x).argmax(1) == y).float().mean())
    model.train()
    return value


def mnist1d_mlp():
    """MLP 40-100-100-10 (the MNIST-1D paper's lottery-ticket model)."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = 42  # the standard data set; the model seed comes from sparsify --seed
    if FAST:
        args.num_samples = 1000
    data = make_dataset(args)
    x, y = torch.tensor(data["x"], dtype=torch.float32), torch.tensor(data["y"])
    xt, yt = torch.tensor(data["x_test"], dtype=torch.float32), torch.tensor(data["y_test"])
    model = nn.Sequential(nn.Linear(40, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 10))
    return SimpleNamespace(model=model, train=lambda m, e, progress=None: _loop(m, x, y, e, 1e-2, progress),
                           evaluate=lambda m: _accuracy(m, xt, yt), example_inputs=(xt[:2],), data=(x, y, xt, yt))


def digits_convnet():
    """Conv(1->16) - Conv(16->32) - Linear(512->64) - Linear(64->10) on 8x8 digits."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    xtr, xte, ytr, yte = train_test_split(images, digits.target, test_size=0.3, random_state=0)
    if FAST:
        xtr, ytr = xtr[:400], ytr[:400]
    x, y, xt, yt = map(torch.tensor, (xtr, ytr, xte, yte))
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 16, 64), nn.ReLU(), nn.Linear(64, 10))
    return SimpleNamespace(model=model, train=lambda m, e, progress=None: _loop(m, x, y, e, 3e-3, progress),
                           evaluate=lambda m: _accuracy(m, xt, yt), example_inputs=(xt[:2],), data=(x, y, xt, yt))
