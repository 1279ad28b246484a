"""A tiny lottery recipe for the tests: 4 Gaussian clusters in 16-D, an MLP, SGD with momentum
and weight decay (both would move pruned weights if masks were not enforced)."""

import os
from types import SimpleNamespace

import torch
from torch import nn


def recipe():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 16, generator=g) * 1.5
    y = torch.randint(0, 4, (768,), generator=g)
    x = centers[y] + torch.randn(768, 16, generator=g)
    train_x, train_y, test_x, test_y = x[:512], y[:512], x[512:], y[512:]
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))

    def train(model, epochs):
        log = os.environ.get("TINY_RECIPE_LOG")
        if log:
            with open(log, "a") as handle:
                handle.write(f"{epochs}\n")
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
        for _ in range(epochs):
            for i in range(0, 512, 64):
                opt.zero_grad()
                nn.functional.cross_entropy(model(train_x[i:i + 64]), train_y[i:i + 64]).backward()
                opt.step()

    def evaluate(model):
        with torch.no_grad():
            return float((model(test_x).argmax(1) == test_y).float().mean())

    return SimpleNamespace(model=model, train=train, evaluate=evaluate, example_inputs=(test_x[:2],))


def broken():
    return SimpleNamespace(model=None)
